import asyncio

from llama_workflows_asgi import SqliteWorkflowStore, WorkflowServer
from workflows import Workflow, step
from workflows.events import StartEvent, StopEvent


class GreetingWorkflow(Workflow):
    @step
    async def greet(self, ev: StartEvent) -> StopEvent:
        name = ev.get("name", "World")
        return StopEvent(result=f"Hello, {name}!")


async def main() -> None:
    store = SqliteWorkflowStore(db_path="handlers.db")
    server = WorkflowServer(workflow_store=store)
    server.add_workflow("greet", GreetingWorkflow())
    await server.serve(host="localhost", port=8000)


if __name__ == "__main__":
    asyncio.run(main())
