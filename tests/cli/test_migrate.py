"""``cli._migrate``: ``migrate upgrade``, ``downgrade``, ``current`` and ``check``.

On SQLite, in-process; PostgreSQL's unmigrated database is in ``test_common``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_workflows_asgi.store.migrate import head_revision
from tests.support.cli import invoke

HEAD = head_revision()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fresh.db'}"


def test_upgrade_creates_the_tables_and_check_agrees(url: str) -> None:
    assert invoke("migrate", "check", "--db", url).returncode == 4
    upgraded = invoke("migrate", "upgrade", "--db", url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"sqlite+aiosqlite:///{url[10:]} is now at {HEAD}"
    assert invoke("migrate", "current", "--db", url).stdout.strip() == HEAD
    checked = invoke("migrate", "check", "--db", url)
    assert (checked.returncode, checked.stdout.strip().endswith(f"is at head ({HEAD})")) == (
        0,
        True,
    )


def test_downgrade_to_base_drops_everything(url: str) -> None:
    assert invoke("migrate", "upgrade", "--db", url).returncode == 0
    down = invoke("migrate", "downgrade", "base", "--db", url)
    assert (down.returncode, down.stdout.strip().endswith("is now at base")) == (0, True)
    assert invoke("migrate", "current", "--db", url).stdout.strip() == "(none)"
    refused = invoke("migrate", "check", "--db", url)
    assert refused.returncode == 4
    assert "migrate upgrade" in refused.stderr


def test_upgrade_to_a_revision_then_to_head(url: str) -> None:
    first = "0001"
    assert invoke("migrate", "upgrade", first, "--db", url).stdout.strip().endswith(first)
    assert invoke("migrate", "current", "--db", url).stdout.strip() == first
    assert invoke("migrate", "check", "--db", url).returncode == 4
    assert invoke("migrate", "upgrade", "--db", url).stdout.strip().endswith(HEAD)


def test_bad_input_is_a_usage_error(url: str) -> None:
    bad_url = invoke("migrate", "current", "--db", "mysql://db/app")
    assert (bad_url.returncode, "bad database URL" in bad_url.stderr) == (2, True)
    unknown = invoke("migrate", "upgrade", "0042_later", "--db", url)
    assert (unknown.returncode, "0042_later" in unknown.stderr) == (2, True)
    no_revision = invoke("migrate", "downgrade", "--db", url)
    assert (no_revision.returncode, "Missing argument 'revision'" in no_revision.stderr) == (
        2,
        True,
    )
