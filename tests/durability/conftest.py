"""Fixtures of the multi-process suites: real server processes on the suite's PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.tsv"


@pytest.fixture
def make_server(
    postgres_url: str, journal_path: Path, tmp_path: Path
) -> Callable[..., ServerProcess]:
    def make(name: str, **env: str) -> ServerProcess:
        base = {"WF_DATABASE_URL": postgres_url, "WF_JOURNAL": str(journal_path)}
        return ServerProcess(name, {**base, **env}, tmp_path)

    return make
