"""The SQL store's kinds of write, one lane each on its group commit, and its progress feed."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from ..errors import StoreUnavailableError
from . import _create as creating
from . import _ownership as ownership
from . import _progress as progress
from . import _writes as writes
from ._batch import GroupCommit, Result, Source
from .base import RunProgress
from .notifications import Notifications


class Lanes:
    """The store's kinds of write, one lane each on its group commit."""

    def __init__(self, writer: GroupCommit[AsyncConnection]) -> None:
        self.upsert = writer.lane(writes.upsert_handler)
        self.delete = writer.lane(writes.delete_handlers)
        self.create = writer.lane(creating.create_handler)
        self.progress = writer.lane(progress.save_progress)
        self.finalize = writer.lane(writes.finalize_handler)
        self.reopen = writer.lane(writes.reopen_handler)
        self.enqueue = writer.lane(writes.enqueue_event)
        self.heartbeat = writer.lane(ownership.heartbeat)
        self.claim = writer.lane(ownership.claim_handlers)
        self.release = writer.lane(ownership.release_handlers)


class Publishing:
    """A progress source whose written events are announced to this process's listeners."""

    def __init__(self, source: Source[RunProgress, bool], hub: Notifications) -> None:
        self._source, self._hub = source, hub

    def take(self) -> Sequence[RunProgress]:
        return self._source.take()

    def settled(self, results: Sequence[tuple[RunProgress, Result[bool]]]) -> None:
        written = {item.run_id for item, ok in results if ok is True and item.events}
        self._source.settled(results)
        self._hub.published("events", written)

    def kept(self, payloads: Sequence[RunProgress], error: StoreUnavailableError) -> None:
        self._source.kept(payloads, error)
