import asyncio

from llama_workflows_asgi import SqliteWorkflowStore, WorkflowServer
from pydantic import BaseModel, Field
from workflows import Context, Workflow, step
from workflows.events import Event, StartEvent, StopEvent


class ProgressEvent(Event):
    item: str
    index: int
    total: int


class ProcessInput(StartEvent):
    items: list[str] = Field(
        default_factory=lambda: ["alpha", "beta", "gamma"]
    )


class ProcessOutput(StopEvent):
    processed: list[str]


class ProcessingState(BaseModel):
    processed: list[str] = Field(default_factory=list)


class DurableProcessingWorkflow(Workflow):
    @step
    async def process_items(
        self,
        ev: ProcessInput,
        ctx: Context[ProcessingState],
    ) -> ProcessOutput:
        items = ev.items
        state = await ctx.store.get_state()
        processed = list(state.processed)

        for i, item in enumerate(items):
            result = f"processed:{item}"
            if result in processed:
                continue  # already done before restart

            await asyncio.sleep(1)  # simulate work
            processed.append(result)

            # Save progress so the next snapshot captures it.
            async with ctx.store.edit_state() as s:
                s.processed = list(processed)

            ctx.write_event_to_stream(
                ProgressEvent(item=result, index=i + 1, total=len(items))
            )

        return ProcessOutput(processed=processed)


async def main() -> None:
    store = SqliteWorkflowStore(db_path="durable_handlers.db")
    server = WorkflowServer(workflow_store=store)
    server.add_workflow(
        "processing", DurableProcessingWorkflow(timeout=120)
    )
    await server.serve(host="localhost", port=8000)


if __name__ == "__main__":
    asyncio.run(main())
