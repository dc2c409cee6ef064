import html
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.configurator import ConfiguratorPayload
from contracts.manifest import Manifest
from delivery.portal import (
    FolderLinks,
    PortalVersionSummary,
    human_size,
    manifest_json,
    publish_manifest_schema,
    render_portal_index,
    render_version_page,
    template_environment,
)
from tests.delivery.conftest import customer_named, make_order, site_named

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CFG_ID = "0b7c3f2e-1c9a-4d7e-9a51-6f1f2b3c4d5e"
PUBLISHED = datetime(2025, 3, 1, 14, 5, 9, tzinfo=UTC)


@dataclass(frozen=True)
class LiveLinks:
    """Links as the API's live pages have them, with a query to show that every href is escaped."""

    def artifact(self, version: int, name: str) -> str:
        return f"https://api.example.com/portal/tok/v{version}/{name}?sig=1&exp=2"

    def version_page(self, version: int) -> str:
        return f"https://api.example.com/portal/tok/v{version}"


LIVE = LiveLinks()


def portal_order(**parts: Any) -> ConfiguratorPayload:
    """A cloud order with a meter, a battery and options, for the pages to show them all."""
    shown: dict[str, Any] = {
        "deployment": {"target": "cloud", "region": "eu-central-1", "instance_size": "t3.medium"},
        "devices": [
            {"id": "meter-main", "type": "power_meter", "model": "PM5560"},
            {"id": "battery-1", "type": "battery", "model": "BYD HVM"},
        ],
        "options": {"retention_days": 365, "remote_support": True, "tariff": "dynamic"},
    }
    return make_order(**{**shown, **parts})


def make_manifest(version: int = 3, **overrides: Any) -> Manifest:
    data: dict[str, Any] = {
        "cfg_id": CFG_ID,
        "version": version,
        "created_at": PUBLISHED,
        "deployment_target": "cloud",
        "flags": {"hmi_enabled": True, "profile": "standard"},
        "artifacts": [
            {
                "kind": "edp",
                "name": "dtm.json",
                "key": f"orders/{CFG_ID}/edp/dtm.json",
                "size": 1536,
                "sha256": "a" * 64,
            },
            {
                "kind": "cfn",
                "name": "cfn.yaml",
                "key": f"orders/{CFG_ID}/cfn/cfn.yaml",
                "size": 512,
                "sha256": "b" * 64,
            },
            {
                "kind": "apk",
                "name": "ems-hmi-1.2.0.apk",
                "key": "apk/ems-hmi-1.2.0.apk",
                "size": 23_456_789,
                "sha256": "c" * 64,
            },
        ],
    }
    data.update(overrides)
    return Manifest.model_validate(data)


def history_up_to(version: int, links: FolderLinks | None = None) -> list[PortalVersionSummary]:
    # Deliberately oldest first: the pages must sort, whatever order the caller passes.
    return [
        PortalVersionSummary(
            version=n,
            created_at=PUBLISHED - timedelta(days=version - n),
            artifact_count=n,
            page_url=f"https://portal.example.com/{CFG_ID}/v{n}/index.html"
            if links is None
            else links.version_page(n),
        )
        for n in range(1, version + 1)
    ]


@pytest.fixture
def order() -> ConfiguratorPayload:
    return portal_order()


def history_rows(page: str) -> list[str]:
    section = page.split("All versions", 1)[1]
    return re.findall(r"<tr[^>]*>.*?</tr>", section, flags=re.S)[1:]  # skip the header row


@pytest.mark.parametrize("render", ["version", "index"])
def test_page_lists_every_artifact_with_checksum_size_and_download_link(
    render: str, order: ConfiguratorPayload
) -> None:
    manifest = make_manifest()
    page = (
        render_version_page(manifest=manifest, order=order, links=LIVE, history=history_up_to(3))
        if render == "version"
        else render_portal_index(latest=manifest, order=order, links=LIVE, history=history_up_to(3))
    )

    for artifact in manifest.artifacts:
        assert artifact.name in page
        assert f'<code class="sha256">{artifact.sha256}</code>' in page
        assert f'href="{html.escape(LIVE.artifact(manifest.version, artifact.name))}"' in page
        assert f'<span class="kind">{artifact.kind}</span>' in page
    assert "1.5 KiB" in page and "1,536 bytes" in page
    assert "22.4 MiB" in page and "23,456,789 bytes" in page


def test_version_page_shows_the_order_and_the_version(order: ConfiguratorPayload) -> None:
    page = render_version_page(manifest=make_manifest(), order=order, links=LIVE, history=history_up_to(3))

    for text in (
        "Analytical Engines GmbH",
        "Plant Nord",
        "Ada Lovelace",
        CFG_ID,
        "Cloud (AWS)",
        "eu-central-1",
    ):
        assert text in page
    assert "2025-03-01 14:05:09 UTC" in page
    assert "hmi_enabled" in page and "standard" in page
    assert "PM5560" in page and "dynamic" in page


def test_page_is_self_contained_html_with_charset_and_title(order: ConfiguratorPayload) -> None:
    page = render_version_page(manifest=make_manifest(), order=order, links=LIVE, history=history_up_to(3))

    assert page.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in page
    title = re.search(r"<title>(.*?)</title>", page, flags=re.S)
    assert title is not None
    assert "Plant Nord" in title.group(1) and "version 3" in title.group(1)
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert " src=" not in page.lower()


def test_version_page_history_is_newest_first_links_every_version_and_marks_this_one(
    order: ConfiguratorPayload,
) -> None:
    page = render_version_page(
        manifest=make_manifest(version=2), order=order, links=LIVE, history=history_up_to(3)
    )

    rows = history_rows(page)
    assert [re.search(r">Version (\d+)</a>", row).group(1) for row in rows] == ["3", "2", "1"]  # type: ignore[union-attr]
    for row, version in zip(rows, (3, 2, 1), strict=True):
        assert f'href="https://portal.example.com/{CFG_ID}/v{version}/index.html"' in row
    marked = [row for row in rows if "this page" in row]
    assert len(marked) == 1 and ">Version 2</a>" in marked[0]


def test_index_shows_the_latest_version_and_the_whole_history(order: ConfiguratorPayload) -> None:
    page = render_portal_index(
        latest=make_manifest(version=3), order=order, links=LIVE, history=history_up_to(3)
    )

    assert "version 3" in page
    rows = history_rows(page)
    assert len(rows) == 3
    latest = [row for row in rows if "current" in row]
    assert len(latest) == 1 and ">Version 3</a>" in latest[0]
    assert f'href="https://portal.example.com/{CFG_ID}/v1/index.html"' in rows[-1]


def test_history_entry_without_a_page_is_listed_without_a_link(order: ConfiguratorPayload) -> None:
    history = [PortalVersionSummary(1, PUBLISHED, 2, ""), *history_up_to(3)[1:]]

    page = render_version_page(manifest=make_manifest(version=3), order=order, links=LIVE, history=history)

    assert 'href=""' not in page
    assert "Version 1" in history_rows(page)[-1]


def test_onprem_order_is_shown_as_an_appliance() -> None:
    onprem = portal_order(deployment={"target": "onprem"})
    manifest = make_manifest(deployment_target="onprem")

    page = render_version_page(manifest=manifest, order=onprem, links=LIVE, history=history_up_to(3))

    assert "On-premises appliance" in page
    assert "Cloud (AWS)" not in page


def test_customer_text_is_escaped_everywhere() -> None:
    fields = ("name", "company", "site", "model", "option", "flag")
    # A distinct payload per field, so every single field has to show up escaped.
    payloads = {field: f"<script>alert({n})</script>" for n, field in enumerate(fields, start=1)}
    order = portal_order(
        customer=customer_named(payloads["name"], company=payloads["company"]),
        site=site_named(payloads["site"]),
        devices=[{"id": "meter-main", "type": "power_meter", "model": payloads["model"]}],
        options={"label": payloads["option"]},
    )
    manifest = make_manifest(flags={"note": payloads["flag"], "nested": {"text": "<b>bold</b>"}})

    pages = [
        render_version_page(manifest=manifest, order=order, links=LIVE, history=history_up_to(3)),
        render_portal_index(latest=manifest, order=order, links=LIVE, history=history_up_to(3)),
    ]

    for page in pages:
        assert "<script" not in page.lower()
        assert "<b>bold</b>" not in page
        for payload in payloads.values():
            assert html.escape(payload) in page, payload
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize(
    "name", ["portal_version.html.j2", "portal_index.html.j2", "email.html.j2", "_portal_macros.html.j2"]
)
def test_html_templates_autoescape(name: str) -> None:
    environment = template_environment()

    assert environment.autoescape(name) is True  # type: ignore[operator]


def test_naive_and_non_utc_timestamps_are_shown_in_utc(order: ConfiguratorPayload) -> None:
    berlin = timezone(timedelta(hours=2))
    manifest = make_manifest(created_at=datetime(2025, 6, 1, 14, 0, 0, tzinfo=berlin))
    history = [PortalVersionSummary(1, datetime(2025, 5, 1, 8, 30, 0), 2, "https://portal.example.com/v1/")]

    page = render_version_page(manifest=manifest, order=order, links=LIVE, history=history)

    assert "2025-06-01 12:00:00 UTC" in page
    assert "2025-05-01 08:30:00 UTC" in page


@pytest.mark.parametrize(
    ("size", "expected"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB")],
)
def test_human_size(size: int, expected: str) -> None:
    assert human_size(size) == expected


def test_manifest_json_is_canonical_and_parses_back() -> None:
    manifest = make_manifest()

    data = manifest_json(manifest)

    assert data.endswith(b"}\n")
    parsed = json.loads(data)
    assert list(parsed) == sorted(parsed)
    assert data.decode() == json.dumps(parsed, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert Manifest.model_validate_json(data) == manifest
    assert manifest_json(make_manifest()) == data


def test_manifest_json_refuses_an_invalid_manifest() -> None:
    broken = make_manifest().model_copy(update={"version": 0})  # model_copy does not validate

    with pytest.raises(ValidationError):
        manifest_json(broken)


def test_published_manifest_schema_matches_the_model(tmp_path: Path) -> None:
    committed = PROJECT_ROOT / "schemas" / "manifest.schema.json"
    generated = tmp_path / "manifest.schema.json"

    publish_manifest_schema(generated)

    assert committed.read_text(encoding="utf-8") == generated.read_text(encoding="utf-8"), (
        "schemas/manifest.schema.json is out of date; regenerate it with "
        "python -c 'from pathlib import Path; from delivery.portal import publish_manifest_schema; "
        'publish_manifest_schema(Path("schemas/manifest.schema.json"))\''
    )
    assert json.loads(generated.read_text())["title"] == "Manifest"


def hrefs(page: str) -> list[str]:
    return [html.unescape(href) for href in re.findall(r'href="([^"]*)"', page)]


def test_folder_links_are_relative_to_the_folder_the_page_lies_in() -> None:
    version_folder, order_folder = FolderLinks(3), FolderLinks()

    assert version_folder.artifact(3, "dtm.json") == "dtm.json"
    assert version_folder.version_page(3) == "index.html"
    assert version_folder.artifact(1, "dtm.json") == "../v1/dtm.json"
    assert order_folder.artifact(3, "dtm.json") == "v3/dtm.json"
    assert order_folder.version_page(1) == "v1/index.html"


def test_stored_version_page_links_only_the_files_beside_it(order: ConfiguratorPayload) -> None:
    manifest = make_manifest(version=3)

    page = render_version_page(manifest=manifest, order=order, links=FolderLinks(3), history=None)

    assert hrefs(page) == [*(a.name for a in manifest.artifacts), "manifest.json"]
    # A copy of the folder holds this version alone, and a stored list of versions would go stale.
    assert "All versions" not in page
    assert "http" not in page and "tok" not in page


def test_stored_order_index_links_the_version_folders(order: ConfiguratorPayload) -> None:
    manifest = make_manifest(version=3)

    page = render_portal_index(
        latest=manifest, order=order, links=FolderLinks(), history=history_up_to(3, FolderLinks())
    )

    assert hrefs(page) == [
        *(f"v3/{a.name}" for a in manifest.artifacts),
        "v3/manifest.json",
        "v3/index.html",
        "v2/index.html",
        "v1/index.html",
    ]
    assert "http" not in page


def test_manifest_json_stores_no_link() -> None:
    linked = make_manifest()
    linked = linked.model_copy(
        update={
            "artifacts": [
                a.model_copy(update={"url": LIVE.artifact(linked.version, a.name)}) for a in linked.artifacts
            ]
        }
    )

    stored = json.loads(manifest_json(linked))

    assert stored["schema_version"] == 3
    assert [sorted(a) for a in stored["artifacts"]] == [["key", "kind", "name", "sha256", "size"]] * 3
    assert Manifest.model_validate(stored) == make_manifest()
