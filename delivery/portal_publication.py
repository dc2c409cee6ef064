"""Publishing one portal version of an order: manifest.json, its page and the order's index."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import ArtifactKind, Manifest, ManifestArtifact
from delivery.artifact_store import ArtifactStore, StoredObject, portal_key
from delivery.portal import PortalVersionSummary, manifest_json, render_portal_index, render_version_page
from platform_db.deliveries import DeliveryRepository

HTML = "text/html; charset=utf-8"


class PortalPublication(BaseModel):
    """What ``manifest`` hands on to ``email``."""

    model_config = ConfigDict(frozen=True)

    cfg_id: str
    version: int
    manifest_key: str
    page_url: str
    manifest: Manifest


def publish_portal_version(
    *,
    cfg_id: str,
    run_id: str,
    order: ConfiguratorPayload,
    flags: dict[str, Any],
    artifacts: Sequence[tuple[ArtifactKind, StoredObject]],
    store: ArtifactStore,
    deliveries: DeliveryRepository,
    link_for: Callable[[str], str],
) -> PortalPublication:
    """Publish version N (previous + 1; a retry of the same run republishes the same N)."""
    claimed = deliveries.claim_portal_version(cfg_id, run_id)
    manifest = Manifest(
        cfg_id=cfg_id,
        version=claimed.version,
        created_at=claimed.created_at,
        deployment_target=order.target,
        flags=flags,
        artifacts=[
            ManifestArtifact(kind=kind, name=obj.name, key=obj.key, size=obj.size, sha256=obj.sha256, url=link_for(obj.key))
            for kind, obj in artifacts
        ],
    )
    page_key = portal_key(cfg_id, claimed.version, "index.html")
    page_url = link_for(page_key)
    published = deliveries.portal_versions(cfg_id)
    history = [
        PortalVersionSummary(
            version=earlier.version,
            created_at=earlier.created_at,
            artifact_count=earlier.artifact_count or 0,
            page_url=earlier.page_url or "",
        )
        for earlier in published
        if earlier.version != claimed.version
    ]
    history.append(
        PortalVersionSummary(
            version=claimed.version, created_at=claimed.created_at, artifact_count=len(artifacts), page_url=page_url
        )
    )
    manifest_key = portal_key(cfg_id, claimed.version, "manifest.json")
    store.put(manifest_key, manifest_json(manifest), "application/json")
    store.put(page_key, render_version_page(manifest=manifest, order=order, history=history).encode(), HTML)
    # A retried older run must not turn the order's page back to its version: the page shows the newest.
    newest = max(
        (earlier for earlier in published if earlier.version > claimed.version), key=lambda v: v.version, default=None
    )
    latest = manifest
    if newest is not None and newest.manifest_key is not None:
        latest = Manifest.model_validate(json.loads(store.get(newest.manifest_key)))
    store.put(
        portal_key(cfg_id, None, "index.html"),
        render_portal_index(latest=latest, order=order, history=history).encode(),
        HTML,
    )
    deliveries.record_publication(
        cfg_id, claimed.version, manifest_key=manifest_key, page_url=page_url, artifact_count=len(artifacts)
    )
    return PortalPublication(
        cfg_id=cfg_id, version=claimed.version, manifest_key=manifest_key, page_url=page_url, manifest=manifest
    )
