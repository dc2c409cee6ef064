"""Which orders get an air-gap bundle, and the bundle built for a portal version (``BundleBuilder``).

Built for every on-prem order (its site is the one likely to be offline) and for a cloud order whose
options ask for it (``airgap_bundle: true``). The bundle carries the edge images archive that the
edge images' build published for the platform's version (``edge-images/``, see
``delivery.edge_image_archive``). Without one the bundle is built without the images, or (with
``require_edge_images``, beta) the step fails, naming the archive to publish.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import ArtifactKind, Manifest
from contracts.records import PortalVersion
from delivery.airgap import (
    BUNDLE_CONTENT_TYPE,
    LOADED_IMAGES_NAME,
    BundleMember,
    bundle_name,
    bundle_own_files,
    edge_images_key,
    render_airgap_readme,
    with_bundle_files,
    write_airgap_bundle,
)
from delivery.artifact_store import SHA256_METADATA, ArtifactStore, StoredObject, order_key
from delivery.edge_bundle import COMPOSE_NAME, EdgeImages
from delivery.edge_release import EdgeRelease, loaded_images_override
from delivery.manifest_signing import ManifestSigner
from delivery.portal import FolderLinks, SigningInfo, manifest_json, render_version_page

AIRGAP_OPTION = "airgap_bundle"


class EdgeImagesMissing(Exception):
    """The bundle must carry the edge images, and their archive is not published."""


def wants_airgap_bundle(order: ConfiguratorPayload) -> bool:
    return order.target == "onprem" or order.options.get(AIRGAP_OPTION) is True


def published_edge_images(store: ArtifactStore, version: str) -> StoredObject | None:
    """The edge images archive of ``version`` in the bucket, with its size and sha256."""
    key = edge_images_key(version)
    head = store.head(key)
    if head is None:
        return None
    recorded = (head.get("Metadata") or {}).get(SHA256_METADATA)
    if recorded:
        return StoredObject(key=key, size=int(head["ContentLength"]), sha256=recorded)
    # Uploaded by other means than ours: hash it as stored.
    size, sha256 = store.digest(key)
    return StoredObject(key=key, size=size, sha256=sha256)


@dataclass(frozen=True)
class AirgapBundle:
    """The air-gap bundle of one order's portal version, streamed through a temporary file to S3."""

    store: ArtifactStore
    cfg_id: str
    order: ConfiguratorPayload
    stack: Sequence[StoredObject]
    images: EdgeImages
    images_archive: StoredObject | None
    signing: SigningInfo
    # The release record of the images: an offline site runs them by image id (see build).
    release: EdgeRelease | None = None

    @classmethod
    def prepare(
        cls,
        *,
        store: ArtifactStore,
        cfg_id: str,
        order: ConfiguratorPayload,
        stack: Sequence[StoredObject],
        images: EdgeImages,
        images_version: str,
        require_images: bool,
        signing: SigningInfo,
        release: EdgeRelease | None = None,
    ) -> AirgapBundle:
        archive = published_edge_images(store, images_version)
        if archive is None and require_images:
            raise EdgeImagesMissing(
                f"the air-gap bundle needs the edge images archive {edge_images_key(images_version)} "
                f"in bucket {store.bucket}, and it is not published: run "
                f"`python -m delivery.edge_image_archive --version {images_version}` where the images were built, "
                "then retry the order"
            )
        return cls(
            store=store,
            cfg_id=cfg_id,
            order=order,
            stack=stack,
            images=images,
            images_archive=archive,
            signing=signing,
            release=release,
        )

    def extra_artifacts(self) -> Sequence[tuple[ArtifactKind, StoredObject]]:
        return [] if self.images_archive is None else [("images", self.images_archive)]

    def build(self, *, claimed: PortalVersion, manifest: Manifest, signer: ManifestSigner) -> StoredObject:
        """The bundle of ``manifest``'s version, stored: its artifacts, and its own manifest (those
        artifacts plus the README, the page and the stack) signed by ``signer``."""
        version = claimed.version
        files = [BundleMember(name=a.name, size=a.size, open=self._reader(a.key)) for a in manifest.artifacts]
        # The page and the README show the artifacts; their own digests are listed beside them.
        index_html = render_version_page(
            manifest=manifest,
            order=self.order,
            links=FolderLinks(version),
            history=None,
            signing=self.signing,
        )
        stack = {obj.name: self.store.get(obj.key) for obj in self.stack}
        if self.release is not None and self.images_archive is not None:
            # After `docker load` a classic-store engine knows the images by id and tag, not by the
            # digest compose.yaml names: the override names them by id (the same content).
            stack[LOADED_IMAGES_NAME] = loaded_images_override(stack[COMPOSE_NAME], self.release)
        own_files = bundle_own_files(
            readme=render_airgap_readme(
                manifest=manifest,
                images=self.images,
                signing=self.signing,
                loaded_images=LOADED_IMAGES_NAME in stack,
            ),
            index_html=index_html.encode("utf-8"),
            stack=stack,
        )
        inner_bytes = manifest_json(with_bundle_files(manifest, own_files))
        with tempfile.TemporaryFile() as out:
            write_airgap_bundle(
                out,
                version=version,
                created_at=claimed.created_at,
                files=files,
                own_files=own_files,
                inner_manifest=inner_bytes,
                signature=signer.sign(inner_bytes),
                public_key_pem=signer.public_pem(),
            )
            key = order_key(self.cfg_id, "airgap", f"v{version}", bundle_name(version))
            return self.store.put_file(key, out, BUNDLE_CONTENT_TYPE)

    def _reader(self, key: str) -> Callable[[], BinaryIO]:
        return lambda: self.store.open(key)
