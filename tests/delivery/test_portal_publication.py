from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import Manifest
from delivery.artifact_store import ArtifactStore, StoredObject, order_key
from delivery.manifest_signing import ManifestSigner
from delivery.portal_publication import PortalPublication, publish_portal_version
from platform_config.settings import Settings
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order-cloud.json"
SIGNER = ManifestSigner.generate()


@dataclass
class Delivery:
    cfg_id: str
    order: ConfiguratorPayload
    store: ArtifactStore
    deliveries: DeliveryRepository
    artifacts: list[tuple[str, StoredObject]]

    def publish(self, run_id: str, flags: dict[str, object] | None = None) -> PortalPublication:
        return publish_portal_version(
            cfg_id=self.cfg_id,
            run_id=run_id,
            order=self.order,
            flags=flags if flags is not None else {"needs_vpn": False},
            artifacts=self.artifacts,  # type: ignore[arg-type]
            store=self.store,
            deliveries=self.deliveries,
            signer=SIGNER,
        )

    def manifest_in_s3(self, version: int) -> Manifest:
        raw = self.store.get(f"portal/{self.cfg_id}/v{version}/manifest.json")
        return Manifest.model_validate(json.loads(raw))

    def html(self, key: str) -> str:
        return self.store.get(key).decode("utf-8")


@pytest.fixture
def delivery(pipeline_settings: Settings, store: ArtifactStore) -> Iterator[Delivery]:
    order = ConfiguratorPayload.model_validate(json.loads(EXAMPLE.read_text(encoding="utf-8")))
    orders = OrderRepository.from_url(pipeline_settings.platform_db_url())
    stored_order, _ = orders.submit(order, None)
    orders.dispose()
    cfg_id = stored_order.cfg_id
    artifacts = [
        (
            "edp",
            store.put(order_key(cfg_id, "edp", "dtm.json"), b'{"schema_version": 1}', "application/json"),
        ),
        (
            "cfn",
            store.put(order_key(cfg_id, "cfn", "cfn.yaml"), b"AWSTemplateFormatVersion: '2010-09-09'\n" * 20),
        ),
        ("apk", store.put("apk/ems-hmi-1.10.0.apk", b"PK\x03\x04" + bytes(range(256)) * 8)),
    ]
    deliveries = DeliveryRepository.from_url(pipeline_settings.platform_db_url())
    yield Delivery(cfg_id=cfg_id, order=order, store=store, deliveries=deliveries, artifacts=artifacts)
    deliveries.dispose()


def version_links(html: str) -> set[int]:
    return {int(number) for number in re.findall(r">Version (\d+)</a>", html)}


@pytest.mark.slow
def test_first_publication_is_version_1(delivery: Delivery) -> None:
    publication = delivery.publish("run-a")

    assert publication.version == 1
    assert publication.cfg_id == delivery.cfg_id
    assert publication.manifest_key == f"portal/{delivery.cfg_id}/v1/manifest.json"
    assert publication.manifest.version == 1
    assert [v.version for v in delivery.deliveries.portal_versions(delivery.cfg_id)] == [1]


@pytest.mark.slow
def test_manifest_in_s3_validates_and_lists_each_artifact(delivery: Delivery) -> None:
    publication = delivery.publish("run-a", flags={"needs_vpn": True, "gateway_profile": "small"})

    manifest = delivery.manifest_in_s3(1)

    assert manifest == publication.manifest
    assert manifest.cfg_id == delivery.cfg_id
    assert manifest.version == 1
    assert manifest.deployment_target == "cloud"
    assert manifest.flags == {"needs_vpn": True, "gateway_profile": "small"}
    assert [(a.kind, a.name, a.key, a.size, a.sha256) for a in manifest.artifacts] == [
        (kind, obj.name, obj.key, obj.size, obj.sha256) for kind, obj in delivery.artifacts
    ]
    for artifact in manifest.artifacts:
        data = delivery.store.get(artifact.key)
        assert len(data) == artifact.size
        assert hashlib.sha256(data).hexdigest() == artifact.sha256
        assert artifact.url is None
    # Only what stays true is stored: a link under the token would die with its rotation.
    raw = json.loads(delivery.store.get(publication.manifest_key))
    assert raw["schema_version"] == 3
    assert all("url" not in artifact for artifact in raw["artifacts"])
    head = delivery.store.head(publication.manifest_key)
    assert head is not None and head["ContentType"] == "application/json"


@pytest.mark.slow
def test_retry_of_the_same_run_republishes_the_same_version(delivery: Delivery) -> None:
    first = delivery.publish("run-a")

    again = delivery.publish("run-a")

    assert again.version == first.version == 1
    assert again == first
    assert [v.version for v in delivery.deliveries.portal_versions(delivery.cfg_id)] == [1]
    assert delivery.store.head(f"portal/{delivery.cfg_id}/v2/manifest.json") is None
    assert version_links(delivery.html(f"portal/{delivery.cfg_id}/index.html")) == {1}


@pytest.mark.slow
def test_new_run_publishes_version_2_and_keeps_version_1(delivery: Delivery) -> None:
    first = delivery.publish("run-a")

    second = delivery.publish("run-b")

    assert second.version == 2
    assert second.manifest_key == f"portal/{delivery.cfg_id}/v2/manifest.json"
    assert delivery.manifest_in_s3(1) == first.manifest
    assert delivery.manifest_in_s3(2) == second.manifest
    assert delivery.store.head(f"portal/{delivery.cfg_id}/v1/index.html") is not None
    assert [v.version for v in delivery.deliveries.portal_versions(delivery.cfg_id)] == [1, 2]

    # Each version's folder stands alone; the order's index leads to both.
    assert version_links(delivery.html(f"portal/{delivery.cfg_id}/v2/index.html")) == set()
    index = delivery.html(f"portal/{delivery.cfg_id}/index.html")
    assert version_links(index) == {1, 2}
    assert 'href="v1/index.html"' in index and 'href="v2/index.html"' in index


@pytest.mark.slow
def test_order_index_names_the_latest_version_and_the_history(delivery: Delivery) -> None:
    delivery.publish("run-a")
    assert "current: version 1" in delivery.html(f"portal/{delivery.cfg_id}/index.html")

    second = delivery.publish("run-b")

    index_key = f"portal/{delivery.cfg_id}/index.html"
    head = delivery.store.head(index_key)
    assert head is not None and head["ContentType"].startswith("text/html")
    index = delivery.html(index_key)
    assert "current: version 2" in index
    assert "The current version is <strong>version 2</strong>" in index
    assert version_links(index) == {1, 2}
    for artifact in second.manifest.artifacts:
        assert artifact.sha256 in index
        assert f'href="v2/{artifact.name}"' in index


@pytest.mark.slow
def test_retry_of_an_old_run_after_a_newer_version_keeps_its_number(delivery: Delivery) -> None:
    delivery.publish("run-a")
    delivery.publish("run-b")

    retried = delivery.publish("run-a")

    assert retried.version == 1
    assert [v.version for v in delivery.deliveries.portal_versions(delivery.cfg_id)] == [1, 2]
    # The order's page still leads the customer to the newest delivery, not the retried one.
    index = delivery.html(f"portal/{delivery.cfg_id}/index.html")
    assert "current: version 2" in index
    assert "The current version is <strong>version 2</strong>" in index
    assert version_links(index) == {1, 2}
    assert version_links(delivery.html(f"portal/{delivery.cfg_id}/v1/index.html")) == set()


def copy_off_s3(delivery: Delivery, folder: Path, versions: list[int]) -> None:
    """The order's portal folder as an air-gapped site gets it: per version, its manifest.json, its
    index.html and its artifacts beside them, under their names."""
    portal = f"portal/{delivery.cfg_id}"
    (folder / "index.html").write_bytes(delivery.store.get(f"{portal}/index.html"))
    for version in versions:
        (folder / f"v{version}").mkdir(parents=True)
        for name in ("manifest.json", "manifest.json.sig", "signing-key.pem", "index.html"):
            (folder / f"v{version}" / name).write_bytes(delivery.store.get(f"{portal}/v{version}/{name}"))
        for artifact in delivery.manifest_in_s3(version).artifacts:
            (folder / f"v{version}" / artifact.name).write_bytes(delivery.store.get(artifact.key))


def hrefs(page: str) -> list[str]:
    return [html.unescape(href) for href in re.findall(r'href="([^"]*)"', page)]


@pytest.mark.slow
def test_a_copied_portal_folder_opens_from_disk_with_every_link_working(
    delivery: Delivery, tmp_path: Path
) -> None:
    delivery.publish("run-a")
    delivery.publish("run-b")
    copy_off_s3(delivery, tmp_path, [1, 2])

    for page in (tmp_path / "index.html", tmp_path / "v1" / "index.html", tmp_path / "v2" / "index.html"):
        links = hrefs(page.read_text(encoding="utf-8"))
        assert links, page
        for link in links:
            # Relative: no scheme, host or absolute path, so file:// resolves it within the copy.
            assert urlsplit(link).scheme == "" and urlsplit(link).netloc == "" and not link.startswith("/")
            assert (page.parent / link).resolve().is_file(), f"{page}: {link}"
    for version in (1, 2):
        folder = tmp_path / f"v{version}"
        manifest = Manifest.model_validate_json((folder / "manifest.json").read_bytes())
        for artifact in manifest.artifacts:
            data = (folder / artifact.name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == artifact.sha256
        assert sorted(hrefs((folder / "index.html").read_text(encoding="utf-8"))) == sorted(
            [*(a.name for a in manifest.artifacts), "manifest.json", "manifest.json.sig", "signing-key.pem"]
        )


@pytest.mark.slow
def test_nothing_stored_carries_an_absolute_link(delivery: Delivery) -> None:
    # Publishing is given no token or host at all; what it stores must not invent one either.
    delivery.publish("run-a")

    keys = [key for key, _ in delivery.store.keys(f"portal/{delivery.cfg_id}/")]
    # Both pages, the manifest with its signature and the public key that made it.
    assert len(keys) == 5
    for key in keys:
        assert b"://" not in delivery.store.get(key), key
