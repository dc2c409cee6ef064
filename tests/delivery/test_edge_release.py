"""The edge images' release record: its keys, its checks, and the images a stage's stacks name from it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from delivery.artifact_store import ArtifactStore, StoredObject, sha256_hex
from delivery.edge_bundle import EdgeImages, compose_file
from delivery.edge_release import (
    EdgeRelease,
    ReleasedImage,
    edge_release_key,
    edge_sbom_key,
    load_edge_release,
    loaded_images_override,
    publish_edge_release,
    release_sbom,
    released_edge_images,
)
from industrial_fixtures import load_fixture_dtm, load_manifest
from resources.delivery import DeliveryResource
from tests.delivery.conftest import MOTO_BUCKET

BUCKET = MOTO_BUCKET
VERSION = "0.1.0"
REGISTRY = "ghcr.io/example"
GATEWAY_DIGEST = "sha256:" + "a" * 64
FIXTURES_DIGEST = "sha256:" + "b" * 64
GATEWAY_ID = "sha256:" + "1" * 64
FIXTURES_ID = "sha256:" + "2" * 64
SBOM = b'{"bomFormat": "CycloneDX", "specVersion": "1.6"}'


def release(registry: str = REGISTRY, version: str = VERSION, **changes: Any) -> EdgeRelease:
    tags = EdgeImages.release(registry, version)
    fields: dict[str, Any] = {
        "version": version,
        "gateway": {"reference": f"{tags.gateway}@{GATEWAY_DIGEST}", "image_id": GATEWAY_ID},
        "fixtures": {"reference": f"{tags.fixtures}@{FIXTURES_DIGEST}", "image_id": FIXTURES_ID},
        "archive": {"key": f"edge-images/edge-images-{version}.tar", "size": 10, "sha256": "c" * 64},
        "sbom": {
            "key": f"edge-images/edge-images-{version}.cdx.json",
            "size": len(SBOM),
            "sha256": sha256_hex(SBOM),
        },
    }
    return EdgeRelease.model_validate({**fields, **changes})


@pytest.fixture
def store(moto_s3: Any) -> ArtifactStore:
    return ArtifactStore(moto_s3, BUCKET)


def test_the_record_lies_beside_the_archive() -> None:
    assert edge_release_key("0.1.0") == "edge-images/edge-images-0.1.0.json"
    assert edge_sbom_key("0.1.0") == "edge-images/edge-images-0.1.0.cdx.json"
    with pytest.raises(ValueError, match="not a release version"):
        edge_release_key("../0.1.0")


def test_a_record_names_its_images_pinned_and_by_tag() -> None:
    record = release()

    assert record.images() == EdgeImages(
        gateway=f"ghcr.io/example/ems-edge-gateway:0.1.0@{GATEWAY_DIGEST}",
        fixtures=f"ghcr.io/example/ems-industrial-fixtures:0.1.0@{FIXTURES_DIGEST}",
    )
    assert record.tags() == EdgeImages.release(REGISTRY, VERSION)
    assert record.registry() == REGISTRY
    assert (record.gateway.tag, record.gateway.digest) == (
        "ghcr.io/example/ems-edge-gateway:0.1.0",
        GATEWAY_DIGEST,
    )
    assert release(registry="127.0.0.1:5000").registry() == "127.0.0.1:5000"
    assert release(registry="").registry() == ""


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {"gateway": {"reference": "ghcr.io/example/ems-edge-gateway:0.1.0", "image_id": GATEWAY_ID}},
            "not an image pinned by digest",
        ),
        (
            {
                "gateway": {
                    "reference": f"ghcr.io/example/ems-edge-gateway:0.1.0@{GATEWAY_DIGEST}",
                    "image_id": "abc",
                }
            },
            "not an image id",
        ),
        (
            {
                "gateway": {
                    "reference": f"ghcr.io/example/other:0.1.0@{GATEWAY_DIGEST}",
                    "image_id": GATEWAY_ID,
                }
            },
            "is not an ems-edge-gateway image",
        ),
        (
            {
                "fixtures": {
                    "reference": f"quay.io/x/ems-industrial-fixtures:0.1.0@{FIXTURES_DIGEST}",
                    "image_id": FIXTURES_ID,
                }
            },
            "different registries",
        ),
        (
            {
                "fixtures": {
                    "reference": f"ghcr.io/example/ems-industrial-fixtures:0.2.0@{FIXTURES_DIGEST}",
                    "image_id": FIXTURES_ID,
                }
            },
            "is not tagged 0.1.0",
        ),
        (
            {"archive": {"key": "edge-images/other.tar", "size": 1, "sha256": "c" * 64}},
            "is not edge-images/edge-images-0.1.0.tar",
        ),
        (
            {"sbom": {"key": "edge-images/x.json", "size": 1, "sha256": "c" * 64}},
            "is not edge-images/edge-images-0.1.0.cdx.json",
        ),
        ({"version": "../x"}, "not a release version"),
        ({"extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_a_record_that_does_not_hold_together_is_refused(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        release(**changes)


def test_published_records_load_back_and_absent_ones_are_none(store: ArtifactStore) -> None:
    assert load_edge_release(store, VERSION) is None
    record = release()

    stored = publish_edge_release(store, record)

    assert stored.key == edge_release_key(VERSION)
    assert load_edge_release(store, VERSION) == record
    assert json.loads(store.get(stored.key))["gateway"]["image_id"] == GATEWAY_ID


def test_a_broken_or_misplaced_record_is_named(store: ArtifactStore) -> None:
    store.put(edge_release_key("0.2.0"), b"{not json")
    with pytest.raises(
        ValueError, match=r"edge-images/edge-images-0.2.0.json is not an edge images release record"
    ):
        load_edge_release(store, "0.2.0")
    store.put(edge_release_key("0.3.0"), release().record_json())
    with pytest.raises(ValueError, match=re.escape("records version 0.1.0, not 0.3.0")):
        load_edge_release(store, "0.3.0")


def test_stacks_name_the_pinned_release_or_the_plain_tags_without_one() -> None:
    assert released_edge_images(None, REGISTRY, VERSION) == EdgeImages.release(REGISTRY, VERSION)
    assert released_edge_images(None, "", VERSION) == EdgeImages.release("", VERSION)
    assert released_edge_images(release(), REGISTRY, VERSION) == release().images()
    # Local and demo name no registry: the loopback registry of the local release is taken as it is.
    local = release(registry="127.0.0.1:41234")
    assert released_edge_images(local, "", VERSION) == local.images()
    with pytest.raises(
        ValueError,
        match=re.escape("released to 127.0.0.1:41234, the stage's stacks pull from ghcr.io/example"),
    ):
        released_edge_images(local, REGISTRY, VERSION)


def test_the_delivery_resource_pins_what_the_bucket_records(store: ArtifactStore) -> None:
    delivery = DeliveryResource(stage="beta", edge_registry=REGISTRY, release_version=VERSION)
    assert delivery.edge_images(store) == EdgeImages.release(REGISTRY, VERSION)
    assert delivery.edge_sbom(store) is None

    store.put(edge_sbom_key(VERSION), SBOM)
    publish_edge_release(store, release())

    assert delivery.edge_images(store) == release().images()
    assert delivery.edge_images() == EdgeImages.release(REGISTRY, VERSION)
    assert delivery.image_references(store) == {
        "gateway": release().gateway.reference,
        "fixtures": release().fixtures.reference,
    }
    assert delivery.edge_sbom(store) == SBOM


def test_an_sbom_that_differs_from_the_record_is_refused(store: ArtifactStore) -> None:
    store.put(edge_sbom_key(VERSION), SBOM + b" ")
    with pytest.raises(ValueError, match="is not the SBOM the release recorded"):
        release_sbom(store, release())
    assert release_sbom(store, release(sbom=None)) is None


def test_the_loaded_images_override_names_every_service_by_image_id() -> None:
    record = release()
    fixtures = load_manifest().fixtures
    compose = compose_file(dtm=load_fixture_dtm(), images=record.images(), fixtures=fixtures)

    override = yaml.safe_load(loaded_images_override(compose, record))

    assert override == {
        "services": {
            "gateway": {"image": GATEWAY_ID},
            **{fixture.hostname: {"image": FIXTURES_ID} for fixture in fixtures},
        }
    }
    unpinned = compose_file(dtm=load_fixture_dtm(), images=record.tags(), fixtures=fixtures)
    with pytest.raises(
        ValueError,
        match=re.escape("service gateway runs ghcr.io/example/ems-edge-gateway:0.1.0, which is not"),
    ):
        loaded_images_override(unpinned, record)


def test_released_images_are_frozen() -> None:
    image = ReleasedImage(reference=f"r/ems-edge-gateway:1@{GATEWAY_DIGEST}", image_id=GATEWAY_ID)
    with pytest.raises(ValidationError):
        image.image_id = FIXTURES_ID  # type: ignore[misc]
    assert StoredObject(key="k", size=1, sha256="a").name == "k"
