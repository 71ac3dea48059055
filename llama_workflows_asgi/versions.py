"""Workflow versions: what a run records so that only a replica serving it resumes it.

A version is given with ``add_workflow(..., version="2024-06")`` or, by default,
is a fingerprint of the workflow's shape: its step names and the qualified
names of the events each step accepts and emits. The fingerprint is stable
across processes and hash seeds; it changes when a step is added, removed,
renamed or retyped, not when only a step's body changes or events are declared
with ``additional_events`` (give an explicit version for such a change when
checkpoints of the old code must not be resumed by the new).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from typing import Any

from workflows import Workflow

from .codec import qualified_name

_VERSION = re.compile(r"[A-Za-z0-9._:+@-]{1,64}")

FINGERPRINT_PREFIX = "fp-"
"""Default versions start with this."""


def check_version(version: str) -> str:
    """``version`` if it is 1 to 64 letters, digits and ``._:+@-``; else ``ValueError``."""
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValueError(
            f"Invalid workflow version {version!r}: use 1 to 64 letters, digits and '._:+@-'"
        )
    return version


def fingerprint(workflow: Workflow) -> str:
    """A version naming ``workflow``'s steps and event types (``fp-`` and 16 hex digits)."""
    shape = {name: _step_shape(step) for name, step in workflow._get_steps().items()}
    text = json.dumps(shape, sort_keys=True, separators=(",", ":"))
    return FINGERPRINT_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:16]


def _step_shape(step: Any) -> dict[str, list[str]]:
    config = step._step_config  # the engine's own record of a step's signature
    return {
        "accepts": sorted(_names(config.accepted_events)),
        "emits": sorted(_names(config.return_types)),
    }


def _names(classes: Iterable[Any]) -> list[str]:
    return [qualified_name(cls) if isinstance(cls, type) else repr(cls) for cls in classes]
