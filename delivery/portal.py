"""The customer's download portal: manifest.json, one page per version and the order's landing page.

Everything here is pure: it takes the manifest and the order and returns bytes or HTML. Writing to
S3 is the caller's business, so the pages can be tested and previewed without any storage.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import Manifest


@dataclass(frozen=True)
class PortalVersionSummary:
    """One line of an order's portal history."""

    version: int
    created_at: datetime
    artifact_count: int
    page_url: str


def manifest_json(manifest: Manifest) -> bytes:
    """The manifest as published: sorted keys, two-space indent, trailing newline, UTF-8.

    A stable byte form means the same manifest always hashes the same, so a re-publish of an
    unchanged version is recognisable.
    """
    data = manifest.model_dump(mode="json")
    # Revalidate the dumped form: a manifest built with model_construct() or mutated through
    # its dict would otherwise reach customers unchecked.
    Manifest.model_validate(data)
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def render_version_page(
    *,
    manifest: Manifest,
    order: ConfiguratorPayload,
    history: list[PortalVersionSummary],
    commissioning_token: str | None = None,
) -> str:
    """The page of one portal version (``portal/<cfg_id>/v<N>/index.html``).

    ``commissioning_token`` only where the customer's stable link is the reader (the API's live
    pages), never in a page stored in the bucket.
    """
    return (
        template_environment()
        .get_template("portal_version.html.j2")
        .render(
            manifest=manifest,
            order=order,
            history=_newest_first(history),
            commissioning_token=commissioning_token,
        )
    )


def render_portal_index(
    *,
    latest: Manifest,
    order: ConfiguratorPayload,
    history: list[PortalVersionSummary],
    commissioning_token: str | None = None,
) -> str:
    """The order's landing page (``portal/<cfg_id>/index.html``): the latest version and the history."""
    return (
        template_environment()
        .get_template("portal_index.html.j2")
        .render(
            manifest=latest,
            order=order,
            history=_newest_first(history),
            commissioning_token=commissioning_token,
        )
    )


def publish_manifest_schema(path: Path) -> None:
    """Write the manifest's JSON schema, the contract that consumers of manifest.json code against."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(Manifest.model_json_schema(), indent=2) + "\n", encoding="utf-8")


@functools.cache
def template_environment() -> Environment:
    """The Jinja environment for every delivery template (portal pages and the delivery email).

    ``.html.j2`` and ``.j2`` names autoescape, so customer text (names, site, device models,
    options) can never inject markup. Plain-text templates opt out explicitly with an
    ``{% autoescape false %}`` block, which keeps the safe default for anything new.
    """
    environment = Environment(
        loader=PackageLoader("delivery", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        # A typo in a template must fail the build, not ship an empty cell to a customer.
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["human_size"] = human_size
    environment.filters["utc"] = utc_text
    environment.filters["utc_iso"] = utc_iso
    environment.filters["display_value"] = display_value
    return environment


def human_size(size: int) -> str:
    """Binary units, one decimal: what a customer compares against the free space of a USB stick."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def utc_text(moment: datetime) -> str:
    """``2025-03-01 14:05:09 UTC``: readable, and unambiguous for customers in any timezone."""
    return _as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_iso(moment: datetime) -> str:
    """Machine-readable form for ``<time datetime=...>``."""
    return _as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def display_value(value: Any) -> str:
    """Option and flag values as a customer reads them: yes/no for booleans, JSON for structures."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _as_utc(moment: datetime) -> datetime:
    # Timestamps without a zone are produced by our own pipeline, which works in UTC.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _newest_first(history: list[PortalVersionSummary]) -> list[PortalVersionSummary]:
    return sorted(history, key=lambda summary: summary.version, reverse=True)
