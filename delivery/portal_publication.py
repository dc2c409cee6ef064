"""Publishing one portal version of an order: manifest.json, its page and the order's index."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import ArtifactKind, Manifest, ManifestArtifact
from delivery.artifact_store import ArtifactStore, StoredObject, portal_key
from delivery.portal import PortalVersionSummary, manifest_json, render_portal_index, render_version_page
from delivery.portal_links import PortalLinks
from platform_db.deliveries import DeliveryRepository, PortalVersion

HTML = "text/html; charset=utf-8"


class PortalPublication(BaseModel):
    """What ``manifest`` hands on to ``email``."""

    model_config = ConfigDict(frozen=True)

    cfg_id: str
    version: int
    manifest_key: str
    page_url: str
    portal_url: str
    manifest: Manifest


def history_of(published: Sequence[PortalVersion], links: PortalLinks) -> list[PortalVersionSummary]:
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
    """The manifest with download links under ``links`` (a rotated token changes them all)."""
    artifacts = [
        a.model_copy(update={"url": links.artifact(manifest.version, a.name)}) for a in manifest.artifacts
    ]
    return manifest.model_copy(update={"artifacts": artifacts})


def load_manifest(store: ArtifactStore, cfg_id: str, version: int) -> Manifest:
    return Manifest.model_validate(json.loads(store.get(portal_key(cfg_id, version, "manifest.json"))))


def publish_portal_version(
    *,
    cfg_id: str,
    run_id: str,
    order: ConfiguratorPayload,
    flags: dict[str, Any],
    artifacts: Sequence[tuple[ArtifactKind, StoredObject]],
    store: ArtifactStore,
    deliveries: DeliveryRepository,
    links: PortalLinks,
) -> PortalPublication:
    """Publish version N (previous + 1; a retry of the same run republishes the same N)."""
    names = [obj.name for _, obj in artifacts]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        # A download link is /v<N>/<name>, so a name must be unique within a version.
        raise ValueError(f"artifact names must be unique in a portal version: {', '.join(duplicates)}")
    claimed = deliveries.claim_portal_version(cfg_id, run_id)
    manifest = Manifest(
        cfg_id=cfg_id,
        version=claimed.version,
        created_at=claimed.created_at,
        deployment_target=order.target,
        flags=flags,
        artifacts=[
            ManifestArtifact(
                kind=kind,
                name=obj.name,
                key=obj.key,
                size=obj.size,
                sha256=obj.sha256,
                url=links.artifact(claimed.version, obj.name),
            )
            for kind, obj in artifacts
        ],
    )
    published = [v for v in deliveries.portal_versions(cfg_id) if v.version != claimed.version]
    history = history_of(published, links)
    history.append(
        PortalVersionSummary(
            version=claimed.version,
            created_at=claimed.created_at,
            artifact_count=len(artifacts),
            page_url=links.version_page(claimed.version),
        )
    )
    manifest_key = portal_key(cfg_id, claimed.version, "manifest.json")
    store.put(manifest_key, manifest_json(manifest), "application/json")
    page = render_version_page(manifest=manifest, order=order, history=history)
    store.put(portal_key(cfg_id, claimed.version, "index.html"), page.encode(), HTML)
    # A retried step of an older run must not make its version the order's "latest" again.
    newest = max((v for v in published if v.version > claimed.version), key=lambda v: v.version, default=None)
    latest = manifest if newest is None else load_manifest(store, cfg_id, newest.version)
    store.put(
        portal_key(cfg_id, None, "index.html"),
        render_portal_index(latest=latest, order=order, history=history).encode(),
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
        page_url=links.version_page(claimed.version),
        portal_url=links.portal(),
        manifest=manifest,
    )
