"""Shared fixtures. PostgreSQL machinery lives in ``tests/support/postgres.py``."""

from __future__ import annotations

pytest_plugins = ["tests.support.postgres", "tests.support.stores"]
