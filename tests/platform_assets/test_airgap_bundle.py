"""An on-prem order's portal version carries its air-gap bundle, checked by airgap_bundle_matches_manifest."""

from __future__ import annotations

import io
import tarfile

import pytest

from contracts.orders import OrderStatus
from delivery.airgap import edge_images_key, edge_images_name
from delivery.artifact_store import ArtifactStore
from order_pipeline.keys import AFTER_EDP, CONFIG
from platform_assets.order import AIRGAP_BUNDLE_MATCHES
from platform_config.settings import PROJECT_VERSION
from standins.hmi_ci import publish_sample_apk
from tests.platform_assets.conftest import OrderFlow

pytestmark = pytest.mark.slow


def bundle_members(flow: OrderFlow, key: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(flow.read(key))) as archive:
        return {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile()
        }


def an_images_archive() -> bytes:
    # A tar as docker save writes one: the images' own loading is the docker test's business
    # (tests/delivery/test_edge_image_archive.py).
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        data = b'[{"RepoTags": ["ems-edge-gateway:test"]}]'
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def delivered_onprem(flow: OrderFlow) -> str:
    publish_sample_apk(flow.s3(), flow.settings.artifacts.bucket, "1.2.0")
    cfg_id = flow.submit("onprem")
    assert flow.materialize(cfg_id, [CONFIG]).success
    flow.wait_for_edp(cfg_id)
    return cfg_id


def test_the_bundle_holds_the_version_and_the_published_edge_images(flow: OrderFlow) -> None:
    store = ArtifactStore(flow.s3(), flow.settings.artifacts.bucket)
    images = store.put(edge_images_key(PROJECT_VERSION), an_images_archive(), "application/x-tar")
    cfg_id = delivered_onprem(flow)

    result = flow.materialize(cfg_id, AFTER_EDP)

    assert result.success and flow.status(cfg_id) == OrderStatus.DELIVERED
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == AIRGAP_BUNDLE_MATCHES]
    assert check.passed, check.metadata
    manifest = flow.manifest(cfg_id, 1)
    [bundle] = [a for a in manifest.artifacts if a.kind == "bundle"]
    assert bundle.name == "airgap-bundle-v1.tar"
    assert ("images", edge_images_name(PROJECT_VERSION)) in {(a.kind, a.name) for a in manifest.artifacts}
    members = bundle_members(flow, bundle.key)
    folder = "airgap-v1"
    listed = {a.name for a in manifest.artifacts if a.kind != "bundle"}
    assert {f"{folder}/{name}" for name in listed} <= set(members)
    assert members[f"{folder}/{edge_images_name(PROJECT_VERSION)}"] == flow.read(images.key)
    for name in ("README.txt", "manifest.json", "manifest.json.sig", "signing-key.pem", "index.html"):
        assert f"{folder}/{name}" in members
    assert f"{folder}/stack/compose.yaml" in members
    readme = members[f"{folder}/README.txt"].decode()
    assert f"docker load -i {edge_images_name(PROJECT_VERSION)}" in readme
    flow.assert_downloads_match(manifest)


def test_without_the_edge_images_the_bundle_comes_without_them_or_the_order_fails(flow: OrderFlow) -> None:
    cfg_id = delivered_onprem(flow)
    assert flow.materialize(cfg_id, AFTER_EDP).success
    manifest = flow.manifest(cfg_id, 1)
    assert "images" not in {a.kind for a in manifest.artifacts}
    [bundle] = [a for a in manifest.artifacts if a.kind == "bundle"]
    readme = bundle_members(flow, bundle.key)["airgap-v1/README.txt"].decode()
    assert "docker pull" in readme

    flow.settings = flow.settings.model_copy(
        update={"airgap": flow.settings.airgap.model_copy(update={"require_edge_images": True})}
    )
    second = delivered_onprem(flow)
    failed = flow.materialize(second, AFTER_EDP, raise_on_error=False)
    assert not failed.success
    [failure] = failed.get_step_failure_events()
    assert edge_images_key(PROJECT_VERSION) in str(failure.event_specific_data.error)  # type: ignore[union-attr]
