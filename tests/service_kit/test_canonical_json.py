from __future__ import annotations

import hashlib
import json

from service_kit.canonical_json import canonical_json


def test_the_same_content_gives_the_same_bytes_whatever_the_key_order() -> None:
    first = canonical_json({"b": 1, "a": {"z": [1, 2], "y": "Zürich"}})
    second = canonical_json({"a": {"y": "Zürich", "z": [1, 2]}, "b": 1})
    assert first == second
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()


def test_the_form_is_sorted_indented_utf8_with_a_final_newline() -> None:
    data = canonical_json({"site": "Zürich", "n": 1})
    assert data == '{\n  "n": 1,\n  "site": "Zürich"\n}\n'.encode()
    assert json.loads(data) == {"site": "Zürich", "n": 1}
