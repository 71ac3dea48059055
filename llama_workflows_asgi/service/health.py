"""What keeps a started service from working: the store, the writer, the ownership rounds."""

from __future__ import annotations

from .. import codec
from ..errors import StoreUnavailableError
from ..store.base import AbstractWorkflowStore
from .config import ServiceConfig
from .supervisor import Supervisor
from .writer import ProgressWriter


async def background_problem(
    store: AbstractWorkflowStore,
    config: ServiceConfig,
    writer: ProgressWriter,
    supervisor: Supervisor,
) -> str | None:
    """Why a running service is unhealthy, or ``None``.

    Unhealthy: the store does not answer, the liveness token is lost, progress
    has waited unwritten longer than ``max_unwritten_age``, or no ownership
    round has completed for half of ``lease_ttl`` (the heartbeat may lapse and
    runs move elsewhere).
    """
    try:
        await store.ping()
    except StoreUnavailableError as exc:
        return f"The store is unreachable: {exc}"
    if not store.liveness.held:
        return "The server lost its database session and cannot own runs right now"
    waited = writer.stalled_for()
    if waited > config.max_unwritten_age:
        return f"Progress of {writer.unwritten_runs} run(s) unwritten for {waited:.1f}s" + (
            _because(writer.last_error)
        )
    silent = supervisor.silent_for()
    if silent > config.lease_ttl / 2:
        return f"No ownership round completed for {silent:.1f}s" + _because(supervisor.last_error)
    return None


def _because(error: BaseException | None) -> str:
    return "" if error is None else f": {codec.readable_error(error)}"
