"""Shared fixtures. PostgreSQL machinery lives in ``tests/support/postgres.py``."""

from __future__ import annotations

import os

pytest_plugins = ["tests.support.postgres", "tests.support.stores"]

# Server processes, the command line and Alembic run in subprocesses that import
# the package afresh; with bytecode writing off each of them compiles it again.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
