"""The customer's download portal: manifest.json, one page per version and the order's landing page.

Everything here is pure: it takes the manifest and the order and returns bytes or HTML. Writing to
S3 is the caller's business, so the pages can be tested and previewed without any storage.

The same templates render the API's live pages (links under the customer's token, see
``delivery.portal_links``) and the pages stored in the bucket, whose links are relative
(:class:`FolderLinks`): a version folder copied off S3 with its manifest.json and artifacts, as an
air-gapped site receives it, opens from disk with no server, and the stored pages hold no token.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import Manifest
from delivery.manifest_signing import PUBLIC_KEY_NAME, SIGNATURE_NAME
from service_kit.canonical_json import canonical_json
from service_kit.timestamps import as_utc

MANIFEST_NAME = "manifest.json"
PAGE_NAME = "index.html"


@dataclass(frozen=True)
class PortalVersionSummary:
    """One line of an order's portal history."""

    version: int
    created_at: datetime
    artifact_count: int
    page_url: str
    # Set while the version is yanked: struck through, with the reason, and not downloadable.
    yanked_at: datetime | None = None
    yank_reason: str | None = None


@dataclass(frozen=True)
class SigningInfo:
    """Which key signed a version's manifest.json, as the page shows it."""

    key_id: str
    fingerprint: str


class PageLinks(Protocol):
    """Where a portal page's links lead: ``delivery.portal_links.PortalLinks`` or :class:`FolderLinks`."""

    def artifact(self, version: int, name: str) -> str: ...
    def version_page(self, version: int) -> str: ...
    def public_key(self, version: int, key_id: str) -> str: ...


@dataclass(frozen=True)
class FolderLinks:
    """Relative links of a page stored in the bucket, from the folder it lies in.

    ``version`` is the version folder of the page (``portal/<cfg_id>/v<N>/index.html``, whose
    artifacts lie beside it in a copy of the folder); ``None`` is the order's folder
    (``portal/<cfg_id>/index.html``, with the version folders below it). ``index.html`` is named
    in every link: a browser opening files from disk shows no folder's index by itself.
    """

    version: int | None = None

    def _folder(self, version: int) -> str:
        if version == self.version:
            return ""
        up = "" if self.version is None else "../"
        return f"{up}v{int(version)}/"

    def artifact(self, version: int, name: str) -> str:
        return f"{self._folder(version)}{name}"

    def version_page(self, version: int) -> str:
        return f"{self._folder(version)}{PAGE_NAME}"

    def public_key(self, version: int, key_id: str) -> str:
        # The copy beside the manifest; its fingerprint is compared with the one the live portal shows.
        return f"{self._folder(version)}{PUBLIC_KEY_NAME}"


def manifest_json(manifest: Manifest) -> bytes:
    """The manifest as stored: no links, in the canonical JSON form (see service_kit.canonical_json).

    A stable byte form means the same manifest always hashes the same, so a re-publish of an
    unchanged version is recognisable.
    """
    data = manifest.as_stored().model_dump(mode="json", exclude={"artifacts": {"__all__": {"url"}}})
    # Revalidate the dumped form: a manifest built with model_construct() or mutated through
    # its dict would otherwise reach customers unchecked.
    Manifest.model_validate(data)
    return canonical_json(data)


def render_version_page(
    *,
    manifest: Manifest,
    order: ConfiguratorPayload,
    links: PageLinks,
    history: list[PortalVersionSummary] | None,
    commissioning_token: str | None = None,
    signing: SigningInfo | None = None,
    yanked: PortalVersionSummary | None = None,
) -> str:
    """The page of one portal version (``portal/<cfg_id>/v<N>/index.html``).

    ``history`` is ``None`` for the page stored in the version folder: a copy of that folder holds
    no other version, and a stored list would miss every version published after it.
    ``commissioning_token`` only where the customer's stable link is the reader (the API's live
    pages), never in a page stored in the bucket. ``yanked``: the version's summary while it is
    yanked (the page shows it withdrawn, with the reason, and offers no download).
    """
    return _render(
        "portal_version.html.j2",
        manifest=manifest,
        order=order,
        links=links,
        history=history,
        commissioning_token=commissioning_token,
        signing=signing,
        yanked=yanked if yanked is not None and yanked.yank_reason is not None else None,
    )


def render_portal_index(
    *,
    latest: Manifest | None,
    order: ConfiguratorPayload,
    links: PageLinks,
    history: list[PortalVersionSummary],
    commissioning_token: str | None = None,
    signing: SigningInfo | None = None,
) -> str:
    """The order's landing page (``portal/<cfg_id>/index.html``): the current version and the history.

    ``latest`` is the current version (the newest not yanked), ``None`` when every one is yanked.
    """
    return _render(
        "portal_index.html.j2",
        manifest=latest,
        order=order,
        links=links,
        history=history,
        commissioning_token=commissioning_token,
        signing=signing,
    )


def _render(template: str, *, history: list[PortalVersionSummary] | None, **context: Any) -> str:
    return (
        template_environment()
        .get_template(template)
        .render(
            history=None if history is None else _newest_first(history),
            manifest_name=MANIFEST_NAME,
            signature_name=SIGNATURE_NAME,
            **context,
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
    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")


def utc_iso(moment: datetime) -> str:
    """Machine-readable form for ``<time datetime=...>``."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def display_value(value: Any) -> str:
    """Option and flag values as a customer reads them: yes/no for booleans, JSON for structures."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _newest_first(history: list[PortalVersionSummary]) -> list[PortalVersionSummary]:
    return sorted(history, key=lambda summary: summary.version, reverse=True)
