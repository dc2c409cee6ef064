"""SBOMs: the edge images' from synthetic ``docker save`` archives, and a portal version's."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from delivery.edge_bundle import EdgeImages
from delivery.sbom import (
    SERIAL_NAMESPACE,
    edge_images_sbom,
    sbom_components,
    version_sbom,
)

CFG_ID = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"
CREATED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RELEASE = "1.2.3"
IMAGES = EdgeImages.release("", RELEASE)
SITE = "usr/local/lib/python3.11/site-packages"

DPKG_BASE = b"""Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: zlib1g
Status: install ok installed
Architecture: amd64
Source: zlib
Version: 1:1.2.13.dfsg-1

Package: old-tool
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1-1
"""
# The gateway's layer installs ca-certificates: dpkg rewrites the whole status file.
DPKG_GATEWAY = (
    DPKG_BASE
    + b"""
Package: ca-certificates
Status: install ok installed
Architecture: all
Version: 20230311
"""
)
TZDATA_CONTROL = b"""Package: tzdata
Architecture: all
Version: 2024a-0+deb12u1
"""


def metadata(name: str, version: str, **headers: str) -> bytes:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"{key.replace('_', '-')}: {value}" for key, value in headers.items()]
    return ("\n".join(lines) + "\n\nA long description.\n").encode()


def layer(entries: dict[str, bytes | None], *, gz: bool = False) -> bytes:
    """A layer tar: path → content (None: a directory; a ``.wh.`` name is a whiteout)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in entries.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    data = out.getvalue()
    return gzip.compress(data, mtime=0) if gz else data


def docker_save(path: Path, images: list[tuple[list[str], list[str]]], layers: dict[str, bytes]) -> Path:
    manifest = [{"Config": "config.json", "RepoTags": tags, "Layers": names} for tags, names in images]
    with tarfile.open(path, mode="w") as tar:
        for name, content in {**layers, "manifest.json": json.dumps(manifest).encode()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def blob(content: bytes) -> str:
    return f"blobs/sha256/{hashlib.sha256(content).hexdigest()}"


# The base layer in Docker 20.10's format; the images' own layers as OCI blobs, one gzip, one not.
BASE = layer(
    {
        "var/": None,
        "var/lib/dpkg/status": DPKG_BASE,
        f"{SITE}/pip-24.0.dist-info/METADATA": metadata("pip", "24.0", License="MIT"),
        f"{SITE}/setuptools-69.0.0.dist-info/METADATA": metadata("setuptools", "69.0.0"),
        f"{SITE}/wheel-0.42.0.dist-info/METADATA": metadata("wheel", "0.42.0"),
        "usr/bin/python3": b"\x7fELF" + b"\0" * 4096,
    }
)
GATEWAY = layer(
    {
        "./var/lib/dpkg/status": DPKG_GATEWAY,
        f"{SITE}/.wh.setuptools-69.0.0.dist-info": b"",
        f"{SITE}/pymodbus-3.16.0.dist-info/METADATA": metadata(
            "pymodbus", "3.16.0", License_Expression="BSD-3-Clause OR MIT"
        ),
    },
    gz=True,
)
FIXTURES = layer(
    {
        # Opaque: the site-packages below are gone, only what this layer writes there stays.
        f"{SITE}/.wh..wh..opq": b"",
        f"{SITE}/pip-24.0.dist-info/METADATA": metadata("pip", "24.0", License="MIT"),
        f"{SITE}/Python_Dateutil-2.9.0.dist-info/METADATA": metadata(
            "Python_Dateutil", "2.9.0", License="Dual License\n  with a second line"
        ),
        "var/lib/dpkg/status.d/tzdata": TZDATA_CONTROL,
        "var/lib/dpkg/status.d/tzdata.md5sums": b"d41d8cd98f00b204e9800998ecf8427e  usr/share/zoneinfo/UTC\n",
    }
)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return docker_save(
        tmp_path / "edge-images.tar",
        [
            (["ems-edge-gateway:1.2.3"], ["aaaa/layer.tar", blob(GATEWAY)]),
            (["ems-industrial-fixtures:1.2.3"], ["aaaa/layer.tar", blob(FIXTURES)]),
            (["busybox:latest"], ["aaaa/layer.tar"]),
        ],
        {"aaaa/layer.tar": BASE, blob(GATEWAY): GATEWAY, blob(FIXTURES): FIXTURES},
    )


def assert_valid(document: bytes) -> dict[str, Any]:
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(document.decode())
    assert error is None, error
    data: dict[str, Any] = json.loads(document)
    assert data["specVersion"] == "1.6"
    return data


def images_of(component: dict[str, Any]) -> set[str]:
    return {p["value"] for p in component.get("properties", []) if p["name"] == "ems:image"}


def by_purl(document: bytes) -> dict[str, dict[str, Any]]:
    return {c["purl"]: c for c in sbom_components(document) if "purl" in c}


GATEWAY_REF, FIXTURES_REF = IMAGES.gateway, IMAGES.fixtures


def test_edge_sbom_replays_each_images_layers(archive: Path) -> None:
    document = edge_images_sbom(archive, version=RELEASE, images=IMAGES)
    data = assert_valid(document)
    found = {purl: images_of(component) for purl, component in by_purl(document).items()}
    both = {GATEWAY_REF, FIXTURES_REF}
    assert found == {
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64": both,
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64": both,
        "pkg:deb/debian/ca-certificates@20230311?arch=all": {GATEWAY_REF},
        "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all": {FIXTURES_REF},
        "pkg:pypi/pip@24.0": both,
        "pkg:pypi/pymodbus@3.16.0": {GATEWAY_REF},
        "pkg:pypi/python-dateutil@2.9.0": {FIXTURES_REF},
        # Under the fixtures' opaque site-packages; setuptools is whited out of the gateway too.
        "pkg:pypi/wheel@0.42.0": {GATEWAY_REF},
    }
    subject = data["metadata"]["component"]
    assert (subject["name"], subject["version"], subject["type"]) == (
        "ems-edge-images",
        RELEASE,
        "application",
    )
    assert images_of(subject) == both
    assert "timestamp" not in data["metadata"]


def test_edge_sbom_component_fields(archive: Path) -> None:
    components = by_purl(edge_images_sbom(archive, version=RELEASE, images=IMAGES))
    libc = components["pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64"]
    assert (libc["type"], libc["name"], libc["version"]) == ("library", "libc6", "2.36-9+deb12u4")
    assert {"name": "ems:deb:source", "value": "glibc"} in libc["properties"]
    assert libc["bom-ref"] == libc["purl"]
    assert components["pkg:pypi/pip@24.0"]["licenses"] == [{"license": {"id": "MIT"}}]
    assert components["pkg:pypi/pymodbus@3.16.0"]["licenses"] == [{"expression": "BSD-3-Clause OR MIT"}]
    # A multi-line License is license text, not a name: left out.
    dateutil = components["pkg:pypi/python-dateutil@2.9.0"]
    assert dateutil["name"] == "Python_Dateutil" and "licenses" not in dateutil
    refs = [c["bom-ref"] for c in sbom_components(edge_images_sbom(archive, version=RELEASE, images=IMAGES))]
    assert len(refs) == len(set(refs))


def test_edge_sbom_is_deterministic(archive: Path, tmp_path: Path) -> None:
    first = edge_images_sbom(archive, version=RELEASE, images=IMAGES)
    assert edge_images_sbom(archive, version=RELEASE, images=IMAGES) == first
    stamped = edge_images_sbom(archive, version=RELEASE, images=IMAGES, created_at=CREATED_AT)
    assert_valid(stamped)
    assert json.loads(stamped)["metadata"]["timestamp"].startswith("2025-03-01T12:00:00")


def test_edge_sbom_matches_registry_names(tmp_path: Path) -> None:
    images = EdgeImages.release("registry.example:5000/ems", RELEASE)
    archive = docker_save(
        tmp_path / "a.tar",
        [([images.gateway], ["base.tar"]), ([images.fixtures, "other:1"], ["base.tar"])],
        {"base.tar": BASE},
    )
    components = by_purl(edge_images_sbom(archive, version=RELEASE, images=images))
    assert images_of(components["pkg:pypi/setuptools@69.0.0"]) == {images.gateway, images.fixtures}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a tar at all" * 100, "not an uncompressed tar"),
        (None, "no manifest.json"),
    ],
)
def test_not_a_docker_save_archive(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.tar"
    if content is None:
        with tarfile.open(path, mode="w") as tar:
            tar.addfile(tarfile.TarInfo("empty"))
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        edge_images_sbom(path, version=RELEASE, images=IMAGES)


def test_missing_image_layer_or_broken_layer(tmp_path: Path) -> None:
    only_gateway = docker_save(tmp_path / "a.tar", [(["ems-edge-gateway:1.2.3"], ["l.tar"])], {"l.tar": BASE})
    with pytest.raises(
        ValueError, match=r"no image ems-industrial-fixtures:1\.2\.3 \(it holds: ems-edge-gateway"
    ):
        edge_images_sbom(only_gateway, version=RELEASE, images=IMAGES)

    both = [(["ems-edge-gateway:1.2.3"], ["l.tar"]), (["ems-industrial-fixtures:1.2.3"], ["l.tar"])]
    missing = docker_save(tmp_path / "b.tar", both, {})
    with pytest.raises(ValueError, match=r"layer l\.tar named by manifest\.json is not in the archive"):
        edge_images_sbom(missing, version=RELEASE, images=IMAGES)

    truncated = docker_save(tmp_path / "c.tar", both, {"l.tar": gzip.compress(BASE)[:300]})
    with pytest.raises(ValueError, match=r"layer l\.tar cannot be read"):
        edge_images_sbom(truncated, version=RELEASE, images=IMAGES)

    garbage = docker_save(tmp_path / "d.tar", both, {"l.tar": b"\x00garbage" * 10})
    with pytest.raises(ValueError, match=r"layer l\.tar"):
        edge_images_sbom(garbage, version=RELEASE, images=IMAGES)


# --- the version SBOM -----------------------------------------------------------------------

APK_SBOM_14 = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.4",
    "version": 1,
    "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
    "metadata": {
        "timestamp": "2024-05-01T10:00:00Z",
        "tools": [{"vendor": "CycloneDX", "name": "cyclonedx-gradle-plugin", "version": "1.8.2"}],
        "component": {
            "type": "application",
            "name": "hmi",
            "version": "2.3.0",
            "bom-ref": "pkg:maven/com.ems/hmi@2.3.0",
        },
    },
    "components": [
        {
            "type": "library",
            "group": "androidx.core",
            "name": "core",
            "version": "1.12.0",
            "purl": "pkg:maven/androidx.core/core@1.12.0?type=aar",
            "bom-ref": "pkg:maven/androidx.core/core@1.12.0?type=aar",
            "licenses": [{"license": {"id": "Apache-2.0"}}],
        },
        {
            "type": "library",
            "group": "org.jetbrains.kotlin",
            "name": "kotlin-stdlib",
            "version": "1.9.0",
            "purl": "pkg:maven/org.jetbrains.kotlin/kotlin-stdlib@1.9.0",
            "components": [{"type": "library", "name": "annotations", "version": "13.0"}],
        },
    ],
    "dependencies": [
        {
            "ref": "pkg:maven/com.ems/hmi@2.3.0",
            "dependsOn": ["pkg:maven/androidx.core/core@1.12.0?type=aar", "dangling"],
        }
    ],
}
APK_SBOM_16 = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.6",
    "version": 1,
    "metadata": {"tools": {"components": [{"type": "application", "name": "syft"}]}},
    "components": [
        {
            "type": "library",
            "name": "okhttp",
            "version": "4.12.0",
            "purl": "pkg:maven/com.squareup.okhttp3/okhttp@4.12.0",
            "bom-ref": "okhttp",
        }
    ],
}


def a_version_sbom(archive: Path, apk: dict[str, Any] | None = APK_SBOM_14, version: int = 3) -> bytes:
    return version_sbom(
        cfg_id=CFG_ID,
        version=version,
        created_at=CREATED_AT,
        edge_sbom=edge_images_sbom(archive, version=RELEASE, images=IMAGES),
        apk_sbom=json.dumps(apk).encode() if apk is not None else None,
        apk_name="hmi-2.3.0.apk" if apk is not None else None,
    )


def test_version_sbom_holds_the_edge_images_and_the_apk(archive: Path) -> None:
    document = a_version_sbom(archive)
    data = assert_valid(document)
    subject = data["metadata"]["component"]
    assert (subject["name"], subject["version"]) == ("ems-delivery", f"{CFG_ID}/v3")
    assert {"name": "ems:cfg_id", "value": CFG_ID} in subject["properties"]
    assert {"name": "ems:portal_version", "value": "3"} in subject["properties"]
    assert data["metadata"]["timestamp"].startswith("2025-03-01T12:00:00")
    assert data["serialNumber"] == f"urn:uuid:{uuid.uuid5(SERIAL_NAMESPACE, f'ems-delivery/{CFG_ID}/v3')}"

    parts = {c["name"]: c for c in data["components"]}
    assert set(parts) == {"ems-edge-images", "hmi-2.3.0.apk"}
    edge = parts["ems-edge-images"]
    assert edge["version"] == RELEASE
    assert "pkg:pypi/pymodbus@3.16.0" in {c["purl"] for c in edge["components"]}
    assert len(edge["components"]) == 8

    apk = parts["hmi-2.3.0.apk"]
    assert (apk["type"], apk["version"], apk["bom-ref"]) == ("application", "2.3.0", "apk")
    nested = {c["name"]: c for c in sbom_components(json.dumps({"components": apk["components"]}).encode())}
    assert set(nested) == {"core", "kotlin-stdlib", "annotations"}
    assert nested["core"]["bom-ref"] == "apk:pkg:maven/androidx.core/core@1.12.0?type=aar"
    assert nested["core"]["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert all(c["bom-ref"].startswith("apk:") for c in nested.values())

    refs = [c["bom-ref"] for c in sbom_components(document)]
    assert len(refs) == len(set(refs))
    graph = {d["ref"]: set(d.get("dependsOn", [])) for d in data["dependencies"]}
    assert graph["ems-delivery"] == {"ems-edge-images", "apk"}
    # The APK's own graph, in the new refs (the dangling ref dropped).
    assert graph["apk"] == {"apk:pkg:maven/androidx.core/core@1.12.0?type=aar"}
    assert "pkg:pypi/pip@24.0" in graph["ems-edge-images"]


def test_apk_sbom_without_subject_or_graph(archive: Path) -> None:
    data = assert_valid(a_version_sbom(archive, apk=APK_SBOM_16))
    apk = next(c for c in data["components"] if c["bom-ref"] == "apk")
    assert [c["bom-ref"] for c in apk["components"]] == ["apk:okhttp"]
    graph = {d["ref"]: d.get("dependsOn", []) for d in data["dependencies"]}
    assert graph["apk"] == ["apk:okhttp"]


def test_version_sbom_is_deterministic(archive: Path) -> None:
    first = a_version_sbom(archive)
    assert a_version_sbom(archive) == first
    assert a_version_sbom(archive, version=4) != first
    # Components come sorted whatever order the APK SBOM lists them in.
    shuffled = json.loads(json.dumps(APK_SBOM_14))
    shuffled["components"].reverse()
    assert a_version_sbom(archive, apk=shuffled) == first


def test_version_sbom_without_images_or_apk() -> None:
    document = version_sbom(
        cfg_id=CFG_ID, version=1, created_at=CREATED_AT, edge_sbom=None, apk_sbom=None, apk_name=None
    )
    data = assert_valid(document)
    assert data.get("components", []) == []


@pytest.mark.parametrize(
    ("apk_sbom", "message"),
    [
        (b"{not json", "the APK's SBOM is not JSON"),
        (b'{"bomFormat": "SPDX"}', "not a CycloneDX document"),
        (b'{"bomFormat": "CycloneDX", "specVersion": "1.2"}', r"CycloneDX 1\.2; versions 1\.4, 1\.5, 1\.6"),
        (
            b'{"bomFormat": "CycloneDX", "specVersion": "1.5", "components": [{"type": "spaceship", "name": "x"}]}',
            "not a valid CycloneDX 1.5 document",
        ),
    ],
)
def test_bad_apk_sbom(apk_sbom: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        version_sbom(
            cfg_id=CFG_ID,
            version=1,
            created_at=CREATED_AT,
            edge_sbom=None,
            apk_sbom=apk_sbom,
            apk_name="x.apk",
        )


def test_naive_created_at_is_refused() -> None:
    with pytest.raises(ValueError, match="created_at has no time zone"):
        version_sbom(
            cfg_id=CFG_ID,
            version=1,
            created_at=datetime(2025, 3, 1, 12, 0),
            edge_sbom=None,
            apk_sbom=None,
            apk_name=None,
        )
