"""The run service facade: checks each call, then hands it to the room that does it.

Each public method checks the caller (the service admits work, the handler is
the caller's) and calls one room (see docs/architecture.md, "The run service,
room by room"). The rooms are built in ``rooms.py``; the service's own life
(start, graceful stop, liveness loss) and what it admits are ``lifecycle.py``'s,
reached by the host through ``control.py``'s methods, which the facade inherits;
serving a workflow is ``registration.py``'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from workflows import Workflow
from workflows.events import Event, StartEvent

from ..errors import ConflictError
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
from .config import ServiceConfig
from .control import ServiceControl
from .inputs import check_handler_id, stored_key
from .lifecycle import Lifecycle
from .listing import HandlerPage, page_query, read_page
from .live import LiveRun
from .ownership import Owner
from .reading import read_handler
from .registration import register_workflow
from .rooms import Basis, build_rooms
from .runtime import DurableRuntime
from .streams import EventStream


class WorkflowService(ServiceControl):
    """Runs registered workflows durably on a store.

    Every run's progress (checkpoint, streamed events, status) is written
    through one group-committing writer; runs interrupted by a crash or a
    restart are claimed and resumed from their last checkpoint; several
    processes may share one database, each run being owned by one of them at a
    time. Host code may call these methods directly (see ``dependencies``).

    ``principal`` arguments scope handlers to the caller when the service was
    created with ``scoped=True``: other callers' handlers are reported missing.
    Starting, stopping and health are :class:`ServiceControl`'s methods.
    """

    def __init__(
        self,
        store: AbstractWorkflowStore | None = None,
        *,
        config: ServiceConfig | None = None,
        scoped: bool = False,
    ) -> None:
        self.store = store = store or MemoryWorkflowStore()  # process-local when none is given
        self.config, self.scoped = config or ServiceConfig(), scoped
        self.registry = WorkflowRegistry()
        self.runtime = DurableRuntime()
        self.telemetry = Telemetry()
        self.owner = Owner.for_this_process()
        self._basis = Basis(
            store, self.owner, self.config, self.registry, self.runtime, self.telemetry, scoped
        )
        rooms = self._rooms = build_rooms(self._basis)
        self.retention = rooms.retention
        # The rooms under the names the facade (and tests looking inside) call them by.
        self._stop, self._live, self._writer = rooms.stop, rooms.live, rooms.live.writer
        self._reader, self._launcher, self._starter = rooms.reader, rooms.launcher, rooms.starter
        self._recovery, self._supervisor = rooms.recovery, rooms.supervisor
        self._inbox, self._waiter, self._canceller = rooms.inbox, rooms.waiter, rooms.canceller
        self._retrier, self._shutdown = rooms.retrier, rooms.shutdown
        self._lifecycle = Lifecycle(store, self.owner, self.config, self.runtime, rooms)

    @property
    def _runs(self) -> dict[str, LiveRun]:
        """The live runs by handler id (kept under this name for tests that look inside)."""
        return self._live.by_handler

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
        return register_workflow(self._basis, name, workflow, additional_events, version)

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
        self._lifecycle.admit()
        if handler_id is not None:
            check_handler_id(handler_id)
        key = stored_key(principal, idempotency_key)
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
        scope, most = self._scope(principal), self.config.max_page_size
        return await read_page(self.store, query, max_size=most, principal_in=scope)

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
        row = self._reader.row_of_live(handler_id, self._scope(principal))
        if row is None:  # not executing here: the store answers
            row = await self.get(handler_id, principal=principal)
        return await self._reader.open(row, after=after, include_internal=include_internal)

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
        self._lifecycle.admit()
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

    async def retry(self, handler_id: str, *, principal: str | None = None) -> PersistentHandler:
        """Put a failed run back to running from its last checkpoint; return its handler.

        The failed step runs again with the state it had; finished steps are not
        repeated; the event log goes on with the next sequence. The run is claimed
        here at once (or by whichever replica's ownership round is first). Raises
        ``HandlerNotFoundError`` (unknown, or another caller's) and
        ``ConflictError`` (not failed, or its workflow is not served here).
        """
        self._lifecycle.admit()
        row = await self.get(handler_id, principal=principal)
        return await self._retrier.retry(row, self._scope(principal))
