"""``runs``: list, show, cancel, retry and prune handlers, straight in the database."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import typer
from rich.table import Table
from workflows.events import WorkflowCancelledEvent

from .. import codec
from ..api.params import decode_cursor, encode_cursor
from ..errors import BadRequestError, ConflictError, HandlerNotFoundError
from ..service.config import DEFAULT_PRUNE_PAUSE
from ..service.retry import reopen_failed
from ..store.base import (
    DEFAULT_PRUNE_BATCH,
    FINISHED_STATUSES,
    FinishedStatus,
    HandlerCursor,
    HandlerQuery,
    PersistentHandler,
    Status,
    StoredEvent,
    prune_cutoff,
    utcnow,
)
from ..store.sqlalchemy import SqlAlchemyWorkflowStore
from ..store.state import STATUSES
from ._common import Db, Json, open_store, out, parse_duration, print_json, run

runs = typer.Typer(help="Look at and act on workflow runs (handlers).", no_args_is_help=True)

_STATUS_STYLE = {"running": "cyan", "completed": "green", "failed": "red", "cancelled": "yellow"}


def handler_dict(handler: PersistentHandler) -> dict[str, Any]:
    """A handler for ``--json`` output (without its checkpoint and request fingerprint)."""
    return handler.model_dump(mode="json", exclude={"ctx", "request_hash"})


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = text.splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


# -- list ------------------------------------------------------------------------


@runs.command("list")
def list_runs(
    db: Db = None,
    status: Annotated[
        list[str] | None, typer.Option("--status", "-s", help="running, completed, failed...")
    ] = None,
    workflow: Annotated[list[str] | None, typer.Option("--workflow", "-w")] = None,
    older_than: Annotated[
        str | None, typer.Option(help="Only runs started longer ago than this (30d, 12h).")
    ] = None,
    newer_than: Annotated[
        str | None, typer.Option(help="Only runs started within this (1d, 90m).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Runs per page.")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Continue a listing (its next cursor).")
    ] = None,
    order: Annotated[str, typer.Option(help="desc (newest first) or asc.")] = "desc",
    as_json: Json = False,
) -> None:
    """List runs, newest first, a page at a time (filters combine)."""
    if order not in ("asc", "desc"):
        raise typer.BadParameter("order must be asc or desc", param_hint="--order")
    statuses = _statuses(status)
    older = None if older_than is None else prune_cutoff(parse_duration(older_than))
    newer = None if newer_than is None else prune_cutoff(parse_duration(newer_than))
    after = None if cursor is None else _cursor(cursor)
    query = HandlerQuery(
        status_in=statuses,
        workflow_name_in=workflow or None,
        descending=order == "desc",
        load_ctx=False,
    )

    async def fetch() -> tuple[list[PersistentHandler], HandlerCursor | None]:
        async with open_store(db) as store:
            return await _page(store, query, after, older, newer, limit)

    rows, next_cursor = run(fetch)
    token = None if next_cursor is None else encode_cursor(next_cursor)
    if as_json:
        print_json({"handlers": [handler_dict(h) for h in rows], "next_cursor": token})
        return
    table = Table("handler", "workflow", "status", "started", "finished", "error")
    for h in rows:
        style = _STATUS_STYLE.get(h.status, "")
        table.add_row(
            h.handler_id,
            h.workflow_name,
            f"[{style}]{h.status}[/]",
            _when(h.started_at),
            _when(h.completed_at),
            _short(h.error, 40),
        )
    out.print(table)
    if token is not None:
        out.print(f"more: --cursor {token}", highlight=False)


def _cursor(token: str) -> HandlerCursor:
    try:
        return decode_cursor(token)
    except BadRequestError as error:
        raise typer.BadParameter(str(error), param_hint="--cursor") from None


def _statuses(values: list[str] | None) -> list[Status] | None:
    for value in values or []:
        if value not in STATUSES:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(STATUSES)}")
    return [v for v in STATUSES if v in (values or [])] or None


async def _page(
    store: SqlAlchemyWorkflowStore,
    query: HandlerQuery,
    after: HandlerCursor | None,
    older: datetime | None,
    newer: datetime | None,
    limit: int,
) -> tuple[list[PersistentHandler], HandlerCursor | None]:
    """One page within the age bounds: keyset from one bound, stop at the other.

    Newest first starts below ``older`` and stops at ``newer``; oldest first
    the other way round. (``(t, "")`` sorts before every handler started at ``t``.)
    """
    start, stop = (older, newer) if query.descending else (newer, older)
    if after is None and start is not None:
        after = HandlerCursor(start, "")
    rows = await store.query(query.model_copy(update={"after": after, "limit": limit + 1}))
    if stop is not None:
        rows = [h for h in rows if (h.started_at >= stop) == query.descending]
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], HandlerCursor(last.started_at, last.handler_id)


# -- show ------------------------------------------------------------------------


@runs.command("show")
def show_run(
    handler_id: str,
    db: Db = None,
    events: Annotated[int, typer.Option(min=0, max=1000, help="How many last events.")] = 10,
    as_json: Json = False,
) -> None:
    """Show a run: its handler, its last events and its error."""

    async def fetch() -> tuple[PersistentHandler, list[StoredEvent]]:
        async with open_store(db) as store:
            handler = await _handler(store, handler_id)
            return handler, await _last_events(store, handler, events)

    handler, log = run(fetch)
    if as_json:
        body = handler_dict(handler) | {"events": [_event_dict(e) for e in log]}
        print_json(body)
        return
    table = Table(show_header=False, box=None)
    for key, value in handler_dict(handler).items():
        if key not in ("error", "start_event") and value is not None:
            table.add_row(f"[bold]{key}[/]", str(value))
    out.print(table)
    if log:
        events_table = Table("seq", "time", "type", "payload", title=f"last {len(log)} events")
        for e in log:
            payload = _short(json.dumps(json.loads(e.payload).get("value")), 70)
            events_table.add_row(str(e.sequence), _when(e.created_at), e.event_type, payload)
        out.print(events_table)
    if handler.error:
        out.print("[bold red]error[/]")
        out.print(handler.error, markup=False, highlight=False)


async def _handler(store: SqlAlchemyWorkflowStore, handler_id: str) -> PersistentHandler:
    rows = await store.query(HandlerQuery(handler_id_in=[handler_id], load_ctx=False))
    if not rows:
        raise HandlerNotFoundError(handler_id)
    return rows[0]


async def _last_events(
    store: SqlAlchemyWorkflowStore, handler: PersistentHandler, count: int
) -> list[StoredEvent]:
    if handler.run_id is None or count == 0:
        return []
    last = (await store.last_sequences([handler.run_id])).get(handler.run_id, -1)
    return await store.read_events(handler.run_id, after_sequence=last - count, limit=count)


def _event_dict(event: StoredEvent) -> dict[str, Any]:
    return {
        "sequence": event.sequence,
        "type": event.event_type,
        "created_at": event.created_at.isoformat(),
        "internal": event.internal,
        "terminal": event.terminal,
        "event": json.loads(event.payload),
    }


# -- cancel and retry ------------------------------------------------------------


@runs.command("cancel")
def cancel_run(handler_id: str, db: Db = None, as_json: Json = False) -> None:
    """Cancel a running run; the process executing it stops it at its next round (~1 s)."""

    async def act() -> PersistentHandler:
        async with open_store(db) as store:
            handler = await _handler(store, handler_id)
            encoded = codec.encode(WorkflowCancelledEvent())
            event = StoredEvent(
                -1, encoded.payload, encoded.event_type, encoded.internal, encoded.terminal
            )
            done = not handler.is_terminal and await store.finalize_handler(
                handler_id, status="cancelled", error=None, event=event, at=utcnow()
            )
            if not done:
                latest = await _handler(store, handler_id)
                raise ConflictError(f"Handler '{handler_id}' is already {latest.status}")
            return await _handler(store, handler_id)

    _report(run(act), "cancelled", as_json)


@runs.command("retry")
def retry_run(handler_id: str, db: Db = None, as_json: Json = False) -> None:
    """Run a failed run again from its last checkpoint (a server claims it within ~1 s)."""

    async def act() -> PersistentHandler:
        async with open_store(db) as store:
            return await reopen_failed(store, handler_id)

    _report(run(act), "back to running", as_json)


def _report(handler: PersistentHandler, what: str, as_json: bool) -> None:
    if as_json:
        print_json(handler_dict(handler))
    else:
        out.print(f"{handler.handler_id} ({handler.workflow_name}): {what}", highlight=False)


# -- prune -----------------------------------------------------------------------


@runs.command("prune")
def prune_runs(
    older_than: Annotated[str, typer.Option(help="Age of the finished runs to delete (30d).")],
    db: Db = None,
    status: Annotated[
        list[str] | None,
        typer.Option("--status", "-s", help="completed, failed or cancelled (default: all three)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count them.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=10000)] = DEFAULT_PRUNE_BATCH,
    pause: Annotated[float, typer.Option(min=0, help="Seconds between two batches.")] = (
        DEFAULT_PRUNE_PAUSE
    ),
    as_json: Json = False,
) -> None:
    """Delete finished runs that finished longer ago than --older-than, with their events."""
    age = parse_duration(older_than)
    chosen = _finished(status)

    async def act() -> int:
        async with open_store(db) as store:
            return await store.prune(
                older_than=age,
                statuses=chosen,
                batch_size=batch_size,
                dry_run=dry_run,
                pause=pause,
            )

    count = run(act)
    verb: Literal["would delete", "deleted"] = "would delete" if dry_run else "deleted"
    if as_json:
        print_json({"dry_run": dry_run, "count": count, "statuses": list(chosen)})
    else:
        out.print(f"{verb} {count} runs ({', '.join(chosen)}) older than {older_than}")


def _finished(values: list[str] | None) -> tuple[FinishedStatus, ...]:
    for value in values or []:
        if value not in FINISHED_STATUSES:
            raise typer.BadParameter(
                f"{value!r} is not a finished status (completed, failed, cancelled)",
                param_hint="--status",
            )
    return tuple(s for s in FINISHED_STATUSES if not values or s in values)
