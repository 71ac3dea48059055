"""Tests mirror modules: every module of the package has a test module at its twin path.

The twin of ``llama_workflows_asgi/<pkg>/<mod>.py`` is ``tests/<pkg>/test_<mod>.py``
(a leading underscore dropped: ``cli/_runs.py`` -> ``tests/cli/test_runs.py``); the
twin of a top-level ``llama_workflows_asgi/<mod>.py`` is ``tests/unit/test_<mod>.py``
(``__main__.py`` -> ``tests/unit/test_main.py``). A package ``__init__.py`` that
defines a function or a class has ``tests/<pkg>/test_<pkg>.py``; one that only
re-exports needs none. End-to-end suites live beside the twins.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.processes import ROOT

PACKAGE = ROOT / "llama_workflows_asgi"
TESTS = ROOT / "tests"
SKIPPED = {"migrations"}
"""Not modules of the package's own code: the Alembic environment ships inside it."""


def twin(module: Path) -> Path | None:
    """The test module that must test ``module`` (``None`` for a pure re-export)."""
    parts = module.relative_to(PACKAGE).parts
    stem = module.stem.strip("_")
    if len(parts) == 1:
        return None if module.name == "__init__.py" else TESTS / "unit" / f"test_{stem}.py"
    folder = TESTS.joinpath(*parts[:-1])
    if module.name == "__init__.py":
        return folder / f"test_{parts[-2]}.py" if defines_anything(module) else None
    return folder / f"test_{stem}.py"


def defines_anything(module: Path) -> bool:
    """Whether a module defines a function or a class at its top level."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return any(isinstance(node, kinds) for node in tree.body)


def package_modules() -> list[Path]:
    """Every module of the package, in path order."""
    modules = PACKAGE.rglob("*.py")
    return sorted(p for p in modules if not SKIPPED & set(p.relative_to(PACKAGE).parts))


def missing_twins() -> list[str]:
    """``module -> twin`` for every module whose twin does not exist."""
    missing = []
    for module in package_modules():
        expected = twin(module)
        if expected is not None and not expected.is_file():
            missing.append(f"{module.relative_to(ROOT)} -> {expected.relative_to(ROOT)}")
    return missing


def test_every_module_has_its_twin_test_module() -> None:
    missing = missing_twins()
    if missing:
        pytest.fail("modules without their twin test module:\n" + "\n".join(missing), False)


def test_the_twin_rule() -> None:
    assert twin(PACKAGE / "cli" / "_runs.py") == TESTS / "cli" / "test_runs.py"
    assert twin(PACKAGE / "_http.py") == TESTS / "unit" / "test_http.py"
    assert twin(PACKAGE / "__main__.py") == TESTS / "unit" / "test_main.py"
    assert twin(PACKAGE / "api" / "events.py") == TESTS / "api" / "test_events.py"
    assert twin(PACKAGE / "dashboard" / "__init__.py") == TESTS / "dashboard" / "test_dashboard.py"
    # Pure re-exports: the package's own ``__init__`` and the store's.
    assert twin(PACKAGE / "__init__.py") is None
    assert twin(PACKAGE / "store" / "__init__.py") is None
    assert len(package_modules()) > 50  # the walk found the package
