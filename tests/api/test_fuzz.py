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

* a fixed amount of work: ``EXAMPLES_PER_MODE`` derandomized cases per operation and
  mode, no shrinking; how long they take is a benchmark's business, not asserted here;
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
import base64
import copy
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
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
from tests.support.waiting import eventually_sync
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
    report = fuzz(fuzzed_server)
    operations = sum(len(item) for item in fuzzed_server.app.openapi()["paths"].values())
    assert len(report.exercised) == operations == 14, report.exercised
    assert report.problems == [], "\n\n".join(report.problems[:20])

    # Fuzzed hitl runs time out after 0.5 s: their ends are written soon after.
    eventually_sync(
        lambda: fuzzed_server.call(running_without_a_live_run(fuzzed_server)) == [],
        "every fuzzed run ended or live",
    )
    assert fuzzed_server.call(running_without_a_live_run(fuzzed_server)) == []
    if database_url is None:
        orphans = fuzzed_server.call(orphans_in(fuzzed_server, None))
    else:
        orphans = asyncio.run(orphans_in(fuzzed_server, database_url))
    assert orphans == Orphans(events=0, inbox=0)

    assert report.nonconforming == [], "\n\n".join(report.nonconforming)


# -- hostile input, generated: query values, headers, cursors and bodies ------------------------

HOSTILE_EXAMPLES = 250

_header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=30
).map(str.strip)
_boundaries = st.sampled_from(
    [
        *("9223372036854775807", "9223372036854775808", "99999999999999999999999", "-1", "-2"),
        *("now", "1e3", "²", "³", "¹", "½", "0x10", "7 ", "1_0", "+3", "00", "١٢"),
    ]
)
_numbers = st.one_of(
    _boundaries,
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=2**62, max_value=2**66).map(str),
)
_instants = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat()),
    st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "nope"]),
)
_cursor_json = st.one_of(
    st.tuples(_instants, st.text(max_size=10)).map(list),
    st.lists(st.one_of(_instants, st.integers(), st.none()), max_size=3),
    st.integers(1, 700).map(lambda depth: "[" * depth),
)


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


_cursors = st.one_of(
    # Mostly well-formed tokens holding odd instants, some anything at all.
    st.tuples(_instants, st.text(max_size=10)).map(list).map(_b64),
    st.tuples(_instants, st.text(max_size=10)).map(list).map(_b64),
    _cursor_json.map(_b64),
    st.text(max_size=40),
)
_query_values = st.one_of(_numbers, st.text(max_size=20), _cursors)
_json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=10)
)
_json_values = st.recursive(
    _json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_class_names = st.sampled_from(
    [
        "StartEvent",
        "StopEvent",
        "AnswerEvent",
        "MyStart",
        "MyStop",
        "workflows.events.StopEvent",
        "workflows.events.StartEvent",
        "tests.support.workflows.AnswerEvent",
        "os.system",
        "",
    ]
)
_envelopes = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(_class_names, _json_values),
        "qualified_name": st.one_of(_class_names, _json_values),
        "value": _json_values,
        "data": _json_values,
        "__is_pydantic": st.one_of(st.just(True), _json_values),
        "answer": st.text(max_size=5),
    },
)
_deep = st.integers(10, 3000).map(lambda depth: "[" * depth + "]" * depth)
_events = st.one_of(_envelopes, _envelopes.map(json.dumps), _json_values, _deep)
_bodies = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "start_event": _events,
            "event": _events,
            "step": st.one_of(st.sampled_from(["ask", "done", "greet", "nope"]), _json_values),
            "handler_id": st.one_of(st.text(max_size=12), _json_values),
            "context": st.one_of(_json_values, _deep, st.just({"state": {}})),
            "kwargs": _json_values,
        },
    ),
    _json_values,
)
_ROUTES: list[tuple[str, str, list[str]]] = [
    # method, path, the query parameters the route reads
    ("GET", "/health", []),
    ("GET", "/workflows", []),
    ("GET", "/workflows/{name}/schema", []),
    ("GET", "/workflows/{name}/events", []),
    ("GET", "/workflows/{name}/representation", []),
    ("POST", "/workflows/{name}/run-nowait", []),
    ("POST", "/workflows/{name}/run", []),
    ("GET", "/handlers", ["cursor", "limit", "order", "status", "workflow_name"]),
    ("GET", "/handlers/{handler_id}", []),
    ("GET", "/results/{handler_id}", []),
    ("POST", "/handlers/{handler_id}/cancel", ["purge"]),
    (
        "GET",
        "/events/{finished_id}",
        ["after_sequence", "sse", "include_internal", "include_qualified_name"],
    ),
    ("POST", "/events/{handler_id}", []),
]
_QUERY_KEYS = sorted({key for _, _, keys in _ROUTES for key in keys})


_last_event_ids = st.one_of(
    _boundaries,
    _numbers,
    st.text(alphabet="0123456789²³¹-", min_size=1, max_size=4),  # isdigit() is not int()
    _header_text,
)
_flags = st.one_of(st.sampled_from(["true", "false", "1", "0", "TRUE", ""]), st.text(max_size=4))
_QUERY_STRATEGIES: dict[str, st.SearchStrategy[str]] = {
    "after_sequence": st.one_of(_numbers, st.text(max_size=5)),
    "cursor": st.one_of(_cursors, _cursor_json.map(json.dumps)),
    "limit": _numbers,
    "order": st.one_of(st.sampled_from(["asc", "desc"]), st.text(max_size=4)),
    "status": st.one_of(st.sampled_from(["running", "completed", ""]), st.text(max_size=4)),
    "sse": _flags,
    "include_internal": _flags,
    "include_qualified_name": _flags,
    "purge": _flags,
}
# The routes reading cursors, sequences and bodies are drawn more often.
_WEIGHTED_ROUTES = [
    route for route in _ROUTES for _ in range(3 if route[2] or route[0] == "POST" else 1)
]


@dataclass(frozen=True)
class HostileRequest:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, bytes]
    body: Any


@st.composite
def hostile_requests(draw: st.DrawFn) -> HostileRequest:
    method, template, own_keys = draw(st.sampled_from(_WEIGHTED_ROUTES))
    path = template.format(
        name=draw(st.sampled_from(WORKFLOW_NAMES)),
        handler_id=draw(st.sampled_from([*FINISHED_IDS, LIVE_ID])),
        finished_id=draw(st.sampled_from(FINISHED_IDS)),
    )
    # Mostly the route's own parameters, sometimes any other.
    keys = [key for key in own_keys if draw(st.integers(0, 3)) > 0]
    keys += draw(st.lists(st.sampled_from(_QUERY_KEYS), max_size=1))
    params = {key: draw(_QUERY_STRATEGIES.get(key, _query_values)) for key in keys}
    headers: dict[str, bytes] = {}
    if template.startswith("/events/") or draw(st.booleans()):
        value = draw(_last_event_ids).strip()
        # What a client can put in a header: latin-1 (so "²" arrives as the byte 0xB2).
        headers["Last-Event-ID"] = value.encode("latin-1", errors="replace")
    if draw(st.booleans()):
        headers["Idempotency-Key"] = draw(_header_text).encode("latin-1")
    body = draw(_bodies) if method == "POST" else None
    return HostileRequest(method, path, params, headers, body)


_KNOWN_CASES = [
    # Each answered 500 with a traceback once.
    HostileRequest("GET", "/events/done", {"after_sequence": "9223372036854775808"}, {}, None),
    HostileRequest("GET", "/events/done", {}, {"Last-Event-ID": b"99999999999999999999999"}, None),
    HostileRequest("GET", "/events/done", {}, {"Last-Event-ID": "²".encode("latin-1")}, None),
    HostileRequest(
        "GET", "/handlers", {"cursor": _b64(["0001-01-01T00:00:00+14:00", "x"])}, {}, None
    ),
    HostileRequest(
        "POST", "/workflows/greet/run", {}, {}, {"start_event": "[" * 5000 + "]" * 5000}
    ),
]


def _known_cases(test: Any) -> Any:
    for case in _KNOWN_CASES:
        test = example(request=case)(test)
    return test


def _send(session: requests.Session, url: str, request: HostileRequest) -> requests.Response:
    data = None if request.body is None else json.dumps(request.body).encode()
    headers = {**request.headers, "Content-Type": "application/json"} if data else request.headers
    return session.request(
        request.method,
        url + request.path,
        params=request.params,
        headers=headers,
        data=data,
        timeout=REQUEST_TIMEOUT,
    )


def test_hostile_requests_never_get_a_5xx_nor_log_a_traceback(
    fuzzed_server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    problems: list[str] = []
    caplog.set_level(logging.INFO)

    with requests.Session() as session:

        @given(request=hostile_requests())
        @_known_cases
        @settings(
            max_examples=HOSTILE_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(request: HostileRequest) -> None:
            try:
                response = _send(session, fuzzed_server.url, request)
            except requests.RequestException as exc:
                problems.append(f"{request}\n  -> {exc!r}")
                return
            problem = problem_with(response)
            if problem is not None:
                problems.append(f"{request}\n  -> {problem}")

        check()

    assert problems == [], "\n\n".join(problems[:10])
    tracebacks = [
        record.getMessage()
        for record in caplog.records
        if record.exc_info is not None or "Traceback" in record.getMessage()
    ]
    assert tracebacks == []
