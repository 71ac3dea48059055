"""Shared fixtures. PostgreSQL machinery lives in ``tests/support/postgres.py``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Bytecode caches even when the environment forbids them (PYTHONDONTWRITEBYTECODE),
# kept out of the sources in .pytest_cache: without them every one of the suite's
# ~150 interpreters (servers, examples, CLI runs) compiles the package again and
# every pytest worker rewrites every test module again. Set here, before the xdist
# workers start, so that they and every subprocess inherit it.
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
    _BYTECODE = str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "bytecode")
    os.environ["PYTHONPYCACHEPREFIX"] = _BYTECODE
    sys.pycache_prefix, sys.dont_write_bytecode = _BYTECODE, False

pytest_plugins = ["tests.support.postgres", "tests.support.stores"]

# The longest files, longest first (as measured): xdist hands out whole files
# (``--dist loadfile``) in collection order, so the short ones fill the gaps at
# the end instead of one long file running alone. A file missing here (renamed,
# new) only loses its place in the queue.
SLOWEST_FIRST = (
    "tests/durability/test_crash_resume.py",
    "tests/durability/test_unresumable.py",
    "tests/durability/test_multi_process.py",
    "tests/test_examples.py",
    "tests/durability/test_capacity.py",
    "tests/durability/test_pid_namespaces.py",
    "tests/api/test_fuzz.py",
    "tests/durability/",
    "tests/dashboard/",
    "tests/cli/",
)


def _queue_place(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    matches = [i for i, prefix in enumerate(SLOWEST_FIRST) if path.startswith(prefix)]
    return matches[0] if matches else len(SLOWEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the slowest files first; the order within a file and of the rest is kept."""
    items.sort(key=_queue_place)
