"""The wheel ships every package of the source tree (setuptools lists them by hand)."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the test extra installs tomli there
    import tomli as tomllib

from tests.support.processes import ROOT


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    source = ROOT / "llama_workflows_asgi"
    found = {
        ".".join(("llama_workflows_asgi", *init.parent.relative_to(source).parts))
        for init in source.rglob("__init__.py")
    }
    migrations = {
        ".".join(
            ("llama_workflows_asgi.migrations", *init.parent.relative_to(ROOT / "migrations").parts)
        )
        for init in (ROOT / "migrations").rglob("__init__.py")
    }
    assert found <= listed, f"missing from [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed <= found | migrations | {"llama_workflows_asgi.migrations"}
