"""An order from config to the customer's inbox: the real assets, in-process, against real servers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import requests
from dagster import ExecuteInProcessResult

from contracts.manifest import Manifest
from contracts.orders import OrderStatus
from delivery.artifact_store import order_key, portal_key
from order_pipeline.keys import (
    AFTER_APK,
    AFTER_EDP,
    APK,
    CFN_OR_ISO,
    CONFIG,
    EDP_ARTIFACTS,
    EMAIL,
    MANIFEST,
    REDELIVERY,
)
from standins.hmi_ci import publish_sample_apk

if TYPE_CHECKING:
    from tests.platform_assets.conftest import OrderFlow

pytestmark = pytest.mark.slow

MANIFEST_NODE = "order__manifest"
EMAIL_NODE = "order__email"


def _config_and_edp(flow: OrderFlow, target: str) -> str:
    cfg_id = flow.submit(target)
    assert flow.materialize(cfg_id, [CONFIG]).success
    flow.wait_for_edp(cfg_id)
    return cfg_id


def _email_metadata(result: ExecuteInProcessResult, key: str) -> object:
    [materialization] = result.asset_materializations_for_node(EMAIL_NODE)
    return materialization.metadata[key].value


def test_a_cloud_order_waits_for_the_apk_then_is_delivered(flow: OrderFlow) -> None:
    cfg_id = flow.submit("cloud")

    # config: the customer's config in S3, the job at EDP
    assert flow.materialize(cfg_id, [CONFIG]).success
    assert flow.status(cfg_id) == OrderStatus.EDP_PENDING
    assert flow.order(cfg_id).edp_job_id
    stored = flow.keys(f"orders/{cfg_id}/")
    assert order_key(cfg_id, "config.json") in stored
    assert order_key(cfg_id, "cfg.customer.yml") in stored
    assert cfg_id in flow.read(order_key(cfg_id, "config.json")).decode()

    # EDP done, but the HMI CI has published no APK yet: the order waits, nobody is emailed
    flow.wait_for_edp(cfg_id)
    waiting = flow.materialize(cfg_id, AFTER_EDP)
    assert waiting.success
    # The manifest step publishes nothing and says so; the email step does not run.
    assert waiting.asset_materializations_for_node(MANIFEST_NODE) == []
    [check] = waiting.get_asset_check_evaluations()[-1:]
    assert check.metadata["reason"].value == "no HMI APK yet"
    assert waiting.is_node_skipped(EMAIL_NODE)
    assert not waiting.get_step_failure_events()
    assert flow.status(cfg_id) == OrderStatus.WAITING_FOR_APK
    assert order_key(cfg_id, "edp", "dtm.json") in flow.keys(f"orders/{cfg_id}/edp/")
    assert order_key(cfg_id, "cfn", "cfn.yaml") in flow.keys(f"orders/{cfg_id}/cfn/")
    assert flow.keys(f"portal/{cfg_id}/") == []
    assert flow.emails_sent_by_ses(cfg_id) == []
    assert flow.outbox(cfg_id) == []

    # the APK lands; what apk_sensor sets going delivers the order
    apk_key = publish_sample_apk(flow.s3(), flow.settings.artifacts.bucket, "1.0.0")
    assert flow.materialize(cfg_id, AFTER_APK).success
    assert flow.status(cfg_id) == OrderStatus.DELIVERED

    manifest = flow.manifest(cfg_id, 1)
    assert manifest.cfg_id == cfg_id and manifest.version == 1
    assert manifest.deployment_target == "cloud"
    by_kind = {(a.kind, a.name) for a in manifest.artifacts}
    assert ("edp", "dtm.json") in by_kind
    assert ("cfn", "cfn.yaml") in by_kind
    assert ("apk", apk_key.rsplit("/", 1)[-1]) in by_kind
    assert {a.kind for a in manifest.artifacts} == {"edp", "cfn", "apk", "sbom", "provenance"}
    assert portal_key(cfg_id, 1, "index.html") in flow.keys(f"portal/{cfg_id}/")
    flow.assert_downloads_match(manifest)

    [mail] = flow.outbox(cfg_id)
    assert len(flow.emails_sent_by_ses(cfg_id)) == 1
    assert [a.addr_spec for a in mail["To"].addresses] == [
        str(flow.order(cfg_id).configurator_payload().customer.email)
    ]
    # The email carries the customer's portal link, and that link opens.
    assert requests.get(flow.portal_link_in(mail), timeout=10).status_code == 200


def test_an_email_sent_after_the_token_was_rotated_carries_the_new_link(flow: OrderFlow) -> None:
    publish_sample_apk(flow.s3(), flow.settings.artifacts.bucket, "1.0.0")
    cfg_id = _config_and_edp(flow, "onprem")
    assert flow.materialize(cfg_id, [EDP_ARTIFACTS, CFN_OR_ISO, APK, MANIFEST]).success
    published_with = flow.portal_links(cfg_id)

    # The token rotated between the manifest step and the email step (POST /orders/{cfg_id}/portal-token).
    flow.orders.rotate_portal_token(cfg_id)
    assert flow.materialize(cfg_id, [EMAIL]).success

    current = flow.portal_links(cfg_id)
    assert current.portal() != published_with.portal()
    [mail] = flow.outbox(cfg_id)
    assert flow.portal_link_in(mail) == current.portal()
    assert published_with.token not in mail.as_string()
    assert requests.get(current.portal(), timeout=10).status_code == 200
    assert requests.get(published_with.portal(), timeout=10).status_code == 404
    assert flow.status(cfg_id) == OrderStatus.DELIVERED


def test_an_onprem_order_with_an_apk_ready_is_delivered_in_one_go(flow: OrderFlow) -> None:
    apk_key = publish_sample_apk(flow.s3(), flow.settings.artifacts.bucket, "1.2.0")
    cfg_id = _config_and_edp(flow, "onprem")

    result = flow.materialize(cfg_id, AFTER_EDP)

    assert result.success
    assert not result.get_step_skipped_events()
    assert flow.status(cfg_id) == OrderStatus.DELIVERED
    manifest = flow.manifest(cfg_id, 1)
    assert manifest.deployment_target == "onprem"
    # No edge images archive is published here: the bundle comes without it (see test_airgap_bundle).
    assert {a.kind for a in manifest.artifacts} == {"edp", "iso", "apk", "sbom", "provenance", "bundle"}
    assert ("iso", "iso.img") in {(a.kind, a.name) for a in manifest.artifacts}
    assert ("edp", "dtm.json") in {(a.kind, a.name) for a in manifest.artifacts}
    assert apk_key in {a.key for a in manifest.artifacts}
    flow.assert_downloads_match(manifest)
    assert len(flow.outbox(cfg_id)) == 1
    assert len(flow.emails_sent_by_ses(cfg_id)) == 1


def test_redelivery_publishes_a_new_version_and_mails_it_once(flow: OrderFlow) -> None:
    bucket = flow.settings.artifacts.bucket
    publish_sample_apk(flow.s3(), bucket, "1.0.0")
    cfg_id = _config_and_edp(flow, "onprem")
    assert flow.materialize(cfg_id, AFTER_EDP).success
    assert len(flow.emails_sent_by_ses(cfg_id)) == 1

    # A backfill of manifest + email: portal version 2, a second email; version 1 stays downloadable.
    redelivered = flow.materialize(cfg_id, REDELIVERY)
    assert redelivered.success
    assert _email_metadata(redelivered, "portal_version") == 2
    assert _email_metadata(redelivered, "sent_now") is True
    v1, v2 = flow.manifest(cfg_id, 1), flow.manifest(cfg_id, 2)
    assert v2.version == 2

    # The same artifacts again; each version's air-gap bundle, SBOM and provenance are its own (they
    # name the version they describe).
    def shipped(manifest: Manifest) -> list[tuple[str, str]]:
        own = ("bundle", "sbom", "provenance")
        return [(a.kind, a.sha256) for a in manifest.artifacts if a.kind not in own]

    assert shipped(v2) == shipped(v1)
    assert [a.name for a in v2.artifacts if a.kind == "bundle"] == ["airgap-bundle-v2.tar"]
    flow.assert_downloads_match(v1)
    flow.assert_downloads_match(v2)
    assert len(flow.emails_sent_by_ses(cfg_id)) == 2
    assert len(flow.outbox(cfg_id)) == 2
    assert flow.status(cfg_id) == OrderStatus.DELIVERED

    # The email step again, twice, over the same published version 2: nothing is sent again.
    for _ in range(2):
        again = flow.materialize(cfg_id, [EMAIL])
        assert again.success
        assert _email_metadata(again, "portal_version") == 2
        assert _email_metadata(again, "sent_now") is False
    assert len(flow.emails_sent_by_ses(cfg_id)) == 2
    assert len(flow.outbox(cfg_id)) == 2
    assert flow.status(cfg_id) == OrderStatus.DELIVERED

    # A newer APK shipped to the same order: version 3 with the new APK, a third email.
    new_apk = publish_sample_apk(flow.s3(), bucket, "1.1.0")
    assert flow.materialize(cfg_id, AFTER_APK).success
    v3 = flow.manifest(cfg_id, 3)
    assert new_apk in {a.key for a in v3.artifacts}
    assert new_apk not in {a.key for a in v1.artifacts}
    flow.assert_downloads_match(v3)
    assert len(flow.emails_sent_by_ses(cfg_id)) == 3
