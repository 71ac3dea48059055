"""What a store gets without writing it: the interface's default implementations.

``AbstractWorkflowStore`` (``base.py``) is what a store must implement; it
inherits these, each made of the abstract methods alone, so a store keeps or
overrides any of them: the classes results are rebuilt as, a liveness that
proves no owner dead, wakeups within this process, the group commit of the run
service's progress over ``save_progress``, and two reads made of simpler ones
(``read_new_events``, ``count_queued``) that a store should answer in one
statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from workflows.events import StopEvent

from ._batch import GroupCommit, Outcome, Poke, Source, no_transaction
from .liveness import Liveness, UnprovenLiveness
from .notifications import Notifications
from .records import HandlerQuery, PersistentHandler, RunProgress, StoredEvent


class _Rows(Protocol):
    """The abstract methods the defaults are made of (documented in ``base.py``)."""

    async def query(self, query: HandlerQuery) -> list[PersistentHandler]: ...

    async def save_progress(self, batch: Sequence[RunProgress]) -> set[str]: ...

    async def read_events(
        self, run_id: str, *, after_sequence: int = -1, limit: int = 1000
    ) -> list[StoredEvent]: ...


class StoreDefaults:
    """The default half of ``AbstractWorkflowStore``: what every store inherits."""

    @property
    def result_classes(self) -> dict[str, type[StopEvent]]:
        """StopEvent subclasses results are rebuilt as, by qualified name.

        The run service adds its workflows' stop classes; a result of a class
        not listed reads back as a plain ``StopEvent`` holding its fields.
        """
        classes: dict[str, type[StopEvent]] | None = self.__dict__.get("_result_classes")
        if classes is None:
            classes = self.__dict__["_result_classes"] = {}
        return classes

    @property
    def liveness(self) -> Liveness:
        """The owners' liveness tokens (see ``store.liveness``).

        The default proves no owner dead: their runs wait for their heartbeats to lapse.
        """
        return _UNPROVEN

    @property
    def notifications(self) -> Notifications:
        """Wakeups after committed writes (see ``store.notifications``).

        The default reaches listeners of this process only; other processes
        learn of a write by polling.
        """
        hub: Notifications | None = self.__dict__.get("_notifications")
        if hub is None:
            hub = self.__dict__["_notifications"] = Notifications()
        return hub

    def progress_feed(self: _Rows, source: Source[RunProgress, bool]) -> Poke:
        """Attach the run service's dirty runs: the store's group commit pulls them.

        Each time the store's writer forms a batch it takes ``source``'s
        progress (one item per run) and reports each item as written (``True``),
        fenced off (``False``) or refused alone (an exception); an outage gives
        the items back (``Source.kept``) and the writer pulls again after a
        backoff. This default writes a batch with one ``save_progress`` call, on
        a writer of its own (``store._batch``).
        """

        async def save_batch(_: None, batch: list[RunProgress]) -> list[Outcome[bool]]:
            lost = await self.save_progress(batch)
            return [item.handler_id not in lost for item in batch]

        writer: GroupCommit[None] | None = self.__dict__.get("_progress_writer")
        if writer is None:
            writer = self.__dict__["_progress_writer"] = GroupCommit(no_transaction)
        return writer.feed(save_batch, source)

    async def close_progress_writer(self) -> None:
        """Stop the writer :meth:`progress_feed` started (a store's ``close`` calls this)."""
        writer: GroupCommit[None] | None = self.__dict__.pop("_progress_writer", None)
        if writer is not None:
            await writer.aclose()

    async def read_new_events(
        self: _Rows, positions: Mapping[str, int], *, limit: int = 1000
    ) -> dict[str, list[StoredEvent]]:
        """Events of several runs, each after its own sequence in ``positions``.

        At most ``limit`` events in all, oldest first per run; a run may get only
        the first of its new events when the limit is reached. Runs without new
        events are left out. Stores override this with one statement.
        """
        found: dict[str, list[StoredEvent]] = {}
        for run_id, after in positions.items():
            if limit <= 0:
                break
            new = await self.read_events(run_id, after_sequence=after, limit=limit)
            if new:
                found[run_id] = new
                limit -= len(new)
        return found

    async def count_queued(self: _Rows) -> dict[str, int]:
        """Running handlers nobody owns that are not idle (waiting for a replica), by workflow.

        Stores should answer in one statement; this default reads the rows.
        """
        counts: dict[str, int] = {}
        for row in await self.query(HandlerQuery(status_in=["running"], load_ctx=False)):
            if row.owner_id is None and row.idle_since is None:
                counts[row.workflow_name] = counts.get(row.workflow_name, 0) + 1
        return counts


_UNPROVEN = UnprovenLiveness()
