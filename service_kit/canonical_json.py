"""The one byte form of a JSON document that the platform stores, hashes or serves.

Sorted keys, a fixed indent, UTF-8 as it is (no ``\\u`` escapes) and a final newline: the same
content always gives the same bytes, and so the same sha256.
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(document: Any) -> bytes:
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
