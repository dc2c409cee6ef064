"""One cfg_id rule, one artifact-name rule, one bucket rule: every place that checks them agrees."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from contracts.s3_layout import ArtifactName, BucketName, CfgId, is_artifact_name, is_bucket_name, is_cfg_id
from delivery.artifact_store import checked_name, order_key, portal_key
from edge_gateway.settings import load_gateway_settings
from service_kit.layered_config import ConfigError

MINTED = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"
# Other spellings of the same UUID, and ids that are no UUID: each would be another S3 prefix.
NOT_CFG_IDS = [
    MINTED.upper(),
    "{" + MINTED + "}",
    f"urn:uuid:{MINTED}",
    MINTED.replace("-", ""),
    MINTED + "\n",
    "order-1",
    "../" + MINTED,
    "",
]


def _accepted(adapter: TypeAdapter[str], value: str) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def _gateway_accepts(tmp_path: Path, cfg_id: str) -> bool:
    customer = tmp_path / "cfg.customer.yml"
    customer.write_text(f"cfg_id: {cfg_id!r}\n")
    try:
        load_gateway_settings("beta", customer_path=customer, environ={})
    except ConfigError:
        return False
    return True


def test_every_cfg_id_the_platform_mints_is_one() -> None:
    for _ in range(50):
        assert is_cfg_id(str(uuid.uuid4()))


@pytest.mark.parametrize("value", [MINTED, *NOT_CFG_IDS])
def test_the_rule_is_the_canonical_uuid_spelling(value: str) -> None:
    try:
        canonical = str(uuid.UUID(value)) == value
    except ValueError:
        canonical = False
    assert is_cfg_id(value) is canonical
    assert _accepted(TypeAdapter(CfgId), value) is canonical


@pytest.mark.parametrize("value", [MINTED, *NOT_CFG_IDS])
def test_the_gateway_takes_the_cfg_ids_the_artifact_keys_take(tmp_path: Path, value: str) -> None:
    """A cfg.customer.yml edited by hand fails at the gateway's start exactly when the platform's
    keys (and its API's /orders/{cfg_id}) would not know the order."""
    try:
        order_key(value, "config.json")
        portal_key(value, 1, "manifest.json")
        keys_take_it = True
    except ValueError:
        keys_take_it = False
    assert keys_take_it is is_cfg_id(value)
    assert _gateway_accepts(tmp_path, value) is keys_take_it


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("dtm.json", True),
        ("cfg.customer.yml", True),
        ("A" * 128, True),
        ("A" * 129, False),
        (".hidden", False),
        ("-rf", False),
        ("a/b", False),
        ("name\n", False),
        ("", False),
    ],
)
def test_artifact_names_are_one_rule_for_the_contract_and_the_keys(name: str, valid: bool) -> None:
    assert is_artifact_name(name) is valid
    assert _accepted(TypeAdapter(ArtifactName), name) is valid
    try:
        checked_name(name)
        in_a_key = True
    except ValueError:
        in_a_key = False
    assert in_a_key is valid


def test_keys_refuse_a_double_dot_that_the_edp_contract_lets_through() -> None:
    # An EDP artifact named so fails its order at the copy into the bucket, with the name in the
    # reason, instead of making EDP's whole answer unreadable (an order waiting for ever).
    assert _accepted(TypeAdapter(ArtifactName), "a..b")
    with pytest.raises(ValueError, match="not allowed in a key"):
        checked_name("a..b")


@pytest.mark.parametrize(
    ("bucket", "valid"),
    [("ems-artifacts-beta", True), ("a.b.c", True), ("ab", False), ("Upper", False), ("-x-", False)],
)
def test_bucket_names(bucket: str, valid: bool) -> None:
    assert is_bucket_name(bucket) is valid
    assert _accepted(TypeAdapter(BucketName), bucket) is valid
