import asyncio

import httpx
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

    # Follow the run until its final event, across server restarts:
    # reconnect from the last event seen whenever the stream is cut.
    last_sequence = -1
    finished = cut = False
    while not finished:
        stream = client.get_workflow_events(
            handler.handler_id, after_sequence=last_sequence
        )
        try:
            async for event in stream:
                print(f"  [{event.type}] {event.value}")
                finished = "StopEvent" in (event.types or [])
                cut = False
        except (ConnectionError, httpx.HTTPError):
            pass  # the server is away
        last_sequence = stream.last_sequence
        if not finished:
            if not cut:
                print("  ... server unavailable, reconnecting")
            cut = True
            await wait_until_serving(client)

    result = await client.get_handler(handler.handler_id)
    print(f"Status: {result.status}")
    print(f"Result: {result.result}")


async def wait_until_serving(client: WorkflowClient) -> None:
    while True:
        await asyncio.sleep(0.5)
        try:
            await client.is_healthy()
            return
        except httpx.HTTPError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
