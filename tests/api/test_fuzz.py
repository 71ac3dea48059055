"""A bounded schemathesis run over the server's own OpenAPI document.

Every operation gets schema-conforming and schema-violating requests (derandomized,
so a run is reproducible). Then:

* no answer is a 5xx, except the documented 500 with a failed or cancelled
  HandlerData and 503 with ``Retry-After``; every 4xx is ``{"detail": "<string>"}``;
* the store holds no orphans: every running handler has a live run in the service,
  and no event-log or inbox row belongs to a run no handler holds any more;
* answers match the document (schemathesis' status-code, content-type, header and
  response-schema conformance checks), asserted last.

Keeping it bounded (streams are the only requests that can last):

* the workflows fuzzed by name all end on their own within half a second (``hitl``
  times out waiting for its answer), so ``/run`` and streams of them end;
* ``{name}`` and ``{handler_id}`` are narrowed to registered names and prepared
  handler ids (plus one unknown each), so requests reach real workflows and handlers;
* the one run that waits forever (``held``, prepared as ``waiting`` so events can be
  sent to a live run) is not offered to ``GET /events/{handler_id}``;
* every request has a 3 s timeout, which schemathesis applies to a whole SSE body; a
  stream cut short that way is reported, since every stream fuzzed here must end.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

from llama_workflows_asgi import WorkflowServer
from llama_workflows_asgi.store import HandlerQuery
from tests.support.http import HANDLER_KEYS
from tests.support.rows import Orphans, memory_orphans, sql_orphans, sql_reader
from tests.support.stores import StoreFactory
from tests.support.threaded import ThreadedServer
from tests.support.workflows import (
    CounterWorkflow,
    CustomWorkflow,
    FailWorkflow,
    GreetWorkflow,
    HitlWorkflow,
)

pytestmark = pytest.mark.parametrize("store_kind", ["memory", "sqlite"], indirect=True)

EXAMPLES_PER_MODE = 30
REQUEST_TIMEOUT = 3.0
WORKFLOW_NAMES = ["greet", "custom", "hitl", "fail", "counter", "missing"]
FINISHED_IDS = ["done", "failed", "cancelled", "missing"]
LIVE_ID = "waiting"


@pytest.fixture
def fuzzed_server(make_store: StoreFactory) -> Iterator[ThreadedServer]:
    server = WorkflowServer(make_store(), sse_heartbeat_interval=0.5)
    for name, workflow in {
        "greet": GreetWorkflow(),
        "custom": CustomWorkflow(),
        "hitl": HitlWorkflow(timeout=0.5),
        "fail": FailWorkflow(),
        "counter": CounterWorkflow(),
        "held": HitlWorkflow(timeout=None),
    }.items():
        server.add_workflow(name, workflow)
    with ThreadedServer(server.app) as threaded:
        prepare_handlers(threaded.url)
        yield threaded


def prepare_handlers(url: str) -> None:
    """One handler in each state, under the ids the schema offers."""
    with requests.Session() as http:
        for workflow, handler_id in [("greet", "done"), ("fail", "failed")]:
            http.post(f"{url}/workflows/{workflow}/run", json={"handler_id": handler_id})
        for handler_id in ("cancelled", LIVE_ID):
            started = http.post(f"{url}/workflows/held/run-nowait", json={"handler_id": handler_id})
            assert started.status_code == 200, started.text
        assert http.post(f"{url}/handlers/cancelled/cancel").status_code == 200


def narrowed_document(app: Any) -> dict[str, Any]:
    """The app's OpenAPI document with path parameters pointed at real objects."""
    document = copy.deepcopy(app.openapi())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "path":
                    continue
                if parameter["name"] == "name":
                    known = WORKFLOW_NAMES
                elif method == "get" and path.startswith("/events/"):
                    known = FINISHED_IDS
                else:
                    known = [*FINISHED_IDS, LIVE_ID]
                parameter["schema"] = {"type": "string", "enum": known}
    return document


def problem_with(response: Any) -> str | None:
    """Why this answer breaks the error contract, or ``None``."""
    status = response.status_code
    if getattr(response, "stream_cut_short", False):
        return "the stream did not end"
    if status == 503:
        return (
            None
            if "retry-after" in {k.lower() for k in response.headers}
            else "503 without Retry-After"
        )
    if status == 500:
        body = _json(response)
        is_handler = isinstance(body, dict) and list(body) == HANDLER_KEYS
        if is_handler and body["status"] in ("failed", "cancelled"):
            return None
        return f"500 that is not a failed or cancelled handler: {response.content[:200]!r}"
    if status > 500:
        return f"unexpected {status}"
    if 400 <= status < 500:
        body = _json(response)
        if not (
            isinstance(body, dict) and list(body) == ["detail"] and isinstance(body["detail"], str)
        ):
            return f"{status} without a string detail: {response.content[:200]!r}"
    return None


def _json(response: Any) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
"""Schemathesis checks that answers match the OpenAPI document (codes, types, bodies)."""


@dataclass
class FuzzReport:
    """What a fuzz run found."""

    problems: list[str] = field(default_factory=list)
    """Answers breaking the error contract (5xx, error bodies, endless streams)."""
    nonconforming: list[str] = field(default_factory=list)
    """Operations whose answers do not match the OpenAPI document (first case each)."""
    exercised: set[str] = field(default_factory=set)
    """Operations that got at least one request."""


def fuzz(server: ThreadedServer) -> FuzzReport:
    """Run every operation with valid and invalid input; report what went wrong."""
    schema = schemathesis.openapi.from_dict(narrowed_document(server.app))
    report = FuzzReport()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                check = _checker(operation, mode, server.url, session, report)
                try:
                    check()
                except Unsatisfiable:
                    # Nothing of this operation can be made invalid (no body, no
                    # constrained parameter): only its positive run counts.
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except FailureGroup as failures:
                    report.nonconforming.append(f"{operation.label} ({mode.value}): {failures}")
    return report


def _checker(
    operation: Any, mode: GenerationMode, url: str, session: requests.Session, report: FuzzReport
) -> Any:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: failures are collected
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        report.exercised.add(operation.label)
        try:
            response = case.call(base_url=url, session=session, timeout=REQUEST_TIMEOUT)
        except requests.RequestException as exc:
            report.problems.append(f"{case.as_curl_command()}\n  -> {exc!r}")
            return
        problem = problem_with(response)
        if problem is not None:
            report.problems.append(f"{case.as_curl_command()}\n  -> {problem}")
        case.validate_response(response, checks=CONFORMANCE)

    return check


async def running_without_a_live_run(server: ThreadedServer) -> list[str]:
    service = server.app.state.workflow_service
    running = await service.store.query(HandlerQuery(status_in=["running"], load_ctx=False))
    # The service's table of runs executing in this process (there is no public view).
    return [h.handler_id for h in running if h.handler_id not in service._runs]


async def orphans_in(server: ThreadedServer, database_url: str | None) -> Orphans:
    if database_url is None:
        return memory_orphans(server.app.state.workflow_service.store)
    async with sql_reader(database_url) as engine:
        return await sql_orphans(engine)


def test_fuzzed_requests_keep_the_error_contract_and_leave_no_orphans(
    fuzzed_server: ThreadedServer, database_url: str | None
) -> None:
    started = time.monotonic()
    report = fuzz(fuzzed_server)
    operations = sum(len(item) for item in fuzzed_server.app.openapi()["paths"].values())
    assert len(report.exercised) == operations == 14, report.exercised
    assert report.problems == [], "\n\n".join(report.problems[:20])

    time.sleep(1.0)  # fuzzed hitl runs time out after 0.5 s; let their ends be written
    assert fuzzed_server.call(running_without_a_live_run(fuzzed_server)) == []
    if database_url is None:
        orphans = fuzzed_server.call(orphans_in(fuzzed_server, None))
    else:
        orphans = asyncio.run(orphans_in(fuzzed_server, database_url))
    assert orphans == Orphans(events=0, inbox=0)

    assert report.nonconforming == [], "\n\n".join(report.nonconforming)
    assert time.monotonic() - started < 60
