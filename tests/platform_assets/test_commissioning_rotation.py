"""A rotated commissioning token: the re-delivery the API launches builds, publishes and emails it.

What ``POST /orders/{cfg_id}/commissioning-token`` does to the pipeline, run in-process: the order's
generation is bumped, then its selection (``api.commissioning.ROTATION_ASSETS``) materializes.
"""

from __future__ import annotations

import hashlib

import pytest
import yaml

from api.commissioning import ROTATION_ASSETS
from contracts.orders import OrderStatus
from delivery.artifact_store import order_key
from delivery.portal_links import PortalTokens
from order_pipeline.keys import AFTER_EDP, CONFIG
from standins.hmi_ci import publish_sample_apk
from tests.platform_assets.conftest import OrderFlow
from tests.platform_assets.test_airgap_bundle import bundle_members

pytestmark = pytest.mark.slow

CFN_OR_ISO_NODE = "order__cfn_or_iso"


def delivered(flow: OrderFlow, target: str) -> str:
    publish_sample_apk(flow.s3(), flow.settings.artifacts.bucket, "1.2.0")
    cfg_id = flow.submit(target)
    assert flow.materialize(cfg_id, [CONFIG]).success
    flow.wait_for_edp(cfg_id)
    assert flow.materialize(cfg_id, AFTER_EDP).success
    assert flow.status(cfg_id) == OrderStatus.DELIVERED
    return cfg_id


def secrets_env(token: str) -> bytes:
    return f"COMMISSIONING_TOKEN={token}\n".encode()


def test_an_onprem_order_gets_a_version_with_the_new_token_and_the_earlier_one_stays_verifiable(
    flow: OrderFlow,
) -> None:
    cfg_id = delivered(flow, "onprem")
    tokens = PortalTokens(flow.settings.portal_token_key())
    old, new = tokens.commissioning_token(cfg_id, 0), tokens.commissioning_token(cfg_id, 1)
    v1 = flow.manifest(cfg_id, 1)
    # Generation 0 is where bundles always were, with the token sites got before rotation existed.
    assert flow.read(order_key(cfg_id, "bundle", "secrets.env")) == secrets_env(old)

    assert flow.orders.rotate_commissioning_token(cfg_id) == 1
    result = flow.materialize(cfg_id, ROTATION_ASSETS)

    assert result.success
    [built] = result.asset_materializations_for_node(CFN_OR_ISO_NODE)
    assert built.metadata["commissioning_token_generation"].value == 1
    assert all(new not in str(entry.value) for entry in built.metadata.values()), "no token in metadata"
    assert flow.read(order_key(cfg_id, "commissioning-1", "bundle", "secrets.env")) == secrets_env(new)
    v2 = flow.manifest(cfg_id, 2)
    [iso] = [a for a in v2.artifacts if a.kind == "iso"]
    assert iso.key == order_key(cfg_id, "commissioning-1", "iso", "iso.img")
    [bundle] = [a for a in v2.artifacts if a.kind == "bundle"]
    assert bundle_members(flow, bundle.key)["airgap-v2/stack/secrets.env"] == secrets_env(new)
    # Version 1 still downloads what it signed (its seed ISO with the old token), so it stays
    # verifiable; version 2 is the new one, emailed like any new version.
    flow.assert_downloads_match(v1)
    flow.assert_downloads_match(v2)
    assert [a.key for a in v1.artifacts if a.kind == "iso"] == [order_key(cfg_id, "iso", "iso.img")]
    assert len(flow.outbox(cfg_id)) == 2
    assert all(token not in mail.as_string() for mail in flow.outbox(cfg_id) for token in (old, new))
    assert flow.status(cfg_id) == OrderStatus.DELIVERED


def test_a_cloud_order_fetches_the_new_secrets_env_from_its_own_prefix(flow: OrderFlow) -> None:
    cfg_id = delivered(flow, "cloud")
    tokens = PortalTokens(flow.settings.portal_token_key())

    flow.orders.rotate_commissioning_token(cfg_id)
    assert flow.materialize(cfg_id, ROTATION_ASSETS).success

    v2 = flow.manifest(cfg_id, 2)
    [cfn] = [a for a in v2.artifacts if a.kind == "cfn"]
    assert cfn.key == order_key(cfg_id, "commissioning-1", "cfn", "cfn.yaml")
    template = flow.read(cfn.key).decode()
    prefix = order_key(cfg_id, "commissioning-1", "bundle") + "/"
    assert prefix in template
    assert yaml.safe_load(flow.read(order_key(cfg_id, "commissioning-1", "bundle", "compose.yaml")))
    fetched = flow.read(prefix + "secrets.env")
    assert fetched == secrets_env(tokens.commissioning_token(cfg_id, 1))
    # The template pins what it fetches by sha256: the new secrets.env's, not the old one's.
    assert hashlib.sha256(fetched).hexdigest() in template
    assert hashlib.sha256(flow.read(order_key(cfg_id, "bundle", "secrets.env"))).hexdigest() not in template
    flow.assert_downloads_match(flow.manifest(cfg_id, 1))
