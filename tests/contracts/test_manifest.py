"""manifest.json's contract: what is stored, and manifests of earlier schema versions still read."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from contracts.manifest import MANIFEST_SCHEMA_VERSION, Manifest

CFG_ID = "0b7c3f2e-1c9a-4d7e-9a51-6f1f2b3c4d5e"


def artifact(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "edp",
        "name": "dtm.json",
        "key": f"orders/{CFG_ID}/edp/dtm.json",
        "size": 12,
        "sha256": "a" * 64,
        **overrides,
    }


def document(schema_version: int, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema_version": schema_version,
        "cfg_id": CFG_ID,
        "version": 1,
        "created_at": "2025-03-01T14:05:09Z",
        "deployment_target": "onprem",
        "flags": {},
        "artifacts": artifacts,
    }


def test_a_manifest_is_written_at_the_current_schema_version_without_links() -> None:
    manifest = Manifest.model_validate(document(MANIFEST_SCHEMA_VERSION, [artifact()]))

    assert manifest.schema_version == MANIFEST_SCHEMA_VERSION == 3
    assert [a.url for a in manifest.artifacts] == [None]


def test_a_version_1_manifest_with_its_stored_links_still_reads_and_drops_them() -> None:
    dead = "https://api.example.com/portal/rotated-token/v1/dtm.json"

    read = Manifest.model_validate(document(1, [artifact(url=dead)])).as_stored()

    assert read == Manifest.model_validate(document(MANIFEST_SCHEMA_VERSION, [artifact()]))
    assert dead not in read.model_dump_json()


@pytest.mark.parametrize("schema_version", [0, 4])
def test_an_unknown_schema_version_is_refused(schema_version: int) -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        Manifest.model_validate(document(schema_version, [artifact()]))


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="download"):
        Manifest.model_validate(document(MANIFEST_SCHEMA_VERSION, [artifact(download="x")]))
