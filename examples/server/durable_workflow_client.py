import asyncio

from llama_agents.client import WorkflowClient
from workflows.events import StartEvent


async def main() -> None:
    client = WorkflowClient(base_url="http://localhost:8000")
    await client.is_healthy()

    handler = await client.run_workflow_nowait(
        "processing",
        start_event=StartEvent(
            items=["alpha", "beta", "gamma", "delta"]
        ),
    )
    print(f"handler_id: {handler.handler_id}")

    async for event in client.get_workflow_events(handler.handler_id):
        print(f"  [{event.type}] {event.value}")

    result = await client.get_handler(handler.handler_id)
    print(f"Status: {result.status}")
    print(f"Result: {result.result}")


if __name__ == "__main__":
    asyncio.run(main())
