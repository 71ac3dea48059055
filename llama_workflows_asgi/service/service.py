"""The run service: starts, resumes, streams, cancels and feeds workflow runs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import string
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError
from workflows import Context, Workflow
from workflows.events import Event, StartEvent, WorkflowCancelledEvent, WorkflowFailedEvent

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
    InboxEntry,
    PersistentHandler,
    StoredEvent,
    utcnow,
)
from ..telemetry import Telemetry
from .config import ServiceConfig
from .live import LiveRun
from .ownership import Owner
from .runtime import DurableRuntime
from .streams import EventStream
from .supervisor import Supervisor
from .writer import ProgressWriter

logger = logging.getLogger(__name__)

_ID_ALPHABET = string.ascii_letters + string.digits
_ID_SPACE = len(_ID_ALPHABET) ** 10


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
        store: AbstractWorkflowStore,
        *,
        config: ServiceConfig | None = None,
        scoped: bool = False,
    ) -> None:
        self.store = store
        self.config = config or ServiceConfig()
        self.scoped = scoped
        self.registry = WorkflowRegistry()
        self.runtime = DurableRuntime()
        self.telemetry = Telemetry()
        self.owner = Owner.for_this_process()
        self.running = False
        self._runs: dict[str, LiveRun] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._writer = ProgressWriter(
            store,
            self.owner.id,
            delay=self.config.checkpoint_delay,
            on_lost=self._lose,
            on_settled=self._retire,
        )
        self._supervisor = Supervisor(
            store,
            self.owner,
            self.config,
            live_runs=lambda: list(self._runs.values()),
            on_lost=self._lose,
            deliver=self._deliver_entry,
            resume=self._resume_batch,
        )
        self.telemetry.watch(
            lambda: list(self._runs.values()), lambda: self._writer.unwritten_since
        )

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
        return self.registry.add(name, workflow, additional_events)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, then begin writing progress and adopting interrupted runs."""
        if self.running:
            return
        await self.store.start()
        await self.runtime.launch()
        self._writer.start()
        self._supervisor.start()
        self.running = True

    async def stop(self) -> None:
        """Stop gracefully: checkpoint and release every local run, never failing one."""
        if not self.running:
            return
        self.running = False
        await self._supervisor.stop()
        runs = list(self._runs.values())
        await asyncio.gather(*(run.stop_engine(self.config.stop_timeout) for run in runs))
        try:
            await asyncio.wait_for(self._writer.drain(), self.config.stop_timeout * 2)
            await self.store.release_handlers(self.owner.id, None)
        except (asyncio.TimeoutError, StoreUnavailableError) as exc:
            logger.warning(
                "shutdown could not write everything (%s); runs resume from their last checkpoint",
                exc,
            )
        await self._writer.stop()
        for task in list(self._background):
            task.cancel()
        self._runs.clear()
        await self.store.close()
        await self.runtime.destroy()

    @asynccontextmanager
    async def running_context(self) -> AsyncIterator[WorkflowService]:
        """``async with service.running_context():`` starts and stops the service."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def healthy(self) -> bool:
        """Whether the service is started and its store answers."""
        if not self.running:
            return False
        try:
            await self.store.ping()
        except StoreUnavailableError:
            return False
        return True

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
        key = None if idempotency_key is None else _scoped_key(principal, idempotency_key)
        if key is not None:
            replay = await self._replay(key, request_hash, principal)
            if replay is not None:
                return replay
        event = _start_event_for(entry, start_event)
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
            raise BadRequestError(f"Invalid context: {exc}") from exc
        return context

    async def _previous_handler(
        self, entry: RegisteredWorkflow, handler_id: str, principal: str | None
    ) -> PersistentHandler | None:
        rows = await self.store.query(HandlerQuery(handler_id_in=[handler_id]))
        if not rows:
            return None
        previous = rows[0]
        if not previous.is_terminal or handler_id in self._runs:
            raise ConflictError(f"Handler '{handler_id}' is already running")
        if previous.principal != principal or previous.workflow_name != entry.name:
            raise ConflictError(f"Handler id '{handler_id}' is already in use")
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
        live = self._register(row, entry, next_sequence=0)
        live.telemetry = self.telemetry.accepted(row)  # records the trace context in the row
        try:
            await self.store.create_handler(row, replaces_run_id=replaces)
        except IdempotencyKeyExistsError:
            self._unregister(live)
            assert row.idempotency_key is not None
            replay = await self._replay(row.idempotency_key, row.request_hash, row.principal)
            if replay is None:
                raise
            return replay
        except HandlerExistsError as exc:
            self._unregister(live)
            raise ConflictError(f"Handler '{row.handler_id}' is already running") from exc
        except BaseException:
            self._unregister(live)
            raise
        await self._launch_or_fail(live, row.ctx, event)
        return row.model_copy(update={"ctx": None})

    # -- resuming runs -------------------------------------------------------------------

    async def _resume_batch(self, rows: Sequence[PersistentHandler]) -> None:
        if not rows:
            return
        run_ids = [r.run_id for r in rows if r.run_id is not None]
        sequences = await self.store.last_sequences(run_ids)
        inbox = await self.store.read_inbox([r.handler_id for r in rows])
        for row in rows:
            if row.handler_id in self._runs:
                continue  # still running here: the claim only refreshed our own lease
            problem = self._unresumable(row)
            if problem is not None:
                await self._give_up(row.handler_id, problem)
                continue
            previous_owner = row.previous_owner_id
            row = row.model_copy(update={"previous_owner_id": None})  # claim bookkeeping only
            assert row.run_id is not None
            live = self._register(
                row, self.registry.get(row.workflow_name), sequences.get(row.run_id, -1) + 1
            )
            live.telemetry = self.telemetry.resumed(row, previous_owner=previous_owner)
            ctx, start = self._resume_inputs(row, live.workflow)
            if await self._launch_or_fail(live, ctx, start):
                for entry in inbox:
                    if entry.handler_id == row.handler_id and entry.run_id == row.run_id:
                        self._deliver_entry(live, entry)

    def _unresumable(self, row: PersistentHandler) -> str | None:
        if self.registry.find(row.workflow_name) is None:
            return f"Cannot resume: workflow '{row.workflow_name}' is not registered on this server"
        if row.run_id is None:
            return "Cannot resume: the handler has no run"
        if row.resume_attempts > self.config.max_resume_attempts:
            attempts = self.config.max_resume_attempts
            return (
                f"Gave up resuming after {attempts} attempts without progress "
                "(the run kept crashing its process)"
            )
        return None

    def _resume_inputs(
        self, row: PersistentHandler, entry: RegisteredWorkflow
    ) -> tuple[dict[str, Any] | None, StartEvent | None]:
        if row.ctx is not None and row.ctx.get("is_running"):
            return row.ctx, None
        # Nothing checkpointed mid-run yet: start over from the recorded start event.
        start = entry.events.decode_start(row.start_event or {})
        return row.ctx, start

    async def _give_up(self, handler_id: str, reason: str) -> None:
        fields = {"handler_id": handler_id, "run_state": "failed", "error": reason}
        logger.error("handler %s failed: %s", handler_id, reason, extra=fields)
        failure = WorkflowFailedEvent(step_name="", exception=RuntimeError(reason))
        await self.store.finalize_handler(
            handler_id, status="failed", error=reason, event=_stored(failure), at=utcnow()
        )

    # -- engine wiring -------------------------------------------------------------------

    def _register(
        self, row: PersistentHandler, entry: RegisteredWorkflow, next_sequence: int
    ) -> LiveRun:
        assert row.run_id is not None
        if row.handler_id in self._runs:
            raise ConflictError(f"Handler '{row.handler_id}' is already running")
        live = LiveRun(
            row,
            workflow=entry,
            serializer=self._serializer(entry),
            next_sequence=next_sequence,
            on_dirty=self._writer.mark,
            on_idle=self._schedule_idle_release,
            checkpoints=self.store.durable,
        )
        live.idle_since = row.idle_since
        self._runs[row.handler_id] = live
        return live

    def _unregister(self, live: LiveRun) -> None:
        if self._runs.get(live.handler_id) is live:
            del self._runs[live.handler_id]
        if live.idle_timer is not None:
            live.idle_timer.cancel()  # it would keep the finished run alive until it fires
        self.runtime.forget(live.run_id)
        if live.handler is not None:  # it ran here (not a refused or failed start)
            live.telemetry.ended(*_ending(live))

    async def _launch_or_fail(
        self, live: LiveRun, ctx: dict[str, Any] | None, start: StartEvent | None
    ) -> bool:
        try:
            self._launch(live, ctx, start)
        except Exception as exc:
            live.abort()
            reason = f"Cannot resume: {type(exc).__name__}: {exc}"
            live.telemetry.ended("failed", reason)
            self._unregister(live)
            await self._give_up(live.handler_id, reason)
            return False
        return True

    def _launch(self, live: LiveRun, ctx: dict[str, Any] | None, start: StartEvent | None) -> None:
        workflow = live.workflow.workflow
        context = (
            None
            if ctx is None
            else Context.from_dict(workflow, ctx, serializer=self._serializer(live.workflow))
        )
        self.runtime.observe(live.run_id, live)
        with live.telemetry.executing():  # steps inherit its tags and span
            handler = workflow.run(ctx=context, start_event=start, run_id=live.run_id)
        live.attach(handler, self.runtime.get_external_adapter(live.run_id))
        self._spawn(self._watch(live))

    async def _watch(self, live: LiveRun) -> None:
        """Fail a run whose engine stopped without a terminal event (and was not released)."""
        assert live.handler is not None
        try:
            await live.handler.stop_event_result()
        except BaseException as exc:
            error: BaseException | None = exc
        else:
            error = None
        if live.outcome is None and not live.releasing and self._runs.get(live.handler_id) is live:
            reason = (
                f"{type(error).__name__}: {error}" if error else "the run stopped without a result"
            )
            live.observe_event(WorkflowFailedEvent(step_name="", exception=RuntimeError(reason)))

    def _serializer(self, entry: RegisteredWorkflow) -> Any:
        return self.runtime.get_serializer(entry.workflow)

    def _deliver_entry(self, live: LiveRun, entry: InboxEntry) -> None:
        try:
            event = live.workflow.events.decode(entry.payload)
            live.deliver(entry.id, event, entry.step)
        except Exception as exc:
            logger.warning(
                "dropping undeliverable event %s for %s: %s", entry.id, live.handler_id, exc
            )
            live.drop_inbox_entry(entry.id)

    def _lose(self, live: LiveRun) -> None:
        """Stop a run this process no longer owns, writing nothing more for it."""
        live.abort()
        live.finished.set()
        self._unregister(live)

    def _retire(self, live: LiveRun) -> None:
        """Forget a run whose end (or release) is written."""
        live.abort()
        self._unregister(live)

    def _schedule_idle_release(self, live: LiveRun) -> None:
        timeout = self.config.idle_timeout
        if timeout is None or not self.running:
            return
        if live.idle_timer is not None:
            live.idle_timer.cancel()
        loop = asyncio.get_running_loop()
        live.idle_timer = loop.call_later(
            timeout, self._release_if_still_idle, live, live.idle_since
        )

    def _release_if_still_idle(self, live: LiveRun, marker: datetime | None) -> None:
        if (
            self._runs.get(live.handler_id) is live
            and live.idle_since == marker
            and not live.releasing
        ):
            self._spawn(live.stop_engine(self.config.stop_timeout))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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

    async def wait_for(self, handler_id: str, *, principal: str | None = None) -> PersistentHandler:
        """Wait until the handler is finished and its outcome written; return it.

        Raises ``StoreUnavailableError`` if the run ended here but its outcome
        cannot be written for now (it is kept, and written once the store is back).
        """
        while True:
            live = self._runs.get(handler_id)
            if live is not None:
                await self._wait_written(live)
                visible = not self.scoped or live.row.principal == principal
                if live.final is not None and visible:
                    return live.final  # exactly what was just written
            row = await self.get(handler_id, principal=principal)
            if row.is_terminal:
                return row
            await asyncio.sleep(self.config.stream_poll_interval)

    async def _wait_written(self, live: LiveRun) -> None:
        while not live.finished.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(live.finished.wait(), self.config.poll_interval)
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
        row = await self.get(handler_id, principal=principal)
        if row.run_id is None:
            raise HandlerNotFoundError(handler_id)
        cursor = await self._last_sequence(row.run_id) if after == "now" else after
        first = await self._events_after(handler_id, row.run_id, cursor)
        if not first and row.is_terminal:
            return None
        return EventStream(
            row.run_id,
            cursor,
            first,
            lambda run_id, after_seq, timeout: self._next_events(
                handler_id, run_id, after_seq, timeout
            ),
            include_internal=include_internal,
            heartbeat_interval=heartbeat_interval,
        )

    async def _last_sequence(self, run_id: str) -> int:
        for live in self._runs.values():
            if live.run_id == run_id:
                return live.durable_sequence
        return (await self.store.last_sequences([run_id])).get(run_id, -1)

    async def _events_after(self, handler_id: str, run_id: str, cursor: int) -> list[StoredEvent]:
        live = self._runs.get(handler_id)
        if live is not None and live.run_id == run_id:
            if cursor >= live.durable_sequence:
                return []  # nothing written after the cursor yet
            if live.tail and live.tail[0].sequence <= cursor + 1:
                return [e for e in live.tail if e.sequence > cursor]
        return await self.store.read_events(run_id, after_sequence=cursor)

    async def _next_events(
        self, handler_id: str, run_id: str, cursor: int, timeout: float
    ) -> list[StoredEvent] | None:
        live = self._runs.get(handler_id)
        if live is not None and live.run_id == run_id:
            if live.durable_sequence <= cursor:
                await live.wait_changed(timeout)
            return await self._events_after(handler_id, run_id, cursor)
        events = await self.store.read_events(run_id, after_sequence=cursor)
        if events:
            return events
        if not await self._still_streamable(handler_id, run_id, cursor):
            return None
        await asyncio.sleep(min(timeout, self.config.stream_poll_interval))
        return []

    async def _still_streamable(self, handler_id: str, run_id: str, cursor: int) -> bool:
        rows = await self.store.query(HandlerQuery(handler_id_in=[handler_id], load_ctx=False))
        if not rows or rows[0].run_id != run_id:
            return False
        if rows[0].is_terminal:
            # The terminal event is written with the status: read it now.
            return bool(await self.store.read_events(run_id, after_sequence=cursor, limit=1))
        return True

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
        _check_step(entry, step, decoded)
        payload = codec.dumps(codec.envelope(decoded))
        inbox_id = await self.store.enqueue_event(handler_id, row.run_id, payload, step, utcnow())
        if inbox_id is None:
            raise ConflictError("Workflow already completed")
        live = self._runs.get(handler_id)
        if (
            live is not None
            and live.run_id == row.run_id
            and live.handler is not None
            and not live.releasing
        ):
            live.deliver(inbox_id, decoded, step)
            return
        if live is not None:
            await live.finished.wait()
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
        live = self._runs.get(row.handler_id)
        if (
            live is not None
            and live.run_id == row.run_id
            and live.handler is not None
            and not live.releasing
        ):
            if live.outcome is None:
                await live.handler.cancel_run()
            await live.finished.wait()
            if live.outcome is not None and live.outcome.status == "cancelled":
                return
            raise ConflictError(f"Handler '{row.handler_id}' already finished")
        cancelled = _stored(WorkflowCancelledEvent())
        if not await self.store.finalize_handler(
            row.handler_id, status="cancelled", error=None, event=cancelled, at=utcnow()
        ):
            raise ConflictError(f"Handler '{row.handler_id}' already finished")

    def _require_running(self) -> None:
        if not self.running:
            raise StoreUnavailableError("The workflow service is not running", retry_after=5)


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


def _check_step(entry: RegisteredWorkflow, step: str | None, event: Event) -> None:
    if step is None:
        return
    try:
        entry.workflow._validate_valid_step_message(step, event)
    except Exception as exc:
        raise BadRequestError(str(exc)) from exc


def _ending(live: LiveRun) -> tuple[str, str | None]:
    """How a run stopped executing here: its written outcome, released, or lost."""
    if live.final is not None:
        return live.final.status, live.final.error
    return ("released" if live.releasing else "lost"), None


def _scoped_key(principal: str | None, key: str) -> str:
    raw = codec.dumps([principal, key]).encode()
    return hashlib.sha256(raw).hexdigest()


def _stored(event: Event) -> StoredEvent:
    encoded = codec.encode(event)
    return StoredEvent(-1, encoded.payload, encoded.event_type, encoded.internal, encoded.terminal)
