"""Readable error text: an exception's message as a person should read it.

Every reason the package writes into a row or answers with (a run's error, a
400's ``detail``) goes through :func:`readable_error`: no module paths, URLs,
SQL or addresses, its root cause named, one line. Pydantic errors get a one-line
summary (:func:`describe_validation_error`).
"""

from __future__ import annotations

import re

from pydantic import ValidationError

_CLASS_REPR = re.compile(r"<class '(?:[\w]+\.)*(\w+)'>")
_DOTTED_NAME = re.compile(r"\b(?:[a-z_]\w*\.)+([A-Z]\w*)\b")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")
_NOT_ALLOWED = re.compile(r"Class ([\w.]+) is not in the serializer's allowed types")
_URL = re.compile(r"\S*https?://\S+")


def readable_error(exc: BaseException) -> str:
    """``exc``'s message for a person: no module paths, URLs or SQL, its root cause named.

    Serializers wrap the real reason ("Maximum serialization depth exceeded")
    in a generic message; the innermost cause is appended when it differs. A
    type a checkpoint may not restore is named with what to do about it.
    """
    root = exc
    for _ in range(16):  # a chain, not a cycle
        inner = root.__cause__ or root.__context__
        if inner is None:
            break
        root = inner
    for error in (exc, root):
        missing = _NOT_ALLOWED.search(str(error))
        if missing:
            name = missing.group(1).rsplit(".", 1)[-1]
            return (
                f"the checkpoint holds a {name}, a type this workflow does not declare; "
                "register it with add_workflow(..., additional_events=[...])"
            )
    if isinstance(exc, ValidationError):
        return describe_validation_error(exc)
    text = _clean(_message(exc))
    cause = _clean(_message(root)) if root is not exc else ""
    if cause and cause not in text:
        text = f"{text} ({cause})" if text else cause
    return (text or type(exc).__name__)[:1000]


def _message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # a driver error wrapped by SQLAlchemy
    text = str(orig if orig is not None else exc)
    return text.split("\n[SQL:", 1)[0].split("\n(Background on", 1)[0]


def _clean(text: str) -> str:
    text = _URL.sub("", text)
    text = _CLASS_REPR.sub(r"\1", text)
    text = _DOTTED_NAME.sub(r"\1", text)
    text = _ADDRESS.sub(">", text)
    # NUL and unpaired surrogates: no database column stores them.
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return " ".join(text.split()).strip(" :")


def describe_validation_error(exc: ValidationError) -> str:
    """A one-line, readable summary of a pydantic validation error."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "value"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
