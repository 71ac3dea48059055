"""``cli._app``: the Typer application and its three commands."""

from __future__ import annotations

import re

import pytest

from llama_workflows_asgi.cli._app import app
from tests.support.cli import invoke


def commands(help_text: str) -> set[str]:
    """The command names a Rich help screen lists in its Commands panel."""
    panel = help_text.split("Commands", 1)[1]
    return set(re.findall(r"│ (\w+) ", panel))


def test_the_application_is_named_and_has_no_completion_options() -> None:
    assert app.info.name == "llama-workflows-asgi"
    shown = invoke("--help")
    assert shown.returncode == 0
    assert "Serve durable LlamaIndex workflows and look after their runs." in shown.stdout
    assert "--install-completion" not in shown.stdout
    assert commands(shown.stdout) == {"serve", "migrate", "runs"}


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("runs", {"list", "show", "cancel", "retry", "prune"}),
        ("migrate", {"upgrade", "downgrade", "current", "check"}),
    ],
)
def test_each_group_lists_its_commands(group: str, expected: set[str]) -> None:
    shown = invoke(group, "--help")
    assert shown.returncode == 0
    assert commands(shown.stdout) == expected


@pytest.mark.parametrize("args", [(), ("runs",), ("migrate",)])
def test_no_command_shows_the_help_as_a_usage_error(args: tuple[str, ...]) -> None:
    shown = invoke(*args)
    assert shown.returncode == 2
    assert "Usage: llama-workflows-asgi" in shown.stdout


def test_an_unknown_command_is_a_usage_error() -> None:
    refused = invoke("frobnicate")
    assert refused.returncode == 2
    assert "No such command 'frobnicate'" in refused.stderr
