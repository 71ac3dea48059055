"""Compact JSON in and out: the one place the package turns values into JSON text and back.

``dumps`` writes the wire format (compact, one line, non-ASCII kept), used for
responses, stored envelopes, checkpoints and JSON columns alike; ``loads``
parses untrusted input strictly; ``load_object`` reads back a JSON object the
package stored itself; ``canonical`` is the sorted, ASCII-only form hashed to
compare requests.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

DEFAULT_MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in JSON input by default.

The engine's serializer cannot checkpoint values nested much deeper than 250
levels; input is held well below that, so an accepted run can always be saved.
"""


_LINE_BREAKERS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""``json.dumps``'s encoder for the wire format, made once rather than on every call."""


def dumps(value: Any) -> str:
    """Compact JSON on one line, non-ASCII kept as is (the wire format).

    Line and paragraph separators (and NEL) are escaped: line-oriented readers,
    the official client's among them, would otherwise split an event in two.
    """
    return one_line(_ENCODER.encode(value))


def one_line(text: str) -> str:
    """Compact JSON ``text`` as :func:`dumps` writes it: line and paragraph separators escaped."""
    return text.translate(_LINE_BREAKERS) if not text.isascii() else text


class InvalidJSONError(ValueError):
    """JSON input that cannot be accepted: malformed, too deep, or not round-trippable."""


_JSON_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKETS = re.compile(r"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads(text: str | bytes, *, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """Parse JSON input strictly; raises :class:`InvalidJSONError`.

    Refused: nesting deeper than ``max_depth``, ``NaN`` and ``Infinity`` (not
    JSON, and stored as ``null`` by most readers), numbers too large for a
    float (``1e400``), and unpaired UTF-16 surrogates (not Unicode, so no
    database can store them).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode(json.detect_encoding(text))
        except UnicodeDecodeError as exc:
            raise InvalidJSONError(f"not valid UTF-8 ({exc})") from exc
    if _too_deep(text, max_depth):
        raise InvalidJSONError(f"nested deeper than the limit of {max_depth} levels")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except InvalidJSONError:
        raise
    except (ValueError, RecursionError) as exc:
        raise InvalidJSONError(str(exc)) from exc
    if _SURROGATE_ESCAPE.search(text):
        _check_unicode(value)
    return value


def _too_deep(text: str, max_depth: int) -> bool:
    if text.count("[") + text.count("{") <= max_depth:
        return False  # the common case: not even that many brackets in all
    depth = 0
    for match in _JSON_BRACKETS.finditer(_JSON_STRINGS.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise InvalidJSONError(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise InvalidJSONError(f"the number {literal[:40]} is too large")
    return value


def _check_unicode(value: Any) -> None:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJSONError("a string holds an unpaired UTF-16 surrogate") from exc


def load_object(text: str) -> dict[str, Any]:
    """A JSON object stored by the package; raises ``ValueError`` for anything else."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("stored JSON is not an object")
    return value


def canonical(value: Any) -> str:
    """Sorted-key, ASCII-only compact JSON: equal values give equal text (for hashing)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
