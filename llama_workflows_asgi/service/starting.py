"""Starting a run: from a start event (and maybe a handler id, a context, an idempotency key)
to a written row and a launched engine.

The inputs are checked before anything is written (the start event must
checkpoint and decode back, a reused handler id must be a finished handler of
the same caller and workflow, a given context must load). The run is live here
before its row exists, so that an ownership round never takes it for an orphan.
The checks that need no store (handler ids, keys, the start event) are in
``inputs.py``; this room does what needs the store and the live-run set.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from workflows import Context
from workflows.events import StartEvent

from .. import codec
from ..errors import BadRequestError, ConflictError, RunQueueFullError
from ..registry import RegisteredWorkflow
from ..store.base import (
    AbstractWorkflowStore,
    HandlerExistsError,
    HandlerQuery,
    IdempotencyKeyExistsError,
    PersistentHandler,
    utcnow,
)
from ..telemetry import Telemetry
from .config import ServiceConfig
from .inputs import new_id, start_event_for, storable_envelope
from .launch import Launcher
from .live_runs import LiveRuns
from .ownership import Owner
from .reading import read_handler
from .runtime import DurableRuntime
from .stopping import StopSignal

_IN_USE = "Handler id '{}' is already in use"


class Starter:
    """Writes and launches new runs of registered workflows."""

    def __init__(
        self,
        store: AbstractWorkflowStore,
        owner: Owner,
        config: ServiceConfig,
        runtime: DurableRuntime,
        telemetry: Telemetry,
        *,
        live: LiveRuns,
        launcher: Launcher,
        stop: StopSignal,
        scoped: bool,
    ) -> None:
        self._store = store
        self._owner = owner
        self._config = config
        self._runtime = runtime
        self._telemetry = telemetry
        self._live = live
        self._launcher = launcher
        self._stop = stop
        self._scoped = scoped

    async def start(
        self,
        entry: RegisteredWorkflow,
        start_event: StartEvent | None,
        *,
        handler_id: str | None,
        principal: str | None,
        context: dict[str, Any] | None,
        key: str | None,
        request_hash: str | None,
    ) -> PersistentHandler:
        """Start a run of ``entry`` and return it once its row is written.

        ``key`` is the idempotency key as stored (see :func:`.inputs.scoped_key`).
        """
        if key is not None:
            replay = await self._replay(key, request_hash, principal)
            if replay is not None:
                return replay
        event = start_event_for(entry, start_event)
        if self._live.is_full():
            await self._check_queue_room()
        serializer = self._runtime.get_serializer(entry.workflow)
        envelope = storable_envelope(entry, event, serializer, start=True)
        ctx, replaces = await self._initial_context(entry, handler_id, principal, context)
        row = self._new_row(entry, handler_id or new_id(), envelope, principal, key, request_hash)
        row.ctx = ctx  # the context the run starts from: none, a carried state store, or given
        return await self._create_and_launch(row, entry, event, replaces)

    async def _replay(
        self, key: str, request_hash: str | None, principal: str | None
    ) -> PersistentHandler | None:
        existing = await self._store.get_by_idempotency_key(key)
        if existing is None:
            return None
        if existing.request_hash != request_hash:
            raise ConflictError("Idempotency-Key was already used with a different request")
        scope = [principal] if self._scoped else None
        return await read_handler(self._store, existing.handler_id, scope)

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
        if not self._config.accept_context_api:
            raise BadRequestError(
                "Context API is disabled. Enable accept_context_api on the router to use it."
            )
        serializer = self._runtime.get_serializer(entry.workflow)
        try:
            Context.from_dict(entry.workflow, context, serializer=serializer)
        except Exception as exc:
            raise BadRequestError(f"Invalid context: {codec.readable_error(exc)}") from exc
        return context

    async def _previous_handler(
        self, entry: RegisteredWorkflow, handler_id: str, principal: str | None
    ) -> PersistentHandler | None:
        rows = await self._store.query(HandlerQuery(handler_id_in=[handler_id]))
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
        start_event: dict[str, Any],
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
            start_event=start_event,
            principal=principal,
            owner_id=self._owner.id,
            lease_expires_at=now + timedelta(seconds=self._config.lease_ttl),
            idempotency_key=key,
            request_hash=request_hash if key is not None else None,
            version=entry.version,
        )

    async def _check_queue_room(self) -> None:
        """Refuse a start this full process would queue beyond ``max_queued_runs``."""
        bound = self._config.max_queued_runs
        if bound is None:
            return
        waiting = sum((await self._store.count_queued()).values())
        if waiting >= bound:
            raise RunQueueFullError(
                f"The server is at capacity and {waiting} run(s) already wait for room; "
                "retry later",
                retry_after=self._config.queue_retry_after,
            )

    async def _write_row(
        self, row: PersistentHandler, replaces: str | None
    ) -> PersistentHandler | None:
        """Write the new row; return the first handler if its idempotency key won meanwhile."""
        try:
            await self._store.create_handler(row, replaces_run_id=replaces)
        except IdempotencyKeyExistsError:
            assert row.idempotency_key is not None
            replay = await self._replay(row.idempotency_key, row.request_hash, row.principal)
            if replay is None:
                raise
            return replay
        except HandlerExistsError as exc:
            taken = _IN_USE if self._scoped else "Handler '{}' is already running"
            raise ConflictError(taken.format(row.handler_id)) from exc
        return None

    async def _create_queued(
        self, row: PersistentHandler, replaces: str | None
    ) -> PersistentHandler:
        """Write the run unowned: the first replica with room (maybe this one) claims it."""
        queued = row.model_copy(update={"owner_id": None, "lease_expires_at": None})
        replay = await self._write_row(queued, replaces)
        if replay is not None:
            return replay
        self._live.queued()
        self._telemetry.queued(queued)
        return queued.model_copy(update={"ctx": None})

    async def _create_and_launch(
        self,
        row: PersistentHandler,
        entry: RegisteredWorkflow,
        event: StartEvent,
        replaces: str | None,
    ) -> PersistentHandler:
        if self._live.is_full():  # decided with the registration, no await in between
            return await self._create_queued(row, replaces)
        # Registered before the row exists so an ownership round never takes
        # the freshly written row for an orphan.
        live = self._live.register(row, entry, next_sequence=0)
        live.telemetry = self._telemetry.accepted(row)  # records the trace context in the row
        try:
            replay = await self._write_row(row, replaces)
        except BaseException:
            self._live.unregister(live)
            raise
        if replay is not None:
            self._live.unregister(live)
            return replay
        if self._stop.draining:
            # Accepted and written, but stopping began meanwhile: the next owner runs it.
            self._live.unregister(live)
            await self._store.release_handlers(self._owner.id, [row.handler_id])
            return row.model_copy(update={"ctx": None, "owner_id": None, "lease_expires_at": None})
        await self._launcher.launch_or_fail(live, row.ctx, event)
        return row.model_copy(update={"ctx": None})
