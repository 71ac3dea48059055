"""``_json``: compact JSON out (``dumps``, ``canonical``) and strict JSON in (``loads``)."""

from __future__ import annotations

import json

import pytest
from httpx._decoders import LineDecoder

from llama_workflows_asgi._json import InvalidJSONError, canonical, dumps, load_object, loads

# Every character ``str.splitlines`` (and so httpx's LineDecoder) breaks lines on.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_dumps_is_compact() -> None:
    assert dumps({"a": [1, 2], "b": {"c": None}}) == '{"a":[1,2],"b":{"c":null}}'


def test_dumps_keeps_non_ascii_raw() -> None:
    assert dumps({"name": "Zoë 日本 🎉"}) == '{"name":"Zoë 日本 🎉"}'


def test_dumps_escapes_unicode_line_separators() -> None:
    text = dumps({"s": "a\u2028b\u2029c\x85d"})
    assert text == '{"s":"a\\u2028b\\u2029c\\u0085d"}'


@pytest.mark.parametrize("value", [f"x{LINE_BREAKS}y", f"é{LINE_BREAKS}", "\u2028", "plain"])
def test_dumps_is_one_line_and_round_trips(value: str) -> None:
    text = dumps({"value": value, "types": ["é"]})
    assert json.loads(text) == {"value": value, "types": ["é"]}
    assert text.splitlines() == [text]

    decoder = LineDecoder()
    lines = decoder.decode(text + "\n") + decoder.flush()
    assert lines == [text]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_loads_accepts_nesting_up_to_the_limit_and_names_it_beyond() -> None:
    assert loads(nested(10), max_depth=10) is not None
    assert loads('{"a": "[[[[[[[[[[[[[[["}', max_depth=2) == {"a": "[" * 15}  # text, not nesting
    with pytest.raises(InvalidJSONError, match="limit of 10 levels"):
        loads(nested(11), max_depth=10)
    with pytest.raises(InvalidJSONError, match="limit of 64 levels"):
        loads(nested(100_000))  # json.loads alone would raise RecursionError


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[NaN]", "NaN is not a JSON number"),
        ('{"x": Infinity}', "Infinity is not a JSON number"),
        ("-Infinity", "-Infinity is not a JSON number"),
        ("1e400", "the number 1e400 is too large"),
        ('"\\ud800"', "unpaired UTF-16 surrogate"),
        ("{", "Expecting property name"),
    ],
)
def test_loads_refuses_what_json_cannot_carry(text: str, message: str) -> None:
    with pytest.raises(InvalidJSONError, match=message):
        loads(text)


def test_loads_keeps_what_json_carries() -> None:
    assert loads('{"a": 1e-400, "b": 12345678901234567890, "c": "\\ud83d\\ude00"}') == {
        "a": 0.0,
        "b": 12345678901234567890,
        "c": "\U0001f600",
    }
    assert loads(b'[1.5, "caf\xc3\xa9"]') == [1.5, "caf\u00e9"]


def test_load_object_reads_back_a_stored_object_and_refuses_anything_else() -> None:
    assert load_object(dumps({"a": [1, "é"]})) == {"a": [1, "é"]}
    with pytest.raises(ValueError, match="not an object"):
        load_object("[1]")


def test_canonical_is_sorted_ascii_and_compact() -> None:
    assert canonical({"b": 1, "a": ["é"]}) == '{"a":["\\u00e9"],"b":1}'
    assert canonical({"a": 1, "b": 2}) == canonical({"b": 2, "a": 1})
