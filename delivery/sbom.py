"""CycloneDX 1.6 SBOMs: what the edge images hold, and what a site runs for one portal version.

**The edge images SBOM** (:func:`edge_images_sbom`) is read from the release's ``docker save``
archive (``edge-images/<version>.tar``), not from a running engine. For each edge image the archive
lists (``manifest.json``: ``[{"Config", "RepoTags", "Layers"}]``), its layers are replayed in order
the way the container's root file system is built: a later layer's file replaces an earlier one, a
whiteout ``.wh.<name>`` removes ``<name>`` (and all below it) from the layers under it, an opaque
whiteout ``.wh..wh..opq`` empties its directory. Only the files that say what is installed are
kept:

- ``var/lib/dpkg/status``: each paragraph with ``Status: install ok installed`` is a Debian package
  (``pkg:deb/debian/<name>@<version>?arch=<arch>``), and each control file of
  ``var/lib/dpkg/status.d/`` (distroless images have no status file) one more;
- ``.../site-packages/<dist>.dist-info/METADATA`` (and ``dist-packages``, where Debian's Python
  installs): a Python distribution (``pkg:pypi/<normalized name>@<version>``) with its
  ``License-Expression`` or a one-line ``License``.

A component found in both images is listed once, with one ``ems:image`` property per image that
holds it. The document's subject (``metadata.component``) is the edge images release,
``ems-edge-images`` at the release version. Both layer formats of ``docker save`` are read:
``<id>/layer.tar`` (Docker 20.10) and OCI blobs ``blobs/sha256/<hex>``, plain or gzip. Layers are
read as streams, never whole: an archive is hundreds of MB.

**The version SBOM** (:func:`version_sbom`) describes one order's delivery, portal version N: its
subject is ``ems-delivery`` at ``<cfg_id>/v<N>``, and its components are

- ``ems-edge-images`` (application) with the edge images SBOM's components nested in it, when the
  version ships edge images, and
- the HMI APK (application, named by its artifact) with the components of the APK's own SBOM nested
  in it, when the HMI's CI published one (any CycloneDX JSON 1.4 to 1.6). The APK SBOM's bom-refs
  get the prefix ``apk:`` so they cannot clash with the edge components', and its dependency graph
  is kept.

The serial number is a uuid5 of cfg_id and version and the timestamp is the version's
``created_at``, so the same inputs give byte-identical documents (components come sorted).
"""

from __future__ import annotations

import email.parser
import json
import re
import tarfile
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.bom_ref import BomRef
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependency
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema.deprecation import BaseSchemaDeprecationWarning
from packageurl import PackageURL

from delivery.edge_bundle import EdgeImages

EDGE_IMAGES_COMPONENT: Final = "ems-edge-images"
DELIVERY_COMPONENT: Final = "ems-delivery"
APK_FALLBACK_NAME: Final = "hmi.apk"
# Properties in the platform's own namespace (CycloneDX's property taxonomy reserves ``cdx:``).
IMAGE_PROPERTY: Final = "ems:image"
DEB_SOURCE_PROPERTY: Final = "ems:deb:source"
CFG_ID_PROPERTY: Final = "ems:cfg_id"
PORTAL_VERSION_PROPERTY: Final = "ems:portal_version"
APK_REF_PREFIX: Final = "apk:"
EDGE_IMAGES_REF: Final = "ems-edge-images"
DELIVERY_REF: Final = "ems-delivery"
APK_REF: Final = "apk"
# The namespace of the documents' serial numbers (uuid5): fixed, so a version's SBOM keeps its number.
SERIAL_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://ems.example/platform-api/sbom")
APK_SBOM_SPEC_VERSIONS: Final = frozenset({"1.4", "1.5", "1.6"})

DPKG_STATUS: Final = "var/lib/dpkg/status"
DPKG_STATUS_DIR: Final = "var/lib/dpkg/status.d/"
_DIST_INFO_METADATA = re.compile(r"(?:^|/)(?:site|dist)-packages/[^/]+\.dist-info/METADATA$")
WHITEOUT_PREFIX: Final = ".wh."
OPAQUE_WHITEOUT: Final = ".wh..wh..opq"
# Caps on what is kept of one file: a status file of a large image is a few MB, a METADATA's headers
# (the part read) a few KB; anything far larger is not what it claims to be.
MAX_STATUS_BYTES: Final = 64 * 1024 * 1024
MAX_METADATA_BYTES: Final = 1024 * 1024
MAX_MANIFEST_BYTES: Final = 16 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_INSTALLED = "install ok installed"


# --- reading the archive --------------------------------------------------------------------


@dataclass
class _LayerFiles:
    """What one layer contributes: the wanted files it writes, the paths it whites out."""

    files: dict[str, bytes] = field(default_factory=dict)
    # Paths that a later layer's entry at the same place removed (a directory, a symlink...).
    replaced: set[str] = field(default_factory=set)
    whiteouts: set[str] = field(default_factory=set)
    opaque_dirs: set[str] = field(default_factory=set)


def _member_path(name: str) -> str:
    path = name
    while path.startswith(("./", "/")):
        path = path[1:] if path.startswith("/") else path[2:]
    return path.rstrip("/")


def _wanted(path: str) -> bool:
    if path == DPKG_STATUS:
        return True
    if path.startswith(DPKG_STATUS_DIR) and "/" not in path[len(DPKG_STATUS_DIR) :]:
        return True
    return _DIST_INFO_METADATA.search(path) is not None


def _read_capped(stream: IO[bytes], cap: int, path: str, layer: str) -> bytes:
    data = stream.read(cap + 1)
    if len(data) > cap:
        if path.endswith("METADATA"):
            # Only the headers are used, and they come first; the long description may be large.
            return data[:cap]
        raise ValueError(f"layer {layer}: {path} is larger than {cap} bytes")
    return data


def _open_layer(outer: tarfile.TarFile, layer: str) -> tarfile.TarFile:
    try:
        member = outer.getmember(layer)
    except KeyError:
        raise ValueError(f"layer {layer} named by manifest.json is not in the archive") from None
    stream = outer.extractfile(member)
    if stream is None:
        raise ValueError(f"layer {layer} is not a file in the archive")
    head = stream.read(4)
    stream.seek(0)
    if head.startswith(_ZSTD_MAGIC):
        raise ValueError(f"layer {layer} is zstd-compressed; only tar and tar.gz layers are read")
    try:
        # Stream mode: members are read front to back, nothing of the layer is held but the
        # wanted files.
        if head.startswith(_GZIP_MAGIC):
            return tarfile.open(fileobj=stream, mode="r|gz")
        return tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as error:
        raise ValueError(f"layer {layer} is not a tar or tar.gz archive ({error})") from None


def _scan_layer(outer: tarfile.TarFile, layer: str) -> _LayerFiles:
    found = _LayerFiles()
    try:
        with _open_layer(outer, layer) as inner:
            for member in inner:
                path = _member_path(member.name)
                directory, _, base = path.rpartition("/")
                if base == OPAQUE_WHITEOUT:
                    found.opaque_dirs.add(directory)
                    continue
                if base.startswith(WHITEOUT_PREFIX):
                    found.whiteouts.add(f"{directory}/{base[len(WHITEOUT_PREFIX) :]}".lstrip("/"))
                    continue
                if not _wanted(path):
                    continue
                if member.isfile():
                    stream = inner.extractfile(member)
                    if stream is not None:
                        cap = MAX_METADATA_BYTES if path.endswith("METADATA") else MAX_STATUS_BYTES
                        found.files[path] = _read_capped(stream, cap, path, layer)
                elif member.islnk() and _member_path(member.linkname) in found.files:
                    found.files[path] = found.files[_member_path(member.linkname)]
                else:
                    # A symlink or directory where a wanted file was: the lower file is gone.
                    found.files.pop(path, None)
                    found.replaced.add(path)
    except (tarfile.TarError, EOFError, OSError) as error:
        # tarfile reports corrupt gzip data as ReadError; a truncated layer ends in EOFError, a
        # failing read of the archive itself in OSError.
        raise ValueError(f"layer {layer} cannot be read: {error}") from None
    return found


def _under(path: str, root: str) -> bool:
    return root == "" or path == root or path.startswith(f"{root}/")


def _apply(tree: dict[str, bytes], layer: _LayerFiles) -> None:
    """Lays ``layer`` over ``tree`` (the wanted files of the layers below) as overlayfs does."""
    for directory in layer.opaque_dirs:
        for path in [p for p in tree if _under(p, directory) and p != directory]:
            del tree[path]
    for removed in layer.whiteouts | layer.replaced:
        for path in [p for p in tree if _under(p, removed)]:
            del tree[path]
    tree.update(layer.files)


@dataclass(frozen=True)
class _ArchiveImage:
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


def _read_manifest(outer: tarfile.TarFile) -> list[_ArchiveImage]:
    try:
        member = outer.getmember("manifest.json")
    except KeyError:
        raise ValueError("the archive has no manifest.json: it is not a `docker save` archive") from None
    stream = outer.extractfile(member)
    if stream is None or member.size > MAX_MANIFEST_BYTES:
        raise ValueError("manifest.json of the archive is not a regular file of sane size")
    try:
        entries = json.loads(stream.read())
    except ValueError:
        raise ValueError("manifest.json of the archive is not JSON") from None
    if not isinstance(entries, list):
        raise ValueError("manifest.json of the archive is not a list of images")
    images = []
    for index, entry in enumerate(entries):
        layers = entry.get("Layers") if isinstance(entry, dict) else None
        tags = entry.get("RepoTags") if isinstance(entry, dict) else None
        if not isinstance(layers, list) or not all(isinstance(layer, str) for layer in layers):
            raise ValueError(f"manifest.json entry {index} has no list of Layers")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags)):
            raise ValueError(f"manifest.json entry {index}: RepoTags is not a list of names")
        images.append(_ArchiveImage(tuple(tags or ()), tuple(layers)))
    return images


def _normalized_reference(reference: str) -> str:
    """``name:tag`` as Docker compares names: no digest, ``latest`` by default, no ``docker.io``."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name = f"{name}:latest"
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name.removeprefix("library/")


def _find_image(images: list[_ArchiveImage], reference: str) -> _ArchiveImage:
    wanted = _normalized_reference(reference)
    for image in images:
        if any(_normalized_reference(tag) == wanted for tag in image.repo_tags):
            return image
    held = sorted(tag for image in images for tag in image.repo_tags) or ["no tagged image"]
    raise ValueError(f"the archive has no image {reference} (it holds: {', '.join(held)})")


def _open_archive(archive: Path) -> tarfile.TarFile:
    try:
        # "r:": random access by member name; `docker save` never compresses the archive itself.
        return tarfile.open(archive, mode="r:")
    except FileNotFoundError:
        raise ValueError(f"{archive} does not exist") from None
    except tarfile.TarError as error:
        raise ValueError(f"{archive} is not an uncompressed tar archive ({error})") from None


def _image_files(archive: Path, images: EdgeImages) -> dict[str, dict[str, bytes]]:
    """Each edge image's reference → its wanted files (path → content) after all its layers."""
    with _open_archive(archive) as outer:
        listed = _read_manifest(outer)
        # Images share their base layers: each distinct layer is read once.
        scanned: dict[str, _LayerFiles] = {}
        trees: dict[str, dict[str, bytes]] = {}
        for reference in dict.fromkeys((images.gateway, images.fixtures)):
            image = _find_image(listed, reference)
            tree: dict[str, bytes] = {}
            for layer in image.layers:
                if layer not in scanned:
                    scanned[layer] = _scan_layer(outer, layer)
                _apply(tree, scanned[layer])
            trees[reference] = tree
    return trees


# --- what is installed ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Package:
    purl: PackageURL
    name: str
    version: str
    license: str | None = None
    deb_source: str | None = None


def _control_paragraphs(text: str) -> Iterator[dict[str, str]]:
    """The paragraphs of a Debian control file (dpkg's status): field → value, continuation lines
    joined."""
    fields: dict[str, str] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                fields[last] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip()
            fields[last] = value.strip()
    if fields:
        yield fields


def _debian_packages(text: str, *, require_status: bool) -> Iterator[_Package]:
    for fields in _control_paragraphs(text):
        name, version = fields.get("Package"), fields.get("Version")
        if not name or not version:
            continue
        status = fields.get("Status")
        # status.d control files have no Status: being there means installed.
        if (status is not None or require_status) and status != _INSTALLED:
            continue
        arch = fields.get("Architecture")
        yield _Package(
            purl=PackageURL(
                type="deb",
                namespace="debian",
                name=name,
                version=version,
                qualifiers={"arch": arch} if arch else None,
            ),
            name=name,
            version=version,
            deb_source=fields.get("Source") or None,
        )


def _normalized_distribution(name: str) -> str:
    """PEP 503: the name pip and PyPI compare."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _python_distribution(metadata: bytes) -> _Package | None:
    headers = email.parser.BytesHeaderParser().parsebytes(metadata)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return None
    license_value = headers.get("License-Expression") or headers.get("License")
    license_value = str(license_value).strip() if license_value else None
    # The License field is sometimes the whole license text: only a short name is a license name.
    if license_value and ("\n" in license_value or len(license_value) > 120 or license_value == "UNKNOWN"):
        license_value = None
    name, version = str(name).strip(), str(version).strip()
    return _Package(
        purl=PackageURL(type="pypi", name=_normalized_distribution(name), version=version),
        name=name,
        version=version,
        license=license_value,
    )


def _packages(files: Mapping[str, bytes]) -> Iterator[_Package]:
    for path, content in sorted(files.items()):
        if path == DPKG_STATUS:
            yield from _debian_packages(content.decode("utf-8", "replace"), require_status=True)
        elif path.startswith(DPKG_STATUS_DIR):
            if path.endswith((".md5sums", ".list")):
                continue
            yield from _debian_packages(content.decode("utf-8", "replace"), require_status=False)
        else:
            distribution = _python_distribution(content)
            if distribution is not None:
                yield distribution


def _component(package: _Package, image_references: Iterable[str]) -> Component:
    properties = [Property(name=IMAGE_PROPERTY, value=reference) for reference in image_references]
    if package.deb_source:
        properties.append(Property(name=DEB_SOURCE_PROPERTY, value=package.deb_source))
    licenses = [LicenseFactory().make_from_string(package.license)] if package.license else []
    purl = package.purl.to_string()
    return Component(
        type=ComponentType.LIBRARY,
        name=package.name,
        version=package.version,
        purl=package.purl,
        # The purl names a component uniquely in the document: the same package at another version
        # or architecture has another purl.
        bom_ref=purl,
        licenses=licenses,
        properties=properties,
    )


# --- output -----------------------------------------------------------------------------------


def _serialized(bom: Bom) -> bytes:
    return JsonV1Dot6(bom).output_as_string(indent=None).encode("utf-8")


def _aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} has no time zone: an SBOM's timestamp is an instant")
    # One instant, one spelling: the bytes do not depend on the zone the caller's clock was in.
    return moment.astimezone(UTC)


def edge_images_sbom(
    archive: Path, *, version: str, images: EdgeImages, created_at: datetime | None = None
) -> bytes:
    """The CycloneDX 1.6 JSON SBOM of the edge images in the ``docker save`` archive ``archive``.

    ``created_at`` becomes the document's timestamp; without it the document has none, so the same
    archive always gives the same bytes. An archive that is not a readable ``docker save`` of both
    images is a ValueError naming what is wrong.
    """
    trees = _image_files(archive, images)
    holders: dict[str, list[str]] = {}
    packages: dict[str, _Package] = {}
    for reference, files in trees.items():
        for package in _packages(files):
            purl = package.purl.to_string()
            packages.setdefault(purl, package)
            if reference not in holders.setdefault(purl, []):
                holders[purl].append(reference)
    components = [_component(packages[purl], holders[purl]) for purl in sorted(packages)]

    subject = Component(
        type=ComponentType.APPLICATION,
        name=EDGE_IMAGES_COMPONENT,
        version=version,
        bom_ref=EDGE_IMAGES_REF,
        properties=[Property(name=IMAGE_PROPERTY, value=reference) for reference in trees],
    )
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, f"{EDGE_IMAGES_COMPONENT}/{version}/" + "/".join(trees)),
        components=components,
    )
    bom.metadata.component = subject
    # The library stamps "now" by default, which would make every run's bytes differ; its setter
    # is typed for a datetime only, but the field is optional in the schema and the serializer.
    bom.metadata.timestamp = _aware(created_at, "created_at") if created_at is not None else None  # type: ignore[assignment]
    bom.register_dependency(subject, components)
    return _serialized(bom)


def _loaded(document: bytes, what: str) -> Bom:
    try:
        data = json.loads(document)
    except ValueError:
        raise ValueError(f"{what} is not JSON") from None
    if not isinstance(data, dict) or data.get("bomFormat") != "CycloneDX":
        raise ValueError(f"{what} is not a CycloneDX document (bomFormat is not CycloneDX)")
    spec = data.get("specVersion")
    if spec not in APK_SBOM_SPEC_VERSIONS:
        raise ValueError(
            f"{what} is CycloneDX {spec}; versions {', '.join(sorted(APK_SBOM_SPEC_VERSIONS))} are read"
        )
    try:
        with warnings.catch_warnings():
            # A 1.4 document's tools list is read as the deprecated form; tools are not carried over.
            warnings.simplefilter("ignore", BaseSchemaDeprecationWarning)
            # from_json is added by py-serializable's class decorator, which mypy does not see.
            bom = Bom.from_json(data)  # type: ignore[attr-defined]
    except Exception as error:  # noqa: BLE001 — py-serializable raises whatever a field's type does
        raise ValueError(f"{what} is not a valid CycloneDX {spec} document: {error}") from None
    if bom is None:
        raise ValueError(f"{what} holds no CycloneDX document")
    return bom


def _walk(components: Iterable[Component]) -> Iterator[Component]:
    for component in list(components):
        yield component
        yield from _walk(component.components)


def _resorted(components: Iterable[Component]) -> list[Component]:
    """``components`` (and their nested ones) put back in sorted sets after their bom-refs changed:
    the sets order by bom-ref among others."""
    result = []
    for component in list(components):
        component.components = _resorted(component.components)
        result.append(component)
    return result


def _renamed_refs(bom: Bom, prefix: str, root_ref: str) -> tuple[list[Component], list[Dependency]]:
    """``bom``'s components with bom-refs prefixed (and given where missing), and its dependency
    graph in the new refs; the document's own subject becomes ``root_ref``."""
    renamed: dict[str, str] = {}
    taken: set[str] = set()
    for index, component in enumerate(_walk(bom.components)):
        old = component.bom_ref.value
        base = old or (component.purl.to_string() if component.purl else f"{component.name}#{index}")
        new, suffix = f"{prefix}{base}", 0
        while new in taken:
            suffix += 1
            new = f"{prefix}{base}#{suffix}"
        taken.add(new)
        if old:
            renamed[old] = new
        component.bom_ref.value = new
    subject = bom.metadata.component
    if subject is not None and subject.bom_ref.value:
        renamed[subject.bom_ref.value] = root_ref
    dependencies = []
    for dependency in bom.dependencies:
        ref = renamed.get(str(dependency.ref.value))
        if ref is None:
            continue
        depends_on = [
            BomRef(renamed[str(d.ref.value)]) for d in dependency.dependencies if str(d.ref.value) in renamed
        ]
        dependencies.append(Dependency(ref=BomRef(ref), dependencies=[Dependency(ref=d) for d in depends_on]))
    return _resorted(bom.components), dependencies


def version_sbom(
    *,
    cfg_id: str,
    version: int,
    created_at: datetime,
    edge_sbom: bytes | None,
    apk_sbom: bytes | None,
    apk_name: str | None,
) -> bytes:
    """The CycloneDX 1.6 JSON SBOM of portal version ``version`` of order ``cfg_id``.

    ``edge_sbom`` is :func:`edge_images_sbom`'s document of the images the version ships (None: no
    images); ``apk_sbom`` the HMI APK's own CycloneDX JSON SBOM (None: its CI published none) and
    ``apk_name`` the APK's artifact name. Same inputs, same bytes.
    """
    subject = Component(
        type=ComponentType.APPLICATION,
        name=DELIVERY_COMPONENT,
        version=f"{cfg_id}/v{version}",
        bom_ref=DELIVERY_REF,
        properties=[
            Property(name=CFG_ID_PROPERTY, value=cfg_id),
            Property(name=PORTAL_VERSION_PROPERTY, value=str(version)),
        ],
    )
    parts: list[Component] = []
    graph: list[Dependency] = []

    if edge_sbom is not None:
        edge = _loaded(edge_sbom, "the edge images SBOM")
        edge_subject = edge.metadata.component
        edge_component = Component(
            type=ComponentType.APPLICATION,
            name=EDGE_IMAGES_COMPONENT,
            version=edge_subject.version if edge_subject else None,
            bom_ref=EDGE_IMAGES_REF,
            properties=list(edge_subject.properties) if edge_subject else [],
        )
        edge_libraries = list(edge.components)
        for component in _walk(edge_libraries):
            if (
                component.bom_ref.value in (EDGE_IMAGES_REF, DELIVERY_REF, APK_REF)
                or not component.bom_ref.value
            ):
                raise ValueError(f"the edge images SBOM: component {component.name} has no usable bom-ref")
        edge_component.components = edge_libraries
        parts.append(edge_component)
        graph.append(
            Dependency(
                ref=BomRef(EDGE_IMAGES_REF),
                dependencies=[Dependency(ref=BomRef(c.bom_ref.value)) for c in edge_libraries],
            )
        )

    if apk_sbom is not None:
        apk = _loaded(apk_sbom, "the APK's SBOM")
        apk_subject = apk.metadata.component
        name = apk_name or (apk_subject.name if apk_subject else None) or APK_FALLBACK_NAME
        apk_components, apk_graph = _renamed_refs(apk, APK_REF_PREFIX, APK_REF)
        apk_component = Component(
            type=ComponentType.APPLICATION,
            name=name,
            version=apk_subject.version if apk_subject else None,
            purl=apk_subject.purl if apk_subject else None,
            bom_ref=APK_REF,
            components=apk_components,
        )
        parts.append(apk_component)
        if not any(d.ref.value == APK_REF for d in apk_graph):
            # The APK SBOM did not say what its app depends on: its top-level components, then.
            apk_graph.append(
                Dependency(
                    ref=BomRef(APK_REF),
                    dependencies=[Dependency(ref=BomRef(c.bom_ref.value)) for c in apk_components],
                )
            )
        graph.extend(apk_graph)

    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, f"{DELIVERY_COMPONENT}/{cfg_id}/v{version}"),
        components=parts,
        dependencies=[
            Dependency(
                ref=BomRef(DELIVERY_REF),
                dependencies=[Dependency(ref=BomRef(p.bom_ref.value)) for p in parts],
            ),
            *graph,
        ],
    )
    bom.metadata.component = subject
    bom.metadata.timestamp = _aware(created_at, "created_at")
    return _serialized(bom)


def sbom_components(document: bytes) -> list[dict[str, Any]]:
    """Every component of a CycloneDX JSON document, nested ones included, depth first."""
    data = json.loads(document)

    def walk(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for component in components:
            yield component
            yield from walk(component.get("components", []))

    return list(walk(data.get("components", [])))
