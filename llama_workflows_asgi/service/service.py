"""The run service: starts, resumes, streams, cancels and feeds workflow runs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import secrets
import string
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import ValidationError
from workflows import Context, Workflow
from workflows.context.serializers import JsonSerializer
from workflows.events import (
    Event,
    StartEvent,
    StopEvent,
    WorkflowCancelledEvent,
)

from .. import codec
from ..errors import (
    BadEventError,
    BadRequestError,
    ConflictError,
    HandlerNotFoundError,
    StoreUnavailableError,
)
from ..registry import RegisteredWorkflow, WorkflowRegistry
from ..store.base import (
    AbstractWorkflowStore,
    HandlerCursor,
    HandlerExistsError,
    HandlerQuery,
    IdempotencyKeyExistsError,
    PersistentHandler,
    Status,
    utcnow,
)
from ..store.memory import MemoryWorkflowStore
from ..telemetry import Telemetry
from .config import ServiceConfig
from .launch import Launcher, stored_event
from .live import LiveRun
from .live_runs import LiveRuns
from .ownership import Owner
from .reading import EventReader
from .recovery import Recovery, deliver_entry
from .retention import RetentionTask
from .retry import reopen_failed
from .runtime import DurableRuntime
from .stopping import StopSignal
from .streams import EventStream
from .supervisor import Supervisor

logger = logging.getLogger(__name__)

_ID_ALPHABET = string.ascii_letters + string.digits
_ID_SPACE = len(_ID_ALPHABET) ** 10
_IN_USE = "Handler id '{}' is already in use"
_HANDLER_ID = re.compile(r"[A-Za-z0-9._~:@-]{1,255}")


def new_id() -> str:
    """A 10-character random id from ``[A-Za-z0-9]``, like the reference server's."""
    number = secrets.randbelow(_ID_SPACE)  # one draw instead of one per character
    symbols = []
    for _ in range(10):
        number, digit = divmod(number, 62)
        symbols.append(_ID_ALPHABET[digit])
    return "".join(symbols)


@dataclass(frozen=True)
class HandlerPage:
    """A page of handlers and the cursor of the next one (``None`` on the last page)."""

    handlers: list[PersistentHandler]
    next_cursor: HandlerCursor | None


class WorkflowService:
    """Runs registered workflows durably on a store.

    Every run's progress (checkpoint, streamed events, status) is written
    through one group-committing writer; runs interrupted by a crash or a
    restart are claimed and resumed from their last checkpoint; several
    processes may share one database, each run being owned by one of them at a
    time. Host code may call these methods directly (see ``dependencies``).

    ``principal`` arguments scope handlers to the caller when the service was
    created with ``scoped=True``: other callers' handlers are reported missing.
    """

    def __init__(
        self,
        store: AbstractWorkflowStore | None = None,
        *,
        config: ServiceConfig | None = None,
        scoped: bool = False,
    ) -> None:
        store = store or MemoryWorkflowStore()  # a process-local store when none is given
        self.store = store
        self.config = config or ServiceConfig()
        self.scoped = scoped
        self.registry = WorkflowRegistry()
        self.runtime = DurableRuntime()
        self.telemetry = Telemetry()
        self.owner = Owner.for_this_process()
        self.running = False
        self._stop = StopSignal()
        self._drain: asyncio.Task[None] | None = None
        self._live = LiveRuns(store, self.owner, self.config, self.runtime)
        self._writer = self._live.writer
        self._reader = EventReader(store, self._live, self.config, self._stop)
        self._launcher = Launcher(store, self.runtime, self._live)
        self._recovery = Recovery(
            store,
            self.owner,
            self.config,
            self.registry,
            self.telemetry,
            live=self._live,
            launcher=self._launcher,
            stop=self._stop,
        )
        self._supervisor = Supervisor(
            store,
            self.owner,
            self.config,
            live_runs=self._live.values,
            on_lost=self._live.lose,
            deliver=deliver_entry,
            resume=self._recovery.resume_batch,
        )
        self.retention = RetentionTask(store, self.config)
        self.telemetry.watch(self._live.values, lambda: self._writer.unwritten_since)

    @property
    def _runs(self) -> dict[str, LiveRun]:
        """The live runs by handler id (kept under this name for tests that look inside)."""
        return self._live.by_handler

    @property
    def draining(self) -> bool:
        """Whether a graceful stop began (new runs and events are refused)."""
        return self._stop.draining

    @property
    def _background(self) -> set[asyncio.Task[Any]]:
        return self._live.background

    # -- registration --------------------------------------------------------------------

    def add_workflow(
        self, name: str, workflow: Workflow, additional_events: Iterable[type[Event]] = ()
    ) -> RegisteredWorkflow:
        """Serve ``workflow`` as ``name``. The instance runs on this service only."""
        workflow.validate()
        try:
            # The engine has no public way to move a constructed workflow onto
            # another runtime; this is the one it uses itself.
            workflow._switch_runtime(self.runtime)
        except RuntimeError as exc:
            raise ValueError(
                f"Workflow {name!r} has already run elsewhere; register a fresh instance"
            ) from exc
        entry = self.registry.add(name, workflow, additional_events)
        entry.events.max_depth = self.config.max_json_depth
        self.runtime.allow_types(workflow, (*entry.declared_events, *codec.FRAMEWORK_EVENTS))
        for cls in (*entry.declared_events, workflow.stop_event_class):
            if issubclass(cls, StopEvent):
                self.store.result_classes.setdefault(codec.qualified_name(cls), cls)
        return entry

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, take this process's liveness token, write progress, adopt runs."""
        if self.running:
            return
        await self.store.start()
        await self.store.liveness.acquire(self.owner.id, self._on_liveness)
        await self.runtime.launch()
        self._stop.reset()
        self._drain = None
        self._writer.start()
        self._supervisor.start()
        self.retention.start()
        self.running = self._live.releases_idle = True

    def begin_stop(self) -> None:
        """Begin a graceful stop now; :meth:`stop` completes it.

        New runs and events are refused (``StoreUnavailableError``: 503 with
        ``Retry-After``), open streams and waits end, and every local run is
        stopped, checkpointed and released within ``stop_timeout``, to be
        resumed by the next owner. The router's lifespan calls this on SIGINT or
        SIGTERM, before the server waits for open connections; a host with its
        own signal handling calls it there. Idempotent.
        """
        if not self.running or self._drain is not None:
            return
        self._stop.begin()
        self._drain = asyncio.ensure_future(self._release_all(time.monotonic()))

    @property
    def drained(self) -> bool:
        """Whether a graceful stop that began has released every local run."""
        return self._drain is not None and self._drain.done()

    async def stop(self) -> None:
        """Stop gracefully: checkpoint and release every local run, never failing one."""
        if not self.running:
            return
        self.begin_stop()
        assert self._drain is not None
        await asyncio.shield(self._drain)
        self.running = self._live.releases_idle = False
        await self.retention.stop()
        await self._writer.stop()
        self._live.clear()
        await self.store.liveness.release(self.owner.id)
        await self.store.close()
        await self.runtime.destroy()

    async def _release_all(self, began: float) -> None:
        """Stop every local run and write its checkpoint and release by ``stop_timeout``."""
        timeout = self.config.stop_timeout
        deadline = began + timeout
        await self.retention.stop()  # its deletes would compete with the final writes
        await self._supervisor.stop()
        runs = self._live.values()
        # Engines stop at once on release; the reserve is for the final write.
        engine_budget = max(0.0, timeout - min(1.0, timeout / 2))
        await asyncio.gather(*(run.stop_engine(engine_budget) for run in runs))
        try:
            remaining = max(deadline - time.monotonic(), 0.05)
            await asyncio.wait_for(self._write_release(), remaining)
        except asyncio.TimeoutError:
            logger.warning(
                "shutdown could not write everything within stop_timeout (%ss); "
                "runs resume from their last written checkpoint",
                timeout,
            )
        except StoreUnavailableError as exc:
            logger.warning(
                "shutdown could not write everything (store unavailable: %s); "
                "runs resume from their last written checkpoint",
                exc,
            )

    async def _write_release(self) -> None:
        await self._writer.drain()
        await self.store.release_handlers(self.owner.id, None)

    def _on_liveness(self, held: bool) -> None:
        """The liveness token was lost (others may adopt our runs now) or is held again."""
        if held or not self.running:
            return
        self._live.stop_all_now()

    @asynccontextmanager
    async def running_context(self) -> AsyncIterator[WorkflowService]:
        """``async with service.running_context():`` starts and stops the service."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def healthy(self) -> bool:
        """Whether the service is started, its store answers and its background work keeps up."""
        return await self.health_problem() is None

    async def health_problem(self) -> str | None:
        """What keeps the service from working, or ``None`` when it is healthy.

        Unhealthy: not started or stopping, the liveness token is lost, the
        store does not answer, progress has waited unwritten longer than
        ``max_unwritten_age``, or no ownership round has completed for half a
        lease (leases may lapse and runs move elsewhere).
        """
        if not self.running:
            return "The workflow service is not running"
        if self.draining:
            return "The workflow service is stopping"
        try:
            await self.store.ping()
        except StoreUnavailableError as exc:
            return f"The store is unreachable: {exc}"
        if not self.store.liveness.held:
            return "The server lost its database session and cannot own runs right now"
        waited = self._writer.stalled_for()
        if waited > self.config.max_unwritten_age:
            error = self._writer.last_error
            return (
                f"Progress of {self._writer.unwritten_runs} run(s) unwritten for {waited:.1f}s"
                + (f": {codec.readable_error(error)}" if error is not None else "")
            )
        silent = self._supervisor.silent_for()
        if silent > self.config.lease_ttl / 2:
            error = self._supervisor.last_error
            return f"No ownership round completed for {silent:.1f}s" + (
                f": {codec.readable_error(error)}" if error is not None else ""
            )
        return None

    # -- starting runs -------------------------------------------------------------------

    async def start_run(
        self,
        workflow_name: str,
        start_event: StartEvent | None = None,
        *,
        handler_id: str | None = None,
        principal: str | None = None,
        context: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
    ) -> PersistentHandler:
        """Start a run and return its handler once the row is written.

        ``handler_id`` reuses a finished handler of the same caller and workflow
        (its state store carries over) or names a new one. ``idempotency_key``
        makes retries safe: the same key and ``request_hash`` return the first
        handler; another request under the same key is a ``ConflictError``.
        """
        entry = self.registry.get(workflow_name)
        self._require_running()
        if handler_id is not None:
            check_handler_id(handler_id)
        if idempotency_key is not None and not idempotency_key.strip():
            raise BadRequestError("Invalid Idempotency-Key: it must not be empty")
        key = None if idempotency_key is None else _scoped_key(principal, idempotency_key)
        if key is not None:
            replay = await self._replay(key, request_hash, principal)
            if replay is not None:
                return replay
        event = _start_event_for(entry, start_event)
        self._check_storable(entry, event, start=True)
        ctx, replaces = await self._initial_context(entry, handler_id, principal, context)
        row = self._new_row(entry, handler_id or new_id(), event, principal, key, request_hash)
        row.ctx = ctx  # the context the run starts from: none, a carried state store, or given
        return await self._create_and_launch(row, entry, event, replaces)

    async def run(
        self, workflow_name: str, start_event: StartEvent | None = None, **options: Any
    ) -> PersistentHandler:
        """Start a run and wait until it finished and its outcome is written."""
        handler = await self.start_run(workflow_name, start_event, **options)
        return await self.wait_for(handler.handler_id, principal=options.get("principal"))

    def _check_storable(
        self, entry: RegisteredWorkflow, event: Event, *, start: bool
    ) -> dict[str, Any]:
        """``event``'s envelope, once it is known to checkpoint and decode back.

        Raises ``BadEventError`` otherwise: an input accepted and then refused
        by the serializer would fail its run (or, stored as something else,
        be silently replaced).
        """
        envelope = codec.envelope(event)
        payload = codec.dumps(envelope)
        try:
            payload.encode("utf-8")
            # Decoded as it will be when resumed or delivered: our own JSON,
            # so without the input limits (the envelope nests a little deeper).
            back = (entry.events.decode_start if start else entry.events.decode)(
                json.loads(payload)
            )
        except (UnicodeEncodeError, BadEventError) as exc:
            raise BadEventError(f"Invalid event: it does not decode back ({exc})") from exc
        if codec.envelope(back) != envelope:
            raise BadEventError("Invalid event: its value changes when it is decoded again")
        serializer = self._serializer(entry)
        if type(serializer) is JsonSerializer:
            return envelope  # it dumps an event exactly as envelope() just did
        try:
            serializer.serialize(event)
        except Exception as exc:
            reason = codec.readable_error(exc)
            raise BadEventError(f"Invalid event: it cannot be checkpointed ({reason})") from exc
        return envelope

    async def _replay(
        self, key: str, request_hash: str | None, principal: str | None
    ) -> PersistentHandler | None:
        existing = await self.store.get_by_idempotency_key(key)
        if existing is None:
            return None
        if existing.request_hash != request_hash:
            raise ConflictError("Idempotency-Key was already used with a different request")
        return await self.get(existing.handler_id, principal=principal)

    async def _initial_context(
        self,
        entry: RegisteredWorkflow,
        handler_id: str | None,
        principal: str | None,
        context: dict[str, Any] | None,
    ) -> tuple[dict[str, Any] | None, str | None]:
        given = self._accepted_context(entry, context)
        if handler_id is None:
            return given, None
        previous = await self._previous_handler(entry, handler_id, principal)
        if previous is None:
            return given, None
        if given is None and previous.ctx is not None:
            given = {"state": previous.ctx.get("state") or {}}
        return given, previous.run_id

    def _accepted_context(
        self, entry: RegisteredWorkflow, context: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        if not context:
            return None
        if not self.config.accept_context_api:
            raise BadRequestError(
                "Context API is disabled. Enable accept_context_api on the router to use it."
            )
        try:
            Context.from_dict(entry.workflow, context, serializer=self._serializer(entry))
        except Exception as exc:
            raise BadRequestError(f"Invalid context: {codec.readable_error(exc)}") from exc
        return context

    async def _previous_handler(
        self, entry: RegisteredWorkflow, handler_id: str, principal: str | None
    ) -> PersistentHandler | None:
        rows = await self.store.query(HandlerQuery(handler_id_in=[handler_id]))
        if not rows:
            return None
        previous = rows[0]
        if previous.principal != principal:
            # The same answer whatever that handler's state: nothing about
            # another caller's handler may show.
            raise ConflictError(_IN_USE.format(handler_id))
        if not previous.is_terminal or handler_id in self._live:
            raise ConflictError(f"Handler '{handler_id}' is already running")
        if previous.workflow_name != entry.name:
            raise ConflictError(_IN_USE.format(handler_id))
        return previous

    def _new_row(
        self,
        entry: RegisteredWorkflow,
        handler_id: str,
        event: StartEvent,
        principal: str | None,
        key: str | None,
        request_hash: str | None,
    ) -> PersistentHandler:
        now = utcnow()
        return PersistentHandler(
            handler_id=handler_id,
            workflow_name=entry.name,
            status="running",
            run_id=new_id(),
            started_at=now,
            updated_at=now,
            start_event=codec.envelope(event),
            principal=principal,
            owner_id=self.owner.id,
            lease_expires_at=now + timedelta(seconds=self.config.lease_ttl),
            idempotency_key=key,
            request_hash=request_hash if key is not None else None,
        )

    async def _create_and_launch(
        self,
        row: PersistentHandler,
        entry: RegisteredWorkflow,
        event: StartEvent,
        replaces: str | None,
    ) -> PersistentHandler:
        # Registered before the row exists so an ownership round never takes
        # the freshly written row for an orphan.
        live = self._live.register(row, entry, next_sequence=0)
        live.telemetry = self.telemetry.accepted(row)  # records the trace context in the row
        try:
            await self.store.create_handler(row, replaces_run_id=replaces)
        except IdempotencyKeyExistsError:
            self._live.unregister(live)
            assert row.idempotency_key is not None
            replay = await self._replay(row.idempotency_key, row.request_hash, row.principal)
            if replay is None:
                raise
            return replay
        except HandlerExistsError as exc:
            self._live.unregister(live)
            taken = _IN_USE if self.scoped else "Handler '{}' is already running"
            raise ConflictError(taken.format(row.handler_id)) from exc
        except BaseException:
            self._live.unregister(live)
            raise
        if self.draining:
            # Accepted and written, but stopping began meanwhile: the next owner runs it.
            self._live.unregister(live)
            await self.store.release_handlers(self.owner.id, [row.handler_id])
            return row.model_copy(update={"ctx": None, "owner_id": None, "lease_expires_at": None})
        await self._launcher.launch_or_fail(live, row.ctx, event)
        return row.model_copy(update={"ctx": None})

    def _serializer(self, entry: RegisteredWorkflow) -> Any:
        return self.runtime.get_serializer(entry.workflow)

    # -- reading -------------------------------------------------------------------------

    async def get(self, handler_id: str, *, principal: str | None = None) -> PersistentHandler:
        """The handler (without its checkpoint); raises ``HandlerNotFoundError``."""
        query = HandlerQuery(
            handler_id_in=[handler_id], principal_in=self._scope(principal), load_ctx=False
        )
        rows = await self.store.query(query)
        if not rows:
            raise HandlerNotFoundError(handler_id)
        return rows[0]

    async def list_handlers(
        self, query: HandlerQuery, *, principal: str | None = None
    ) -> HandlerPage:
        """A page of handlers (without checkpoints), at most ``config.max_page_size`` long."""
        size = min(query.limit or self.config.max_page_size, self.config.max_page_size)
        scoped = query.model_copy(
            update={
                "limit": size + 1,
                "load_ctx": False,
                "principal_in": self._scope(principal) or query.principal_in,
            }
        )
        rows = await self.store.query(scoped)
        if len(rows) <= size:
            return HandlerPage(rows, None)
        last = rows[size - 1]
        return HandlerPage(rows[:size], HandlerCursor(last.started_at, last.handler_id))

    async def list_page(
        self,
        *,
        statuses: Sequence[Status] | None = None,
        workflow_names: Sequence[str] | None = None,
        handler_ids: Sequence[str] | None = None,
        descending: bool = False,
        after: HandlerCursor | None = None,
        limit: int | None = None,
        principal: str | None = None,
    ) -> HandlerPage:
        """A page of handlers matching the filters (``None``: no filter), after ``after``.

        ``after`` is the ``next_cursor`` of the previous page, passed back as it came.
        """
        query = HandlerQuery(
            status_in=None if statuses is None else list(statuses),
            workflow_name_in=None if workflow_names is None else list(workflow_names),
            handler_id_in=None if handler_ids is None else list(handler_ids),
            descending=descending,
            after=after,
            limit=limit,
        )
        return await self.list_handlers(query, principal=principal)

    async def wait_for(self, handler_id: str, *, principal: str | None = None) -> PersistentHandler:
        """Wait until the handler is finished and its outcome written; return it.

        Raises ``StoreUnavailableError`` if the run ended here but its outcome
        cannot be written for now (it is kept, and written once the store is back).
        """
        while True:
            self._stop.refuse_if_stopping()
            live = self._live.get(handler_id)
            if live is not None:
                await self._wait_written(live)
                visible = not self.scoped or live.row.principal == principal
                if live.final is not None and visible:
                    return live.final  # exactly what was just written
            row = await self.get(handler_id, principal=principal)
            if row.is_terminal:
                return row
            await self._stop.pause(self.config.stream_poll_interval)

    async def _wait_written(self, live: LiveRun) -> None:
        while not live.finished.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(live.finished.wait(), self.config.poll_interval)
            self._stop.refuse_if_stopping()  # a release that cannot be written must not hold it
            error = self._writer.last_error
            if not live.finished.is_set() and live.outcome is not None and error is not None:
                raise StoreUnavailableError(
                    f"The run finished but its outcome is not written yet: {error}"
                )

    def _scope(self, principal: str | None) -> list[str | None] | None:
        return [principal] if self.scoped else None

    # -- streams -------------------------------------------------------------------------

    async def open_stream(
        self,
        handler_id: str,
        *,
        principal: str | None = None,
        after: int | Literal["now"] = "now",
        include_internal: bool = False,
        heartbeat_interval: float | None = 25.0,
    ) -> EventStream | None:
        """A stream of the handler's written events after ``after``.

        ``"now"`` starts after the last written event. Returns ``None`` when the
        run has finished and nothing is left after the cursor.
        """
        self._stop.refuse_if_stopping()
        row = await self.get(handler_id, principal=principal)
        return await self._reader.open(
            row,
            after=after,
            include_internal=include_internal,
            heartbeat_interval=heartbeat_interval,
        )

    # -- sending events and cancelling -----------------------------------------------------

    async def send_event(
        self,
        handler_id: str,
        event: Event | Any,
        *,
        step: str | None = None,
        principal: str | None = None,
    ) -> None:
        """Deliver an event to a running handler, durably.

        ``event`` is an Event or an envelope payload (decoded among the
        workflow's declared events). The event is recorded before this returns,
        so it reaches the run even if this process dies right after.
        """
        self._require_running()
        row = await self.get(handler_id, principal=principal)
        if row.is_terminal or row.run_id is None:
            raise ConflictError("Workflow already completed")
        entry = self.registry.get(row.workflow_name)
        decoded = event if isinstance(event, Event) else entry.events.decode(event)
        _check_sendable(decoded)
        _check_step(entry, step, decoded)
        payload = codec.dumps(self._check_storable(entry, decoded, start=False))
        inbox_id = await self.store.enqueue_event(handler_id, row.run_id, payload, step, utcnow())
        if inbox_id is None:
            raise ConflictError("Workflow already completed")
        attached = self._live.attached(handler_id, row.run_id)
        if attached is not None:
            attached.deliver(inbox_id, decoded, step)
            return
        live = self._live.get(handler_id)
        if live is not None:
            await live.finished.wait()
        if not self.draining:  # else the row is left unowned, for the next owner
            await self._supervisor.adopt([handler_id])

    async def cancel(
        self, handler_id: str, *, purge: bool = False, principal: str | None = None
    ) -> Literal["cancelled", "deleted"]:
        """Cancel a running handler (and with ``purge`` delete it, finished or not)."""
        row = await self.get(handler_id, principal=principal)
        if not row.is_terminal:
            await self._cancel_running(row)
        elif not purge:
            raise ConflictError(f"Handler '{handler_id}' is already {row.status}")
        if not purge:
            return "cancelled"
        if not await self.store.delete(HandlerQuery(handler_id_in=[handler_id])):
            raise HandlerNotFoundError(handler_id)
        return "deleted"

    async def _cancel_running(self, row: PersistentHandler) -> None:
        live = self._live.attached(row.handler_id, row.run_id)
        if live is not None:
            assert live.handler is not None
            if live.outcome is None:
                await live.handler.cancel_run()
            await live.finished.wait()
            if live.outcome is not None and live.outcome.status == "cancelled":
                return
            raise ConflictError(f"Handler '{row.handler_id}' already finished")
        cancelled = stored_event(WorkflowCancelledEvent())
        if not await self.store.finalize_handler(
            row.handler_id, status="cancelled", error=None, event=cancelled, at=utcnow()
        ):
            raise ConflictError(f"Handler '{row.handler_id}' already finished")

    def _require_running(self) -> None:
        if not self.running:
            raise StoreUnavailableError("The workflow service is not running", retry_after=5)
        self._stop.refuse_if_stopping()
        if not self.store.liveness.held:
            raise StoreUnavailableError(
                "The server lost its database session and cannot own runs right now", retry_after=1
            )

    # -- retrying failed runs -------------------------------------------------------------

    async def retry(self, handler_id: str, *, principal: str | None = None) -> PersistentHandler:
        """Put a failed run back to running from its last checkpoint; return its handler.

        The failed step runs again with the state it had; finished steps are not
        repeated; the event log goes on with the next sequence. The run is claimed
        here at once (or by whichever replica's ownership round is first). Raises
        ``HandlerNotFoundError`` (unknown, or another caller's) and
        ``ConflictError`` (not failed, or its workflow is not served here).
        """
        self._require_running()
        row = await self.get(handler_id, principal=principal)
        if row.status == "failed" and self.registry.find(row.workflow_name) is None:
            raise ConflictError(
                f"Cannot retry: workflow '{row.workflow_name}' is not registered on this server"
            )
        reopened = await reopen_failed(self.store, handler_id, principal_in=self._scope(principal))
        if not self.draining:  # else the row is left unowned, for the next owner
            await self._supervisor.adopt([handler_id])
        return reopened


def _start_event_for(entry: RegisteredWorkflow, given: StartEvent | None) -> StartEvent:
    """The start event of a new run: ``given``, converted to the workflow's start class."""
    cls = entry.workflow.start_event_class
    if given is None:
        try:
            return cls()
        except ValidationError as exc:
            message = codec.describe_validation_error(exc)
            raise BadEventError(f"Invalid {cls.__name__}: {message}") from exc
    if isinstance(given, cls):
        return given
    # A base StartEvent (or another class) from host code: validated into the
    # start class exactly as the same event sent over HTTP would be.
    return entry.events.decode_start(codec.envelope(given))


def _check_sendable(event: Event) -> None:
    if isinstance(event, StopEvent):
        raise BadEventError(
            f"A {type(event).__name__} cannot be sent into a run: a run's outcome is its own"
        )
    if isinstance(event, StartEvent):
        raise BadEventError(
            f"A {type(event).__name__} cannot be sent into a running run: it has already started"
        )


def check_handler_id(handler_id: str) -> str:
    """``handler_id`` if a URL path segment carries it unescaped; else ``BadRequestError``.

    That is 1 to 255 RFC 3986 unreserved characters, ``:`` and ``@``, and not
    ``.`` or ``..`` (which a URL path resolves away).
    """
    if not _HANDLER_ID.fullmatch(handler_id) or handler_id in (".", ".."):
        raise BadRequestError(
            "Invalid handler_id: use 1 to 255 letters, digits and '-._~:@' (not '.' or '..' alone)"
        )
    return handler_id


def _check_step(entry: RegisteredWorkflow, step: str | None, event: Event) -> None:
    """Refuse a target step the workflow lacks.

    Whether the step takes the event is not checked against its signature: a
    step may wait for it with ``ctx.wait_for_event`` instead.
    """
    if step is None:
        return
    steps = entry.workflow._get_steps()  # the engine's own table of steps, by name
    if step not in steps:
        raise BadEventError(f"Step {step} does not exist")


def _scoped_key(principal: str | None, key: str) -> str:
    raw = codec.dumps([principal, key]).encode()
    return hashlib.sha256(raw).hexdigest()
