"""The run service facade: checks each call, then hands it to the room that does it.

Each public method checks the caller (the service runs, is not stopping, the
handler is the caller's) and calls one room: `starting`, `recovery`, `inbox`,
`reading`, `waiting`, `listing`, `cancelling`, `retry`, `shutdown`, `health`
(see docs/architecture.md, "The run service, room by room"). This module wires
the rooms together and keeps the lifecycle's own state: started, stopping, stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

from workflows import Workflow
from workflows.events import Event, StartEvent, StopEvent

from .. import codec
from .._engine import move_to_runtime
from ..errors import BadRequestError, ConflictError, StoreUnavailableError
from ..registry import RegisteredWorkflow, WorkflowRegistry
from ..store.base import (
    AbstractWorkflowStore,
    HandlerCursor,
    HandlerQuery,
    PersistentHandler,
    Status,
)
from ..store.memory import MemoryWorkflowStore
from ..telemetry import Telemetry
from ..versions import check_version
from .cancelling import Canceller
from .config import ServiceConfig
from .health import background_problem
from .inbox import Inbox
from .launch import Launcher
from .listing import HandlerPage, page_query, read_page
from .live import LiveRun
from .live_runs import LiveRuns
from .ownership import Owner
from .reading import EventReader, read_handler
from .recovery import Recovery
from .retention import RetentionTask
from .retry import Retrier
from .runtime import DurableRuntime
from .shutdown import Shutdown
from .starting import Starter, check_handler_id, scoped_key
from .stopping import StopSignal
from .streams import EventStream
from .supervisor import Supervisor
from .tail import SharedTail
from .waiting import Waiter


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
            registry=self.registry,
            count_queued=self.telemetry.enabled,
        )
        self._inbox = Inbox(store, self.runtime, self._live, self._supervisor, self._stop)
        self.retention = RetentionTask(store, self.config)
        self._waiter = Waiter(store, self._live, self.config, self._stop)
        self._canceller = Canceller(store, self._live)
        self._retrier = Retrier(store, self.registry, self._supervisor, self._stop)
        self._shutdown = Shutdown(
            store,
            self.owner,
            self.config,
            live=self._live,
            supervisor=self._supervisor,
            retention=self.retention,
            tail=self._tail,
        )
        self.telemetry.watch(
            self._live.values,
            lambda: self._writer.unwritten_since,
            lambda: self._supervisor.queued,
        )

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
        self,
        name: str,
        workflow: Workflow,
        additional_events: Iterable[type[Event]] = (),
        *,
        version: str | None = None,
    ) -> RegisteredWorkflow:
        """Serve ``workflow`` as ``name``. The instance runs on this service only.

        Its runs record ``version`` (by default the workflow's fingerprint, see
        ``versions``), and this process claims and resumes only runs of the
        versions it serves (and those recorded without one). Raises
        ``ValueError`` for a taken name or an invalid version.
        """
        if version is not None:
            check_version(version)  # before the workflow moves onto this runtime
        workflow.validate()
        try:
            move_to_runtime(workflow, self.runtime)
        except RuntimeError as exc:
            raise ValueError(
                f"Workflow {name!r} has already run elsewhere; register a fresh instance"
            ) from exc
        entry = self.registry.add(name, workflow, additional_events, version)
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
        await self._supervisor.register()
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
        self._drain = asyncio.ensure_future(self._shutdown.release_all(time.monotonic()))

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
        ``max_unwritten_age``, or no ownership round has completed for half of
        ``lease_ttl`` (the heartbeat may lapse and runs move elsewhere).
        """
        if not self.running:
            return "The workflow service is not running"
        if self.draining:
            return "The workflow service is stopping"
        return await background_problem(self.store, self.config, self._writer, self._supervisor)

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

    # -- reading -------------------------------------------------------------------------

    async def get(self, handler_id: str, *, principal: str | None = None) -> PersistentHandler:
        """The handler (without its checkpoint); raises ``HandlerNotFoundError``."""
        return await read_handler(self.store, handler_id, self._scope(principal))

    async def list_handlers(
        self, query: HandlerQuery, *, principal: str | None = None
    ) -> HandlerPage:
        """A page of handlers (without checkpoints), at most ``config.max_page_size`` long."""
        return await read_page(
            self.store,
            query,
            max_size=self.config.max_page_size,
            principal_in=self._scope(principal),
        )

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
        versions: Sequence[str] | None = None,
    ) -> HandlerPage:
        """A page of handlers matching the filters (``None``: no filter), after ``after``.

        ``after`` is the ``next_cursor`` of the previous page, passed back as it came.
        """
        query = page_query(
            statuses, workflow_names, handler_ids, descending, after, limit, versions=versions
        )
        return await self.list_handlers(query, principal=principal)

    async def wait_for(self, handler_id: str, *, principal: str | None = None) -> PersistentHandler:
        """Wait until the handler is finished and its outcome written; return it.

        Raises ``StoreUnavailableError`` if the run ended here but its outcome
        cannot be written for now (it is kept, and written once the store is back).
        """
        return await self._waiter.wait_for(handler_id, self._scope(principal))

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
    ) -> EventStream | None:
        """A stream of the handler's written events after ``after``.

        ``"now"`` starts after the last written event. Returns ``None`` when the
        run has finished and nothing is left after the cursor. Heartbeats are
        the HTTP edge's (``sse_heartbeat_interval``), not the stream's.
        """
        self._stop.refuse_if_stopping()
        row = await self.get(handler_id, principal=principal)
        return await self._reader.open(
            row,
            after=after,
            include_internal=include_internal,
        )

    # -- sending events, cancelling, retrying ------------------------------------------------

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
        return await self._canceller.cancel(row, purge=purge)

    def _require_running(self) -> None:
        if not self.running:
            raise StoreUnavailableError("The workflow service is not running", retry_after=5)
        self._stop.refuse_if_stopping()
        if not self.store.liveness.held:
            raise StoreUnavailableError(
                "The server lost its database session and cannot own runs right now", retry_after=1
            )
        if self._supervisor.heartbeat_late():
            raise StoreUnavailableError(
                "The server could not renew its ownership heartbeat in time", retry_after=1
            )

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
        return await self._retrier.retry(row, self._scope(principal))
