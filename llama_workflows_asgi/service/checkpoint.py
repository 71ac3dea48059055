"""A live run's checkpoint: a mirror of its control loop's state, and the context taken of it.

The engine's control loop reports each tick it reduced (``runtime.RunObserver``);
the mirror keeps the loop's state after the latest one, so taking a checkpoint
costs the size of the current state, never a replay of the run's history. It
also keeps the state from before a tick that may fail the run: a failed run is
checkpointed as it was before the failing step's result, so a retry runs that
step again. ``live.py`` owns one mirror per run.
"""

from __future__ import annotations

from typing import Any

from workflows.context.serializers import BaseSerializer
from workflows.context.state_store import DictState, StateStore

from .. import _engine
from .._engine import (
    BrokerState,
    ExternalRunAdapter,
    StepWorkerFailed,
    TickStepResult,
    TickTimeout,
    WorkflowTick,
)
from .._json import one_line
from .runtime import RunLoop


def may_fail_run(tick: WorkflowTick) -> bool:
    """Whether reducing ``tick`` can fail the run: a step raised, or the run timed out.

    A run that fails stops at that tick, so a later tick means it did not.
    """
    if isinstance(tick, TickTimeout):
        return True
    return isinstance(tick, TickStepResult) and any(
        isinstance(result, StepWorkerFailed) for result in tick.result
    )


class StateMirror:
    """The control loop's state as of its latest tick, and the checkpoint taken of it."""

    def __init__(self, serializer: BaseSerializer) -> None:
        self._serializer = serializer
        self._loop: RunLoop | None = None
        # The loop's state after the latest observed tick, the one before a tick
        # that may fail the run, and the one the latest checkpoint was taken of.
        self._seen: BrokerState | None = None
        self._before_failure: BrokerState | None = None
        self._checkpointed: BrokerState | None = None
        self._state_store: StateStore[Any] | None = None

    def attach(self, adapter: ExternalRunAdapter, loop: RunLoop) -> None:
        """Start mirroring the loop of a run the engine has just started."""
        self._loop = loop
        self._seen = _engine.initial_state(adapter)
        self._state_store = adapter.get_state_store(())

    def observe_tick(self, tick: WorkflowTick) -> None:
        """Follow the loop past ``tick``, which it reduced just before reporting it."""
        # The loop's state is the one after ``tick``, and the one seen at the
        # previous tick is the one before.
        self._before_failure = self._seen if may_fail_run(tick) else None
        if self._loop is not None:
            self._seen = self._loop.state or self._seen

    @property
    def starts_empty(self) -> bool:
        """Whether the run's state store is the engine's untyped one, which starts empty."""
        return self._state_store is not None and self._state_store.state_type is DictState

    @property
    def ticked(self) -> bool:
        """Whether the loop reduced a tick since the latest checkpoint."""
        return self._seen is not self._checkpointed

    def checkpoint(self, *, failed: bool) -> str:
        """The run's context as ``Context.to_dict()`` JSON, read from the loop's own state.

        ``failed``: the run has failed, so it keeps the state from before the
        failing step's result (that step still in progress), if a tick failed it.
        """
        assert self._seen is not None
        state = self._checkpointed = self._seen
        if self._before_failure is not None and failed:
            state = self._before_failure
        serialized = state.to_serialized(self._serializer)
        if self._state_store is not None:
            serialized.state = self._state_store.to_dict(self._serializer)
        # The context's own JSON encoder: the same JSON value as ``dumps`` of
        # its ``model_dump(mode="json")`` (its fields hold plain JSON types and
        # the engine's serialized strings; floats round-trip, some spelled
        # without an exponent), in a fifth of the time.
        return one_line(serialized.model_dump_json())
