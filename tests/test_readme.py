"""The README's Python snippets, run as written.

The snippets are executed in order in one namespace, as a reader follows them
(a later snippet uses the workflow class an earlier one defines), from a
temporary directory (their SQLite files land there). Then each app they build
is served over real HTTP and used as the README says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.host_app.app import DEMO_API_KEYS
from tests.support.servers import serving

pytestmark = pytest.mark.timeout(60)

README = Path(__file__).resolve().parent.parent / "README.md"
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def snippets() -> list[str]:
    """The README's Python code blocks, in order."""
    return SNIPPET.findall(README.read_text(encoding="utf-8"))


def run_snippets(directory: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Execute every snippet in one namespace; a snapshot of it after each."""
    monkeypatch.chdir(directory)
    namespace: dict[str, Any] = {"__name__": "readme"}
    states = []
    for number, code in enumerate(snippets(), start=1):
        exec(compile(code, f"README.md snippet {number}", "exec"), namespace)
        states.append(dict(namespace))
    return states


def test_the_readme_has_the_snippets_this_test_knows() -> None:
    found = snippets()
    assert len(found) == 4, "a snippet was added or removed: extend tests/test_readme.py"
    # The keys the host-app snippets use are the example app's demo keys.
    for snippet in (found[1], found[2]):
        assert "alice-key" in snippet
    assert DEMO_API_KEYS["alice-key"] == "alice"


async def test_readme_snippets_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first, host, client, standalone = run_snippets(tmp_path, monkeypatch)

    async with serving(first["app"]) as url, httpx.AsyncClient(base_url=url) as http:
        done = await http.post("/workflows/greet/run", json={"start_event": {"name": "Ada"}})
        assert done.status_code == 200, done.text
        assert done.json()["result"]["value"] == {"result": "Hello, Ada!"}

    async with serving(host["app"]) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health")).json() == {"status": "healthy"}  # no key needed
        assert (await http.get("/wf/health")).status_code == 401
        assert (await http.get("/wf/handlers")).status_code == 401
        alice = {"X-API-Key": "alice-key"}
        started = await http.post("/greetings", params={"name": "Bo"}, headers=alice)
        assert started.status_code == 200, started.text

        await client["stream_a_greeting"](f"{url}/wf")
        assert "StopEvent {'result': 'Hello, Ada!'}" in capsys.readouterr().out

        listed = (await http.get("/wf/handlers", headers=alice)).json()["handlers"]
        assert len(listed) == 2
        others = await http.get("/wf/handlers", headers={"X-API-Key": "bob-key"})
        assert others.json()["handlers"] == []

    server = standalone["server"]
    assert list(server.get_workflows()) == ["greet"]
    async with serving(server.app) as url, httpx.AsyncClient(base_url=url) as http:
        done = await http.post("/workflows/greet/run", json={})
        assert done.json()["result"]["value"] == {"result": "Hello, World!"}
    assert (tmp_path / "handlers.db").exists()
