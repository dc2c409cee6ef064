"""The edge images' release record: which images a release pinned, and where its files lie.

A release of the edge images (``delivery.edge_image_archive``) pushes both images to the stage's
registry, which answers each push with the manifest digest the image is pulled by from then on,
saves exactly those images into the archive air-gap bundles carry, and writes this record last,
beside the archive in the stage's bucket::

    edge-images/edge-images-<version>.tar       docker save of both images (delivery.airgap)
    edge-images/edge-images-<version>.cdx.json  their CycloneDX SBOM (delivery.sbom)
    edge-images/edge-images-<version>.json      this record

Delivered stacks name the record's pinned references, ``<registry>/<name>:<version>@sha256:<digest>``:
a tag moved in the registry afterwards changes nothing on a customer's machine. Where no record is
published for the platform's version (local, demo before ``make edge-images``), stacks name the
plain tags ``make images`` gives, so orders still build.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from delivery.airgap import EDGE_IMAGES_PREFIX, checked_images_version, edge_images_key
from delivery.artifact_store import ArtifactStore, StoredObject, sha256_hex
from delivery.edge_bundle import FIXTURES_IMAGE_NAME, GATEWAY_IMAGE_NAME, EdgeImages

RECORD_CONTENT_TYPE = "application/json"
# The compose override an air-gapped site starts the stack with after `docker load` (see
# loaded_images_override).
LOADED_IMAGES_OVERRIDE_NAME = "compose.loaded-images.yaml"
SBOM_CONTENT_TYPE = "application/vnd.cyclonedx+json"
RECORD_SCHEMA_VERSION: Literal[1] = 1
# <repository>:<tag>@sha256:<digest>, the repository with or without a registry.
PINNED_REFERENCE = re.compile(
    r"^(?P<repository>[a-z0-9][a-z0-9._:/-]*):(?P<tag>[0-9A-Za-z_][0-9A-Za-z_.-]{0,127})@(?P<digest>sha256:[0-9a-f]{64})$"
)
IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


def edge_release_key(version: str) -> str:
    """``edge-images/edge-images-<version>.json``: the release record of ``version``."""
    return f"{EDGE_IMAGES_PREFIX}edge-images-{checked_images_version(version)}.json"


def edge_sbom_key(version: str) -> str:
    """``edge-images/edge-images-<version>.cdx.json``: the SBOM of the release's images archive."""
    return f"{EDGE_IMAGES_PREFIX}edge-images-{checked_images_version(version)}.cdx.json"


class ReleasedImage(BaseModel):
    """One image as its release pushed it: the reference stacks name, the id ``docker load`` gives it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference: str
    image_id: str

    @field_validator("reference")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if not PINNED_REFERENCE.fullmatch(value):
            raise ValueError(f"{value!r} is not an image pinned by digest (<name>:<tag>@sha256:<digest>)")
        return value

    @field_validator("image_id")
    @classmethod
    def _image_id(cls, value: str) -> str:
        if not IMAGE_ID.fullmatch(value):
            raise ValueError(f"{value!r} is not an image id (sha256:<64 hex digits>)")
        return value

    @property
    def tag(self) -> str:
        """``<registry>/<name>:<version>``: the name the archive holds the image under."""
        return self.reference.split("@", 1)[0]

    @property
    def digest(self) -> str:
        return self.reference.split("@", 1)[1]

    @property
    def repository(self) -> str:
        match = PINNED_REFERENCE.fullmatch(self.reference)
        assert match is not None
        return match.group("repository")


class ReleasedEdgeImages(BaseModel):
    """Both edge images, pushed and pinned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gateway: ReleasedImage
    fixtures: ReleasedImage

    def images(self) -> EdgeImages:
        """The pinned references, as delivered compose files name them."""
        return EdgeImages(gateway=self.gateway.reference, fixtures=self.fixtures.reference)

    def tags(self) -> EdgeImages:
        return self.images().tags()

    def registry(self) -> str:
        """The registry (and path) both images were pushed to; '' for none."""
        return self.gateway.repository.rpartition("/")[0]

    @model_validator(mode="after")
    def _named_as_released(self) -> ReleasedEdgeImages:
        for role, image, name in (
            ("gateway", self.gateway, GATEWAY_IMAGE_NAME),
            ("fixtures", self.fixtures, FIXTURES_IMAGE_NAME),
        ):
            if image.repository.rpartition("/")[2] != name:
                raise ValueError(f"the {role} image {image.reference} is not an {name} image")
        if self.gateway.repository.rpartition("/")[0] != self.fixtures.repository.rpartition("/")[0]:
            raise ValueError(
                f"the images were pushed to different registries: {self.gateway.tag}, {self.fixtures.tag}"
            )
        return self


class EdgeRelease(ReleasedEdgeImages):
    """The record of one release of the edge images (``edge_release_key(version)``)."""

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    version: str
    archive: StoredObject
    sbom: StoredObject | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return checked_images_version(value)

    @model_validator(mode="after")
    def _one_version(self) -> EdgeRelease:
        for role, image in (("gateway", self.gateway), ("fixtures", self.fixtures)):
            if not image.tag.endswith(f":{self.version}"):
                raise ValueError(f"the {role} image {image.reference} is not tagged {self.version}")
        if self.archive.key != edge_images_key(self.version):
            raise ValueError(f"archive {self.archive.key} is not {edge_images_key(self.version)}")
        if self.sbom is not None and self.sbom.key != edge_sbom_key(self.version):
            raise ValueError(f"SBOM {self.sbom.key} is not {edge_sbom_key(self.version)}")
        return self

    def record_json(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode("utf-8")


def publish_edge_release(store: ArtifactStore, release: EdgeRelease) -> StoredObject:
    """Store the record; written after the archive and the SBOM it names, so it never names a missing file."""
    return store.put(edge_release_key(release.version), release.record_json(), RECORD_CONTENT_TYPE)


def load_edge_release(store: ArtifactStore, version: str) -> EdgeRelease | None:
    """The release record of ``version`` in the bucket; None when the images of ``version`` were never released."""
    key = edge_release_key(version)
    if store.head(key) is None:
        return None
    try:
        release = EdgeRelease.model_validate_json(store.get(key))
    except ValidationError as exc:
        raise ValueError(f"s3://{store.bucket}/{key} is not an edge images release record: {exc}") from None
    if release.version != version:
        raise ValueError(f"s3://{store.bucket}/{key} records version {release.version}, not {version}")
    return release


def released_edge_images(release: EdgeRelease | None, registry: str, version: str) -> EdgeImages:
    """The images a stage's stacks name: the release's pinned references, or the plain tags without one.

    A record of images pushed elsewhere than the stage's registry (``edge.registry``) is an error:
    its stacks would pull from a registry the stage does not name. An empty registry (local, demo)
    takes whatever registry the local release pushed to.
    """
    if release is None:
        return EdgeImages.release(registry, version)
    if registry and release.registry() != registry.rstrip("/"):
        raise ValueError(
            f"the edge images of {version} were released to {release.registry() or 'no registry'}, "
            f"the stage's stacks pull from {registry} (edge.registry): release them there"
        )
    return release.images()


def release_sbom(store: ArtifactStore, release: EdgeRelease) -> bytes | None:
    """The release's SBOM as published, checked against the record's sha256."""
    if release.sbom is None:
        return None
    data = store.get(release.sbom.key)
    if sha256_hex(data) != release.sbom.sha256:
        raise ValueError(
            f"s3://{store.bucket}/{release.sbom.key} is not the SBOM the release recorded (sha256 differs)"
        )
    return data


def loaded_images_override(compose_yaml: bytes, released: ReleasedEdgeImages) -> bytes:
    """A compose override that names each edge image of ``compose_yaml`` by its image id.

    For an air-gapped site. ``docker load`` of the images archive gives each image its id (the
    sha256 of its config, which names every layer by its own sha256) and its tag, but no digest
    reference: on Docker's classic image store only a pull or push records one, so the delivered
    ``<name>:<tag>@sha256:<digest>`` does not resolve there. The id pins the same content, and
    the engine checked the loaded layers against it. ``docker compose -f compose.yaml -f
    <this file> up`` then runs exactly the released images, or refuses to start when they are not
    loaded.
    """
    document: Any = yaml.safe_load(compose_yaml)
    services = document.get("services") if isinstance(document, dict) else None
    if not isinstance(services, dict):
        raise ValueError("the compose file has no services")
    ids = {image.reference: image.image_id for image in (released.gateway, released.fixtures)}
    override: dict[str, dict[str, str]] = {}
    for name, spec in services.items():
        image = spec.get("image") if isinstance(spec, dict) else None
        if image not in ids:
            raise ValueError(
                f"service {name} runs {image}, which is not one of the released images ({', '.join(ids)})"
            )
        override[str(name)] = {"image": ids[image]}
    return yaml.safe_dump({"services": override}, sort_keys=False).encode("utf-8")
