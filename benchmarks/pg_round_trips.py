"""Round trips the store makes to PostgreSQL, counted at asyncpg's API, inside a batch or not.

Every asyncpg call that waits for the server (a query, a prepare, an
executemany, a transaction's BEGIN, COMMIT or ROLLBACK) counts as one round
trip, named after the call; ``;`` is the pool's pre-ping. Calls made while the
store's group commit runs a batch are counted apart, with the batches.
"""

from __future__ import annotations

import contextvars
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from asyncpg.prepared_stmt import PreparedStatement

from llama_workflows_asgi.store import AbstractWorkflowStore, SqlAlchemyWorkflowStore

_IN_BATCH: contextvars.ContextVar[bool] = contextvars.ContextVar("in_batch", default=False)
_CALLS = (
    (asyncpg.Connection, ("prepare", "fetch", "fetchrow", "fetchval", "execute", "executemany")),
    (PreparedStatement, ("fetch", "fetchrow", "fetchval")),
)


class RoundTrips:
    """Counts asyncpg's round trips by call (and by first word of the query)."""

    def __init__(self) -> None:
        self.batch: Counter[str] = Counter()
        self.other: Counter[str] = Counter()
        self.batches = 0
        self._undo: list[Callable[[], None]] = []

    def watch(self, store: AbstractWorkflowStore) -> None:
        """Count every round trip of the process, and the batches of ``store``'s writer."""
        if not isinstance(store, SqlAlchemyWorkflowStore) or store.write_engine.dialect.name != (
            "postgresql"
        ):
            return
        for owner, names in _CALLS:
            for name in names:
                self._patch(owner, name)
        writer = store._writer
        assert writer is not None, "start the store first"
        transact = writer._transact

        async def counted(body: Any) -> None:
            self.batches += 1
            token = _IN_BATCH.set(True)
            try:
                await transact(body)
            finally:
                _IN_BATCH.reset(token)

        writer._transact = counted

    def reset(self) -> None:
        """Forget what was counted so far (after a warm-up)."""
        self.batch.clear()
        self.other.clear()
        self.batches = 0

    def close(self) -> None:
        """Restore asyncpg's methods."""
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def _patch(self, owner: type, name: str) -> None:
        original: Callable[..., Awaitable[Any]] = getattr(owner, name)

        @functools.wraps(original)
        async def call(this: Any, *args: Any, **kwargs: Any) -> Any:
            query = this.get_query() if owner is PreparedStatement else args[0]
            label = (query.split(None, 1) or [""])[0].upper().rstrip(";") or ";"
            if name == "prepare":
                label = "PREPARE " + label
            (self.batch if _IN_BATCH.get() else self.other)[label] += 1
            return await original(this, *args, **kwargs)

        setattr(owner, name, call)
        self._undo.append(lambda: setattr(owner, name, original))

    def report(self, runs: int) -> str:
        """One line per place: round trips per batch (by call) and per run."""
        per_batch = sum(self.batch.values()) / max(self.batches, 1)
        kinds = {k: round(v / max(self.batches, 1), 2) for k, v in self.batch.most_common()}
        other = {k: round(v / runs, 3) for k, v in self.other.most_common()}
        return (
            f"batches {self.batches} ({self.batches / runs:.3f}/run), round trips per batch "
            f"{per_batch:.2f} {kinds}\nround trips outside batches per run "
            f"{sum(self.other.values()) / runs:.3f} {other}"
        )
