"""The official ``llama_agents.client.WorkflowClient`` 0.4.1, unchanged, against the server."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from llama_agents.client import WorkflowClient
from workflows.events import StartEvent, StopEvent

from tests.support.workflows import AnswerEvent, MyStart, MyStop


@pytest.fixture
def client(server_url: str) -> WorkflowClient:
    return WorkflowClient(base_url=server_url)


async def test_health_and_workflow_metadata(client: WorkflowClient) -> None:
    assert (await client.is_healthy()).status == "healthy"
    listed = await client.list_workflows()
    assert listed.workflows == ["greet", "custom", "hitl", "fail", "slow", "counter"]

    schema = await client.get_workflow_schema("custom")
    assert schema.start["title"] == "MyStart"
    assert schema.start["required"] == ["topic"]
    assert schema.stop["title"] == "MyStop"

    events = await client.get_workflow_events_schema("hitl")
    titles = {event["title"] for event in events.events}
    assert {"AskEvent", "AnswerEvent"} <= titles

    graph = await client.get_workflow_graph("greet")
    assert graph.graph.name == "GreetWorkflow"
    assert {node.id for node in graph.graph.nodes} >= {"greet", "StartEvent", "StopEvent"}


async def test_run_workflow_waits_for_the_result(client: WorkflowClient) -> None:
    handler = await client.run_workflow("greet", start_event=StartEvent(name="Ada"))
    assert handler.status == "completed"
    assert handler.result is not None
    assert handler.result.value == {"result": {"greeting": "Hello, Ada!"}}
    assert handler.result.load_event() == StopEvent(result={"greeting": "Hello, Ada!"})
    assert handler.completed_at is not None


async def test_run_workflow_with_chosen_handler_id_and_no_start_event(
    client: WorkflowClient,
) -> None:
    handler = await client.run_workflow("greet", handler_id="chosen-1")
    assert handler.handler_id == "chosen-1"
    assert handler.result is not None
    assert handler.result.value == {"result": {"greeting": "Hello, World!"}}


async def test_custom_start_and_stop_events_round_trip(client: WorkflowClient) -> None:
    handler = await client.run_workflow("custom", start_event=MyStart(topic="cats", count=2))
    assert handler.result is not None
    assert handler.result.type == "MyStop"
    assert handler.result.types == ["StopEvent"]
    rebuilt = handler.result.load_event([MyStop])
    assert rebuilt == MyStop(answer=84, topic="cats")

    nowait = await client.run_workflow_nowait("custom", start_event=MyStart(topic="dogs"))
    done = await client.wait_for_handler(nowait.handler_id, poll_interval=0.05)
    assert done.result is not None
    assert done.result.value == {"answer": 42, "topic": "dogs"}


async def test_base_start_event_is_validated_into_the_workflows_start_class(
    client: WorkflowClient,
) -> None:
    # The client sends {"type": "StartEvent", ...}; the workflow starts with MyStart.
    handler = await client.run_workflow_nowait("custom", start_event=StartEvent(topic="owls"))
    done = await client.wait_for_handler(handler.handler_id, poll_interval=0.05)
    assert done.result is not None
    assert done.result.value == {"answer": 42, "topic": "owls"}


async def test_run_nowait_then_stream_every_event(client: WorkflowClient) -> None:
    handler = await client.run_workflow_nowait("greet", start_event=StartEvent(name="B"))
    assert handler.status == "running"
    assert handler.result is None

    stream = client.get_workflow_events(handler.handler_id)
    seen = [(event.type, event.value) async for event in stream]
    assert seen == [
        ("ProgressEvent", {"msg": "step 0", "i": 0}),
        ("ProgressEvent", {"msg": "step 1", "i": 1}),
        ("ProgressEvent", {"msg": "step 2", "i": 2}),
        ("StopEvent", {"result": {"greeting": "Hello, B!"}}),
    ]
    assert isinstance(stream.last_sequence, int)

    # Resuming after the last event: nothing left, the stream ends at once (204).
    again = client.get_workflow_events(handler.handler_id, after_sequence=stream.last_sequence)
    assert [event async for event in again] == []


async def test_stream_with_internal_events_and_resume_from_a_sequence(
    client: WorkflowClient,
) -> None:
    handler = await client.run_workflow("greet", start_event=StartEvent(name="C"))
    everything = client.get_workflow_events(handler.handler_id, include_internal_events=True)
    items = [event async for event in everything]
    assert any(event.type == "StepStateChanged" for event in items)
    assert items[-1].type == "StopEvent"

    stream = client.get_workflow_events(handler.handler_id)
    first = await anext(aiter(stream))
    assert first.type == "ProgressEvent"
    cursor = stream.last_sequence
    rest = client.get_workflow_events(handler.handler_id, after_sequence=cursor)
    assert [event.value.get("i") async for event in rest] == [1, 2, None]


async def test_stream_reconnects_after_a_dropped_connection(server_url: str) -> None:
    dropped: list[str] = []

    class DropFirstStream(httpx.AsyncHTTPTransport):
        """Cuts the first event stream after its first event, like a network failure."""

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            if request.url.path.startswith("/events/") and not dropped:
                dropped.append(str(request.url))
                return httpx.Response(
                    response.status_code,
                    headers=response.headers,
                    stream=_FirstEventThenError(response.stream),
                    request=request,
                )
            return response

    transport = DropFirstStream()
    async with httpx.AsyncClient(base_url=server_url, transport=transport) as http:
        client = WorkflowClient(httpx_client=http)
        handler = await client.run_workflow("greet", start_event=StartEvent(name="D"))
        stream = client.get_workflow_events(handler.handler_id)
        values = [event.value async for event in stream]
    assert len(dropped) == 1
    assert values == [
        {"msg": "step 0", "i": 0},
        {"msg": "step 1", "i": 1},
        {"msg": "step 2", "i": 2},
        {"result": {"greeting": "Hello, D!"}},
    ]


class _FirstEventThenError(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        buffer = b""
        async for chunk in self._inner:
            buffer += chunk
            if b"\n\n" in buffer:
                yield buffer[: buffer.index(b"\n\n") + 2]
                raise httpx.ReadError("connection dropped")

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_human_in_the_loop(client: WorkflowClient) -> None:
    handler = await client.run_workflow_nowait("hitl")
    stream = client.get_workflow_events(handler.handler_id)
    seen = []
    async for event in stream:
        seen.append(event.type)
        if event.type == "AskEvent":
            assert event.types == ["InputRequiredEvent"]
            assert event.value == {"question": "what is your name?"}
            sent = await client.send_event(handler.handler_id, AnswerEvent(answer="Zed"))
            assert sent.status == "sent"
    assert seen == ["AskEvent", "StopEvent"]
    result = await client.get_result(handler.handler_id)
    assert result.result is not None
    assert result.result.value == {"result": "got Zed"}


async def test_send_event_to_a_named_step(client: WorkflowClient) -> None:
    handler = await client.run_workflow_nowait("hitl")
    async for event in client.get_workflow_events(handler.handler_id):
        if event.type == "AskEvent":
            await client.send_event(handler.handler_id, AnswerEvent(answer="Step"), step="done")
    done = await client.get_handler(handler.handler_id)
    assert done.result is not None
    assert done.result.value == {"result": "got Step"}


async def test_get_handlers_with_and_without_filters(client: WorkflowClient) -> None:
    first = await client.run_workflow("greet")
    second = await client.run_workflow("custom", start_event=MyStart(topic="x"))
    slow = await client.run_workflow_nowait("slow", start_event={"seconds": 30})

    everything = await client.get_handlers()
    assert {h.handler_id for h in everything.handlers} == {
        first.handler_id,
        second.handler_id,
        slow.handler_id,
    }
    completed_greets = await client.get_handlers(status=["completed"], workflow_name=["greet"])
    assert [h.handler_id for h in completed_greets.handlers] == [first.handler_id]
    running = await client.get_handlers(status=["running", "failed"])
    assert [h.handler_id for h in running.handlers] == [slow.handler_id]
    await client.cancel_handler(slow.handler_id)


async def test_get_handler_status_codes(client: WorkflowClient) -> None:
    slow = await client.run_workflow_nowait("slow", start_event={"seconds": 30})
    running = await client.get_handler(slow.handler_id)  # 202 does not raise
    assert running.status == "running"
    with pytest.raises(TimeoutError):
        await client.wait_for_handler(slow.handler_id, timeout=0.3, poll_interval=0.05)

    with pytest.raises(httpx.HTTPStatusError) as failed_run:
        await client.run_workflow("fail")
    assert failed_run.value.response.status_code == 500
    failed_body = failed_run.value.response.json()
    assert failed_body["status"] == "failed"
    assert failed_body["error"] == "kaboom"

    with pytest.raises(httpx.HTTPStatusError) as failed_get:
        await client.get_handler(failed_body["handler_id"])
    assert failed_get.value.response.status_code == 500
    with pytest.raises(httpx.HTTPStatusError):
        await client.wait_for_handler(failed_body["handler_id"], poll_interval=0.05)

    with pytest.raises(httpx.HTTPStatusError) as missing:
        await client.get_handler("no-such-handler")
    assert missing.value.response.status_code == 404
    await client.cancel_handler(slow.handler_id)


async def test_cancel_then_purge(client: WorkflowClient) -> None:
    slow = await client.run_workflow_nowait("slow", start_event={"seconds": 30})
    cancelled = await client.cancel_handler(slow.handler_id)
    assert cancelled.status == "cancelled"
    with pytest.raises(httpx.HTTPStatusError) as after_cancel:
        await client.get_handler(slow.handler_id)
    assert after_cancel.value.response.json()["status"] == "cancelled"

    events = [event.type async for event in client.get_workflow_events(slow.handler_id)]
    assert events == ["WorkflowCancelledEvent"]

    purged = await client.cancel_handler(slow.handler_id, purge=True)
    assert purged.status == "deleted"
    with pytest.raises(httpx.HTTPStatusError) as gone:
        await client.get_handler(slow.handler_id)
    assert gone.value.response.status_code == 404


async def test_purge_a_running_handler(client: WorkflowClient) -> None:
    slow = await client.run_workflow_nowait("slow", start_event={"seconds": 30})
    assert (await client.cancel_handler(slow.handler_id, purge=True)).status == "deleted"
    assert slow.handler_id not in {h.handler_id for h in (await client.get_handlers()).handlers}


async def test_stream_of_unknown_handler_raises_value_error(client: WorkflowClient) -> None:
    with pytest.raises(ValueError, match="Handler not found"):
        async for _ in client.get_workflow_events("no-such-handler"):
            pass


async def test_rerun_a_finished_handler_id_carries_its_state(client: WorkflowClient) -> None:
    counts = []
    for _ in range(3):
        handler = await client.run_workflow("counter", handler_id="ctr")
        assert handler.result is not None
        counts.append(handler.result.value["result"]["count"])
    assert counts == [1, 2, 3]


async def test_fifty_concurrent_runs(client: WorkflowClient) -> None:
    # On SQLite: 50 runs writing at once, and no "database is locked" anywhere.
    names = [f"n{i}" for i in range(50)]
    handlers = await asyncio.gather(
        *(client.run_workflow("greet", start_event=StartEvent(name=n)) for n in names)
    )
    greetings = sorted(h.result.value["result"]["greeting"] for h in handlers if h.result)
    assert greetings == sorted(f"Hello, {n}!" for n in names)
