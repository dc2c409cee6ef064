"""The air-gap bundle of a portal version: one tar with everything an offline site needs.

``airgap-bundle-v<N>.tar`` is an uncompressed POSIX (PAX) tar holding one directory,
``airgap-v<N>/``, with, flat: ``README.txt``, the *inner* ``manifest.json`` (the version's
artifacts and the edge images archive: every artifact file of the bundle, which the version's
published manifest lists as well, plus the bundle itself, which no file can list),
``manifest.json.sig``, ``signing-key.pem``, the version's ``index.html``, each artifact under its
name, ``edge-images-<version>.tar`` (a ``docker save`` of both edge images) when it was published,
and ``stack/`` with the delivered stack's files. A site copies it over, checks the signature and
the checksums with openssl and sha256sum (or ``python -m portal_verify``), loads the images and
starts the stack, with no network.

Artifacts reach hundreds of MB (the seed ISO, the images archive), so the bundle is written as a
stream: each file comes in as a reader of chunks and goes straight to the output, hashed on the
way. Every member's metadata is fixed (the version's ``created_at``, root, fixed modes), so the
same inputs always give the same bytes and the same sha256.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, BinaryIO, cast

from pydantic import ValidationError

from contracts.manifest import Manifest
from delivery.artifact_store import checked_name
from delivery.edge_bundle import BUNDLE_FILES, SECRET_FILES, EdgeImages
from delivery.manifest_signing import verify_signature
from delivery.portal import (
    MANIFEST_NAME,
    PAGE_NAME,
    PUBLIC_KEY_NAME,
    SIGNATURE_NAME,
    SigningInfo,
    manifest_json,
    template_environment,
)
from service_kit.timestamps import as_utc

BUNDLE_NAME_TEMPLATE = "airgap-bundle-v{version}.tar"
BUNDLE_CONTENT_TYPE = "application/x-tar"
README_NAME = "README.txt"
README_TEMPLATE = "airgap_readme.txt.j2"
STACK_FOLDER = "stack"
# Where the edge images' build publishes the archive in the stage's bucket: edge-images/<version>.tar.
EDGE_IMAGES_PREFIX = "edge-images/"
# The release version as an image tag allows it (and a key segment needs no more): no slash, no
# leading dot or dash.
EDGE_IMAGES_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
# The files beside the artifacts, in the order they are written: the README first, for whoever
# lists the archive.
FIXED_FILES = (README_NAME, MANIFEST_NAME, SIGNATURE_NAME, PUBLIC_KEY_NAME, PAGE_NAME)
# Read whole by the check (a manifest, a signature, a key, a page): a bound keeps a hostile archive
# from filling memory.
SMALL_FILE_LIMIT = 16 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024
FILE_MODE = 0o644
SECRET_MODE = 0o600
DIRECTORY_MODE = 0o755

Readable = BinaryIO | Iterable[bytes]


def bundle_name(version: int) -> str:
    """``airgap-bundle-v<N>.tar``: the bundle's artifact name within portal version N."""
    if int(version) < 1:
        raise ValueError(f"portal version {version!r} must be 1 or more")
    return BUNDLE_NAME_TEMPLATE.format(version=int(version))


def bundle_folder(version: int) -> str:
    """``airgap-v<N>``: the one top-level directory of the bundle of portal version N."""
    return f"airgap-v{int(version)}"


def checked_images_version(version: str) -> str:
    if not EDGE_IMAGES_VERSION.fullmatch(version) or ".." in version:
        raise ValueError(f"edge images version {version!r} is not a release version")
    return version


def edge_images_name(version: str) -> str:
    """``edge-images-<version>.tar``: the images archive's name in a bundle."""
    return f"edge-images-{checked_images_version(version)}.tar"


def edge_images_key(version: str) -> str:
    """``edge-images/edge-images-<version>.tar``: where the images archive of a release lies in the
    stage's bucket, under the name a portal version lists it by."""
    return f"{EDGE_IMAGES_PREFIX}{edge_images_name(version)}"


@dataclass(frozen=True)
class BundleMember:
    """An artifact file of the bundle: its name there, its size, and how to read it.

    ``open`` is called once, while the member is written, and returns a binary file object (read
    in chunks, and closed afterwards) or an iterable of byte chunks: nothing is held whole.
    """

    name: str
    size: int
    open: Callable[[], Readable]

    def __post_init__(self) -> None:
        checked_name(self.name)
        if self.size < 0:
            raise ValueError(f"{self.name}: size {self.size} is negative")

    @classmethod
    def from_path(cls, name: str, path: Path) -> BundleMember:
        """A file on disk (an artifact downloaded to a temporary file)."""
        return cls(name=name, size=path.stat().st_size, open=lambda: path.open("rb"))

    @classmethod
    def from_bytes(cls, name: str, data: bytes) -> BundleMember:
        return cls(name=name, size=len(data), open=lambda: [data])


def render_airgap_readme(*, manifest: Manifest, images: EdgeImages, signing: SigningInfo) -> str:
    """README.txt of the bundle of ``manifest`` (the inner manifest): what it holds, how to check and start it.

    The images archive is the inner manifest's artifact of kind ``images``; without one the README
    names the images to bring in instead. ``signing`` is the key that signed the inner manifest,
    as the portal publishes it.
    """
    archive = next((a.name for a in manifest.artifacts if a.kind == "images"), None)
    return (
        template_environment()
        .get_template(README_TEMPLATE)
        .render(
            manifest=manifest,
            images=images,
            images_archive=archive,
            signing=signing,
            folder=bundle_folder(manifest.version),
            bundle=bundle_name(manifest.version),
            stack_folder=STACK_FOLDER,
            stack_files=BUNDLE_FILES,
            readme_name=README_NAME,
            manifest_name=MANIFEST_NAME,
            signature_name=SIGNATURE_NAME,
            public_key_name=PUBLIC_KEY_NAME,
            page_name=PAGE_NAME,
        )
    )


class _TarStream:
    """Writes tar members to ``out`` one after the other; only ``write`` is asked of ``out``."""

    def __init__(self, out: BinaryIO, mtime: int) -> None:
        self._out = out
        self._mtime = mtime
        self._offset = 0

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._offset += len(data)

    def _info(self, name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.size = size
        info.mtime = self._mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def directory(self, name: str) -> None:
        self._write(self._info(name, tarfile.DIRTYPE, DIRECTORY_MODE).tobuf(tarfile.PAX_FORMAT, "utf-8"))

    def file(self, name: str, size: int, chunks: Iterable[bytes], mode: int = FILE_MODE) -> str:
        """Write one file of ``size`` bytes from ``chunks``; its sha256."""
        self._write(self._info(name, tarfile.REGTYPE, mode, size).tobuf(tarfile.PAX_FORMAT, "utf-8"))
        digest = hashlib.sha256()
        written = 0
        for chunk in chunks:
            written += len(chunk)
            # The header already promised the size: more or fewer bytes would shift every member after.
            if written > size:
                raise ValueError(f"{name}: the reader gave more than the {size} bytes announced")
            digest.update(chunk)
            self._write(chunk)
        if written != size:
            raise ValueError(f"{name}: the reader gave {written} bytes, {size} were announced")
        self._write(tarfile.NUL * (-size % tarfile.BLOCKSIZE))
        return digest.hexdigest()

    def close(self) -> None:
        self._write(tarfile.NUL * (2 * tarfile.BLOCKSIZE))
        self._write(tarfile.NUL * (-self._offset % tarfile.RECORDSIZE))


def _chunks_of(source: Readable) -> Generator[bytes, None, None]:
    if not hasattr(source, "read"):
        yield from source
        return
    with cast(BinaryIO, source) as stream:
        yield from iter(lambda: stream.read(CHUNK_SIZE), b"")


def write_airgap_bundle(
    out: BinaryIO,
    *,
    version: int,
    created_at: datetime,
    files: Sequence[BundleMember],
    stack: Mapping[str, bytes],
    inner_manifest: bytes,
    signature: bytes,
    public_key_pem: bytes,
    index_html: bytes,
    readme: str,
) -> None:
    """Write the bundle of portal version ``version`` to ``out`` (a temporary file), as a stream.

    ``files`` are the artifacts the inner manifest (``inner_manifest``, the exact bytes that
    ``signature`` signs) lists, written in the order given; ``stack`` the delivered stack's files
    (``edge_bundle.build_bundle``). A file whose name, size or sha256 is not the one the inner
    manifest lists is a ValueError: no bundle holds a file its own manifest would fail. The
    caller discards ``out`` then, as it would after any error of its reader.
    """
    inner = Manifest.model_validate_json(inner_manifest)
    if inner.version != version:
        raise ValueError(f"the inner manifest is of portal version {inner.version}, not {version}")
    listed = {artifact.name: artifact for artifact in inner.artifacts}
    names = [member.name for member in files]
    if sorted(names) != sorted(listed):
        raise ValueError(
            f"the bundle's files ({', '.join(names) or 'none'}) are not those its manifest lists "
            f"({', '.join(listed) or 'none'})"
        )
    for member in files:
        if member.name in FIXED_FILES or member.name == STACK_FOLDER:
            raise ValueError(f"artifact name {member.name!r} is taken by the bundle's own {member.name}")
        if member.size != listed[member.name].size:
            raise ValueError(
                f"{member.name}: {member.size} bytes, the manifest lists {listed[member.name].size}"
            )
    if sorted(stack) != sorted(BUNDLE_FILES):
        raise ValueError(
            f"the stack must hold {', '.join(BUNDLE_FILES)}, not {', '.join(stack) or 'nothing'}"
        )

    top = bundle_folder(version)
    tar = _TarStream(out, int(as_utc(created_at).timestamp()))
    tar.directory(top)
    small = (readme.encode("utf-8"), inner_manifest, signature, public_key_pem, index_html)
    for name, data in zip(FIXED_FILES, small, strict=True):
        tar.file(f"{top}/{name}", len(data), [data])
    for member in files:
        # closing(): the reader is closed also when its member fails half-way.
        with closing(_chunks_of(member.open())) as chunks:
            digest = tar.file(f"{top}/{member.name}", member.size, chunks)
        if digest != listed[member.name].sha256:
            raise ValueError(f"{member.name}: its sha256 is not the one the manifest lists")
    tar.directory(f"{top}/{STACK_FOLDER}")
    for name in BUNDLE_FILES:
        mode = SECRET_MODE if name in SECRET_FILES else FILE_MODE
        tar.file(f"{top}/{STACK_FOLDER}/{name}", len(stack[name]), [stack[name]], mode)
    tar.close()


def _unsafe(name: str) -> bool:
    parts = name.split("/")
    return "\x00" in name or "\\" in name or name.startswith("/") or ".." in parts or ":" in parts[0]


def _sha256(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(CHUNK_SIZE), b""):
        digest.update(chunk)
    return digest.hexdigest()


def bundle_problems(archive: BinaryIO, manifest: Manifest) -> list[str]:
    """What is wrong with a bundle of ``manifest``'s version, read as a stream; empty when nothing is.

    ``manifest`` is the inner manifest, or the version's published one: its ``bundle`` entries
    (the bundle itself) are left out, which makes it the inner manifest again. Each listed artifact
    must be in the archive with its size and sha256, nothing else may lie beside them, the README,
    the signed manifest (the same bytes as ``manifest``'s), its signature (good under the key
    beside it), the key, the page and the stack must be there, and no member may be a link, a
    device or a name that leaves the bundle's directory when extracted.
    """
    inner = manifest.model_copy(update={"artifacts": [a for a in manifest.artifacts if a.kind != "bundle"]})
    listed = {artifact.name: artifact for artifact in inner.artifacts}
    top = bundle_folder(inner.version)
    stack_files = {f"{STACK_FOLDER}/{name}" for name in BUNDLE_FILES}
    problems: list[str] = []
    seen: set[str] = set()
    small: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=archive, mode="r|") as tar:
            for member in tar:
                name = member.name.rstrip("/") if member.isdir() else member.name
                if _unsafe(name):
                    problems.append(f"unsafe member name {member.name!r}")
                    continue
                if not (member.isfile() or member.isdir()):
                    problems.append(f"{member.name!r} is a link or a device, not a file")
                    continue
                if name != top and not name.startswith(f"{top}/"):
                    problems.append(f"{member.name!r} lies outside the bundle's directory {top}/")
                    continue
                if name in seen:
                    problems.append(f"{member.name!r} is in the archive twice")
                    continue
                seen.add(name)
                inner_name = name.removeprefix(f"{top}/") if name != top else ""
                if member.isdir():
                    if inner_name not in ("", STACK_FOLDER):
                        problems.append(f"unexpected directory {member.name!r}")
                    continue
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file always has a stream
                if inner_name in FIXED_FILES:
                    if member.size > SMALL_FILE_LIMIT:
                        problems.append(f"{inner_name} is too large ({member.size} bytes)")
                    else:
                        small[inner_name] = stream.read()
                elif inner_name in listed:
                    artifact = listed[inner_name]
                    if member.size != artifact.size:
                        problems.append(
                            f"{inner_name}: {member.size} bytes in the archive, the manifest lists {artifact.size}"
                        )
                    elif _sha256(stream) != artifact.sha256:
                        problems.append(f"{inner_name}: its sha256 differs from the manifest's")
                elif inner_name not in stack_files:
                    problems.append(f"unexpected file {member.name!r}: the manifest does not list it")
    except (tarfile.TarError, OSError, EOFError) as error:
        problems.append(f"the archive cannot be read: {error}")
        return problems
    if top not in seen:
        problems.append(f"no {top}/ directory: not the bundle of portal version {inner.version}")
    found = {name.removeprefix(f"{top}/") for name in seen}
    problems.extend(f"{name} is missing" for name in FIXED_FILES if name not in found)
    problems.extend(f"{name} is missing" for name in sorted(stack_files - found))
    problems.extend(f"artifact {name} is missing" for name in listed if name not in found)
    problems.extend(_signed_manifest_problems(small, inner))
    return problems


def _signed_manifest_problems(small: Mapping[str, bytes], inner: Manifest) -> list[str]:
    stored = small.get(MANIFEST_NAME)
    if stored is None:
        return []
    try:
        expected = manifest_json(inner)
    except ValidationError as error:
        return [f"the manifest to check against is not a valid manifest: {error.error_count()} error(s)"]
    problems = []
    if stored != expected:
        problems.append(f"{MANIFEST_NAME} in the archive differs from the version's inner manifest")
    signature, key = small.get(SIGNATURE_NAME), small.get(PUBLIC_KEY_NAME)
    if signature is not None and key is not None:
        try:
            if not verify_signature(key, stored, signature):
                problems.append(
                    f"{SIGNATURE_NAME} is not a good signature of {MANIFEST_NAME} by {PUBLIC_KEY_NAME}"
                )
        except ValueError as error:
            problems.append(f"{PUBLIC_KEY_NAME}: {error}")
    return problems
