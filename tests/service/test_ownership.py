"""``service.ownership``: owner ids, which carry a probeable liveness token."""

from __future__ import annotations

import os
import re
import socket

from llama_workflows_asgi.service.ownership import Owner
from llama_workflows_asgi.store.liveness import owner_key, proves_liveness


def test_owner_id_is_host_pid_and_a_marked_token() -> None:
    me = Owner.for_this_process()
    host, pid, token = me.id.rsplit(":", 2)
    assert host == socket.gethostname() == me.host
    assert int(pid) == os.getpid() == me.pid
    assert re.fullmatch(r"L[0-9a-f]{12}", token)
    assert me.id == f"{me.host}:{me.pid}:{me.token}"
    assert proves_liveness(me.id)


def test_every_start_gets_a_new_token_and_lock_key() -> None:
    owners = [Owner.for_this_process().id for _ in range(20)]
    assert len(set(owners)) == 20
    assert len({owner_key(o) for o in owners}) == 20
    assert all(-(2**63) <= owner_key(o) < 2**63 for o in owners)


def test_ids_without_a_token_are_never_probed() -> None:
    # Written by a process holding no token (or malformed): only leases free them.
    for owner_id in ("host:12:abcdef012345", "host:1:000000000000", "", "odd"):
        assert not proves_liveness(owner_id)
