"""Databases for the command line's tests: SQLite and PostgreSQL, seeded or empty."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.cli import seed


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database URL (the SQLite one as a user would spell it)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def seeded(db: str) -> str:
    """``db`` holding the handlers of ``SEED``, each with three events."""
    asyncio.run(seed(db))
    return db


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    """A SQLite database URL, seeded with ``SEED``: for checks that need no second database."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    asyncio.run(seed(url))
    return url
