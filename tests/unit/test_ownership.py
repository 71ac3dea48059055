"""``service.ownership``: owner ids and telling dead owners on this host."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from llama_workflows_asgi.service.ownership import Owner


@pytest.fixture(scope="module")
def gone_pid() -> int:
    """The pid of a real process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    return child.pid


@pytest.fixture
def me() -> Owner:
    return Owner.for_this_process()


def test_owner_id_is_host_pid_token(me: Owner) -> None:
    host, pid, token = me.id.rsplit(":", 2)
    assert host == socket.gethostname() == me.host
    assert int(pid) == os.getpid() == me.pid
    assert re.fullmatch(r"[0-9a-f]{12}", token)
    assert me.id == f"{me.host}:{me.pid}:{me.token}"


def test_every_start_gets_a_new_token() -> None:
    assert len({Owner.for_this_process().id for _ in range(20)}) == 20


def test_same_host_dead_pid_is_dead(me: Owner, gone_pid: int) -> None:
    dead = f"{me.host}:{gone_pid}:abcdef012345"
    assert me.dead_among([dead]) == [dead]


def test_own_pid_under_another_token_is_dead(me: Owner) -> None:
    # As after a container restart: our pid, but an earlier start of it.
    previous = f"{me.host}:{me.pid}:000000000000"
    assert me.dead_among([previous]) == [previous]


def test_alive_owners_are_kept(me: Owner, gone_pid: int) -> None:
    parent = f"{me.host}:{os.getppid()}:abcdef012345"
    other_host = f"not-{me.host}:{gone_pid}:abcdef012345"
    malformed = [f"{me.host}:notapid:abc", f"{me.host}", "", "::"]
    assert me.dead_among([me.id, parent, other_host, *malformed]) == []


def test_pid_one_is_alive_even_when_signalling_it_is_refused(me: Owner) -> None:
    # pid 1 always exists; unprivileged, probing it fails with EPERM, which means alive.
    assert me.dead_among([f"{me.host}:1:abcdef012345"]) == []


def test_dead_among_keeps_input_order_and_filters(me: Owner, gone_pid: int) -> None:
    dead_a = f"{me.host}:{gone_pid}:aaaaaaaaaaaa"
    dead_b = f"{me.host}:{me.pid}:bbbbbbbbbbbb"
    alive = f"{me.host}:{os.getpid()}:{me.token}"
    assert me.dead_among(iter([dead_b, alive, dead_a])) == [dead_b, dead_a]
