"""Yanking a portal version: withdrawn, shown struck through with the reason, its downloads gone (410).

The yank is stored in platform_db (``portal_versions.yanked_at``, ``yank_reason``); the pages in the
bucket are rendered again so a copy of the order's folder tells the same. The current version is
the newest one not yanked (``contracts.records.current_version``).
"""

from __future__ import annotations

from typing import Protocol

from contracts.configurator import ConfiguratorPayload
from contracts.records import PortalVersion
from delivery.artifact_store import ArtifactStore
from delivery.portal_publication import PortalVersions, store_portal_pages

MAX_REASON_CHARS = 500


class YankableVersions(PortalVersions, Protocol):
    def set_yank(self, cfg_id: str, version: int, reason: str | None) -> PortalVersion: ...


def yank_reason(text: str) -> str:
    """The reason as the customer reads it: one line, not empty, at most 500 characters."""
    reason = " ".join(text.split())
    if not reason:
        raise ValueError("reason: a yank needs a reason the customer can read")
    if len(reason) > MAX_REASON_CHARS:
        raise ValueError(f"reason: at most {MAX_REASON_CHARS} characters")
    return reason


def set_yank(
    *,
    cfg_id: str,
    version: int,
    reason: str | None,
    order: ConfiguratorPayload,
    store: ArtifactStore,
    deliveries: YankableVersions,
) -> PortalVersion:
    """Yank version ``version`` with ``reason`` (or un-yank it: ``None``) and render its pages again.

    KeyError when the order has no such published version.
    """
    changed = deliveries.set_yank(cfg_id, version, None if reason is None else yank_reason(reason))
    store_portal_pages(cfg_id=cfg_id, order=order, store=store, deliveries=deliveries, versions=[version])
    return changed
