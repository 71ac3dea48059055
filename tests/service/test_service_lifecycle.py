"""``service.lifecycle``: the order of a start and a stop, the liveness token, admission.

(``test_lifecycle.py`` is the end-to-end suite of how runs end; this module
tests the ``Lifecycle`` room itself.) The liveness token is checked from
outside, as another process sees it: a second store object on the same SQLite
file probes it.
"""

from __future__ import annotations

import pytest

from llama_workflows_asgi import MemoryWorkflowStore, StoreUnavailableError
from llama_workflows_asgi.registry import WorkflowRegistry
from llama_workflows_asgi.service.lifecycle import Lifecycle
from llama_workflows_asgi.service.ownership import Owner
from llama_workflows_asgi.service.rooms import Basis, build_rooms
from llama_workflows_asgi.service.runtime import DurableRuntime
from llama_workflows_asgi.store import AbstractWorkflowStore
from llama_workflows_asgi.telemetry import Telemetry
from tests.service.conftest import FAST, sqlite_store
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(30)


def lifecycle_on(store: AbstractWorkflowStore) -> tuple[Lifecycle, Owner]:
    owner, runtime = Owner.for_this_process(), DurableRuntime()
    basis = Basis(store, owner, FAST, WorkflowRegistry(), runtime, Telemetry(), scoped=False)
    return Lifecycle(store, owner, FAST, runtime, build_rooms(basis)), owner


async def test_a_started_service_holds_its_token_and_a_stopped_one_gives_it_up(
    sqlite_url: str,
) -> None:
    lifecycle, owner = lifecycle_on(sqlite_store(sqlite_url))
    other = sqlite_store(sqlite_url)  # another process's view of the same database
    await other.start()
    try:
        await lifecycle.start()
        assert lifecycle.running
        assert await other.liveness.probe([owner.id]) == set()  # alive
        assert owner.id in await other.list_owners()  # its heartbeat row is written
        await lifecycle.stop()
        assert not lifecycle.running
        assert await other.liveness.probe([owner.id]) == {owner.id}  # gone: runs adoptable
        assert owner.id not in await other.list_owners()
    finally:
        await other.close()


async def test_work_is_admitted_only_between_start_and_the_stop() -> None:
    lifecycle, _ = lifecycle_on(MemoryWorkflowStore())
    with pytest.raises(StoreUnavailableError, match="not running"):
        lifecycle.admit()
    assert await lifecycle.problem() == "The workflow service is not running"
    await lifecycle.start()
    lifecycle.admit()
    assert await lifecycle.problem() is None
    lifecycle.begin_stop()
    with pytest.raises(StoreUnavailableError, match="shutting down"):
        lifecycle.admit()
    assert await lifecycle.problem() == "The workflow service is stopping"
    await eventually(lambda: lifecycle.drained, "the release is done")
    await lifecycle.stop()
    with pytest.raises(StoreUnavailableError, match="not running"):
        lifecycle.admit()


async def test_a_restart_admits_work_again() -> None:
    lifecycle, _ = lifecycle_on(MemoryWorkflowStore())
    await lifecycle.start()
    await lifecycle.stop()
    await lifecycle.start()
    assert not lifecycle.draining
    assert not lifecycle.drained
    lifecycle.admit()
    await lifecycle.stop()


async def test_a_liveness_change_of_a_stopped_service_changes_nothing() -> None:
    lifecycle, _ = lifecycle_on(MemoryWorkflowStore())
    lifecycle.on_liveness(False)
    lifecycle.on_liveness(True)
    assert not lifecycle.running
    assert not lifecycle.draining
