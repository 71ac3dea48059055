"""The run service facade: checks each call, then hands it to the room that does it.

The rooms are `starting`, `recovery`, `launch`, `live_runs`, `reading`, `inbox`
and `stopping` (see docs/architecture.md, "The run service, room by room"); this
module keeps the lifecycle, lookups and pages, cancelling and retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from workflows import Workflow
from workflows.events import (
    Event,
    StartEvent,
    StopEvent,
    WorkflowCancelledEvent,
)

from .. import codec
from ..errors import (
    BadRequestError,
    ConflictError,
    HandlerNotFoundError,
    StoreUnavailableError,
)
from ..registry import RegisteredWorkflow, WorkflowRegistry
from ..store.base import (
    AbstractWorkflowStore,
    HandlerCursor,
    HandlerQuery,
    PersistentHandler,
    Status,
    utcnow,
)
from ..store.memory import MemoryWorkflowStore
from ..telemetry import Telemetry
from .config import ServiceConfig
from .inbox import Inbox
from .launch import Launcher, stored_event
from .live import LiveRun
from .live_runs import LiveRuns
from .ownership import Owner
from .reading import EventReader, read_handler
from .recovery import Recovery
from .retention import RetentionTask
from .retry import reopen_failed
from .runtime import DurableRuntime
from .starting import Starter, check_handler_id, scoped_key
from .stopping import StopSignal
from .streams import EventStream
from .supervisor import Supervisor
from .tail import SharedTail

logger = logging.getLogger(__name__)


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
        self._tail = SharedTail(store, self.config.stream_poll_interval)
        self._reader = EventReader(store, self._live, self.config, self._stop, self._tail)
        self._launcher = Launcher(store, self.runtime, self._live)
        self._starter = Starter(
            store,
            self.owner,
            self.config,
            self.runtime,
            self.telemetry,
            live=self._live,
            launcher=self._launcher,
            stop=self._stop,
            scoped=scoped,
        )
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
            live=self._live,
            recovery=self._recovery,
        )
        self._inbox = Inbox(store, self.runtime, self._live, self._supervisor, self._stop)
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
        await self.store.notifications.start()
        await self.runtime.launch()
        self._stop.reset()
        self._drain = None
        self._writer.start()
        self._supervisor.start()
        self._tail.start()
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
        await self.store.notifications.close()
        await self.store.close()
        await self.runtime.destroy()

    async def _release_all(self, began: float) -> None:
        """Stop every local run and write its checkpoint and release by ``stop_timeout``."""
        timeout = self.config.stop_timeout
        deadline = began + timeout
        await self.retention.stop()  # its deletes would compete with the final writes
        await self._supervisor.stop()
        await self._tail.stop()  # its streams end; their clients reconnect elsewhere
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
        key = None if idempotency_key is None else scoped_key(principal, idempotency_key)
        return await self._starter.start(
            entry,
            start_event,
            handler_id=handler_id,
            principal=principal,
            context=context,
            key=key,
            request_hash=request_hash,
        )

    async def run(
        self, workflow_name: str, start_event: StartEvent | None = None, **options: Any
    ) -> PersistentHandler:
        """Start a run and wait until it finished and its outcome is written."""
        handler = await self.start_run(workflow_name, start_event, **options)
        return await self.wait_for(handler.handler_id, principal=options.get("principal"))

    def _serializer(self, entry: RegisteredWorkflow) -> Any:
        return self.runtime.get_serializer(entry.workflow)

    # -- reading -------------------------------------------------------------------------

    async def get(self, handler_id: str, *, principal: str | None = None) -> PersistentHandler:
        """The handler (without its checkpoint); raises ``HandlerNotFoundError``."""
        return await read_handler(self.store, handler_id, self._scope(principal))

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
        heartbeat_interval: float | None = None,
    ) -> EventStream | None:
        """A stream of the handler's written events after ``after``.

        ``"now"`` starts after the last written event. Returns ``None`` when the
        run has finished and nothing is left after the cursor. Heartbeats are
        the HTTP edge's (``sse_heartbeat_interval``): ``heartbeat_interval`` is
        accepted for callers written before, and ignored.
        """
        self._stop.refuse_if_stopping()
        row = await self.get(handler_id, principal=principal)
        return await self._reader.open(
            row,
            after=after,
            include_internal=include_internal,
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
        await self._inbox.send(row, self.registry.get(row.workflow_name), event, step)

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
