"""``runs``: list, show, cancel, retry and prune handlers, straight in the database.

The commands parse their options and print; what they ask of the store is ``_queries.py``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from ..api.params import decode_cursor, encode_cursor
from ..errors import BadRequestError
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
)
from ..store.state import STATUSES
from ._common import Db, Json, open_store, out, parse_duration, print_json, run
from ._queries import cancel, find_handler, last_events, page

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
            return await page(store, query, after, older, newer, limit)

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
            handler = await find_handler(store, handler_id)
            return handler, await last_events(store, handler, events)

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
            return await cancel(store, handler_id)

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
