"""Publishing one portal version of an order: manifest.json, its page and the order's index.

What is stored holds no link under the customer's token (the token rotates): the manifest lists
each artifact's name, key, size and sha256, and the pages link relatively (``FolderLinks``). The
API adds the links when it serves either (``with_links``, ``api.portal``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import ArtifactKind, Manifest, ManifestArtifact
from contracts.records import PortalVersion
from delivery.artifact_store import ArtifactStore, StoredObject, portal_key
from delivery.portal import (
    MANIFEST_NAME,
    PAGE_NAME,
    FolderLinks,
    PageLinks,
    PortalVersionSummary,
    manifest_json,
    render_portal_index,
    render_version_page,
)
from delivery.portal_links import PortalLinks

HTML = "text/html; charset=utf-8"


class PortalVersions(Protocol):
    """Where an order's portal versions are numbered (``platform_db.deliveries.DeliveryRepository``)."""

    def claim_portal_version(self, cfg_id: str, run_id: str) -> PortalVersion: ...
    def portal_versions(self, cfg_id: str) -> Sequence[PortalVersion]: ...
    def record_publication(
        self, cfg_id: str, version: int, *, manifest_key: str, artifact_count: int
    ) -> None: ...


class PortalPublication(BaseModel):
    """What ``manifest`` hands on to ``email``: the published version, and no link under the token
    (the email step makes the order's link when it sends: the token may be rotated in between)."""

    model_config = ConfigDict(frozen=True)

    cfg_id: str
    version: int
    manifest_key: str
    manifest: Manifest


def history_of(published: Sequence[PortalVersion], links: PageLinks) -> list[PortalVersionSummary]:
    return [
        PortalVersionSummary(
            version=version.version,
            created_at=version.created_at,
            artifact_count=version.artifact_count or 0,
            page_url=links.version_page(version.version),
        )
        for version in published
    ]


def with_links(manifest: Manifest, links: PortalLinks) -> Manifest:
    """The manifest as the portal serves it: each artifact's download link under ``links``."""
    artifacts = [
        a.model_copy(update={"url": links.artifact(manifest.version, a.name)}) for a in manifest.artifacts
    ]
    return manifest.model_copy(update={"artifacts": artifacts})


def load_manifest(store: ArtifactStore, cfg_id: str, version: int) -> Manifest:
    """A stored manifest of any schema version, as stored now (links of earlier versions dropped)."""
    return Manifest.model_validate_json(store.get(portal_key(cfg_id, version, MANIFEST_NAME))).as_stored()


def publish_portal_version(
    *,
    cfg_id: str,
    run_id: str,
    order: ConfiguratorPayload,
    flags: dict[str, Any],
    artifacts: Sequence[tuple[ArtifactKind, StoredObject]],
    store: ArtifactStore,
    deliveries: PortalVersions,
) -> PortalPublication:
    """Publish version N (previous + 1; a retry of the same run republishes the same N)."""
    names = [obj.name for _, obj in artifacts]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        # A download link is /v<N>/<name>, and a file of a copied version folder is <name>, so a
        # name must be unique within a version.
        raise ValueError(f"artifact names must be unique in a portal version: {', '.join(duplicates)}")
    claimed = deliveries.claim_portal_version(cfg_id, run_id)
    manifest = Manifest(
        cfg_id=cfg_id,
        version=claimed.version,
        created_at=claimed.created_at,
        deployment_target=order.target,
        flags=flags,
        artifacts=[
            ManifestArtifact(kind=kind, name=obj.name, key=obj.key, size=obj.size, sha256=obj.sha256)
            for kind, obj in artifacts
        ],
    )
    manifest_key = portal_key(cfg_id, claimed.version, MANIFEST_NAME)
    store.put(manifest_key, manifest_json(manifest), "application/json")
    page = render_version_page(
        manifest=manifest, order=order, links=FolderLinks(claimed.version), history=None
    )
    store.put(portal_key(cfg_id, claimed.version, PAGE_NAME), page.encode(), HTML)
    published = [v for v in deliveries.portal_versions(cfg_id) if v.version != claimed.version]
    order_folder = FolderLinks()
    history = history_of(published, order_folder)
    history.append(
        PortalVersionSummary(
            version=claimed.version,
            created_at=claimed.created_at,
            artifact_count=len(artifacts),
            page_url=order_folder.version_page(claimed.version),
        )
    )
    # A retried step of an older run must not make its version the order's "latest" again.
    newest = max((v for v in published if v.version > claimed.version), key=lambda v: v.version, default=None)
    latest = manifest if newest is None else load_manifest(store, cfg_id, newest.version)
    store.put(
        portal_key(cfg_id, None, PAGE_NAME),
        render_portal_index(latest=latest, order=order, links=order_folder, history=history).encode(),
        HTML,
    )
    deliveries.record_publication(
        cfg_id,
        claimed.version,
        manifest_key=manifest_key,
        artifact_count=len(artifacts),
    )
    return PortalPublication(
        cfg_id=cfg_id,
        version=claimed.version,
        manifest_key=manifest_key,
        manifest=manifest,
    )
