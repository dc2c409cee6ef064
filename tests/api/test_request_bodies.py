"""What the shared JSON reader answers for hostile bodies: always a 4xx that says why, never a 500."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from service_kit.json_body import MAX_DEPTH, MAX_LISTED_ERRORS, MAX_MESSAGE_CHARS, MalformedJson, parse_json

JSON = {"Content-Type": "application/json"}


def _with_options(order: dict[str, Any], options_json: str) -> bytes:
    """The order with a raw JSON text as its options: json.dumps cannot write NaN-free oddities."""
    text = json.dumps({**order, "options": "OPTIONS"})
    return text.replace('"OPTIONS"', options_json).encode()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[" * 100_000, f"nested deeper than {MAX_DEPTH} levels"),
        (b"[" * 1000 + b"]" * 1000, f"nested deeper than {MAX_DEPTH} levels"),
        (b'{"a": ' * 33 + b"1" + b"}" * 33, f"nested deeper than {MAX_DEPTH} levels"),
        (b"1" * 5000, "more than 64 characters"),
        (b'{"schema_version": ' + b"9" * 5000 + b"}", "more than 64 characters"),
        (b'{"x": 0.' + b"1" * 100 + b"}", "more than 64 characters"),
        (b"NaN", "NaN is not a JSON number"),
        (b'{"options": {"a": Infinity}}', "Infinity is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b'{"schema_version": 1, "schema_version": 1}', "the key 'schema_version' more than once"),
        (b'{"customer": {"name": "a\\u0000b"}}', "U+0000"),
        (b'{"customer": {"name": "\\ud800"}}', "lone surrogate"),
        (b'{"\\udfff": 1}', "lone surrogate"),
    ],
    ids=[
        "100k-brackets",
        "1000-brackets",
        "33-objects",
        "5000-digit-int",
        "5000-digit-field",
        "100-digit-float",
        "nan",
        "infinity",
        "minus-infinity",
        "duplicate-key",
        "nul",
        "surrogate",
        "surrogate-key",
    ],
)
def test_malformed_bodies_answer_400_not_500(client: TestClient, body: bytes, says: str) -> None:
    answer = client.post("/submit", content=body, headers=JSON)
    assert answer.status_code == 400, answer.text[:500]
    assert answer.json()["detail"].startswith("request body is not valid JSON")
    assert says in answer.json()["detail"]


def test_the_depth_limit_leaves_room_for_every_contract() -> None:
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(MalformedJson):
        parse_json(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    # Ordinary numbers and unicode text are JSON as before.
    assert parse_json('{"n": -12, "f": 1.5e3, "t": "Süd ✓ \\u00e9"}'.encode()) == {
        "n": -12,
        "f": 1500.0,
        "t": "Süd ✓ é",
    }


@pytest.mark.parametrize("literal", ["1e400", "-1e400"])
def test_a_float_that_overflows_is_a_422_naming_the_option(
    client: TestClient, cloud_order: dict[str, Any], literal: str
) -> None:
    answer = client.post(
        "/submit", content=_with_options(cloud_order, f'{{"gain": {literal}}}'), headers=JSON
    )
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {"field": "options.gain", "message": "Value error, must be a finite number"}
    ]


def test_a_422_lists_at_most_50_errors_and_counts_the_rest(
    client: TestClient, cloud_order: dict[str, Any]
) -> None:
    # ~212 KB of devices, each with an invalid type and a huge model name: before, every error was
    # listed with its message (1.6 MB of answer).
    bad = copy.deepcopy(cloud_order)
    bad["devices"] = [{"id": f"d{index}", "type": "toaster", "model": "m" * 40} for index in range(4000)]
    bad["site"]["timezone"] = "Europe/" + "x" * 5000
    body = json.dumps(bad).encode()
    assert len(body) > 200_000

    answer = client.post("/submit", content=body, headers=JSON)

    assert answer.status_code == 422
    listed = answer.json()["errors"]
    assert len(listed) == MAX_LISTED_ERRORS
    assert all(len(error["message"]) <= MAX_MESSAGE_CHARS and len(error["field"]) <= 200 for error in listed)
    assert "the request has 4001 invalid field(s)" in answer.json()["detail"]
    assert "3951 more are not" in answer.json()["detail"]
    assert len(answer.content) < 30_000


def test_a_long_field_name_is_clipped(client: TestClient, cloud_order: dict[str, Any]) -> None:
    bad = copy.deepcopy(cloud_order)
    bad["x" * 10_000] = 1
    answer = client.post("/submit", json=bad)
    assert answer.status_code == 422
    [error] = answer.json()["errors"]
    assert error["message"] == "unknown field" and len(error["field"]) == 200 and error["field"].endswith("…")
    assert len(answer.content) < 2_000
