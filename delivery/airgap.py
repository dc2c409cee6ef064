"""The air-gap bundle of a portal version: one tar with everything an offline site needs.

``airgap-bundle-v<N>.tar`` is an uncompressed POSIX (PAX) tar holding one directory,
``airgap-v<N>/``, with, flat: ``README.txt``, the *inner* ``manifest.json``, ``manifest.json.sig``,
``signing-key.pem``, the version's ``index.html``, each artifact under its name (the SBOM and the
provenance among them, and ``edge-images-<version>.tar``, a ``docker save`` of both edge images,
when it was published), and ``stack/`` with the delivered stack's files.

The inner manifest lists every file of the bundle but itself, its signature and the key: the
version's artifacts (which the version's published manifest lists as well, plus the bundle, which
no file can list about itself) and, as ``bundle_files``, the README, the page and each file of
``stack/`` (``secrets.env`` by its digest only). So the file that decides what the site runs,
``stack/compose.yaml``, is signed like the rest. A site copies the bundle over, checks it with
``python -m portal_verify`` against the portal's published key, loads the images and starts the
stack, with no network.

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

from contracts.manifest import BundleFile, Manifest, ManifestArtifact
from delivery.artifact_store import checked_name
from delivery.edge_bundle import BUNDLE_FILES, SECRET_FILES, EdgeImages
from delivery.manifest_signing import verify_signature
from delivery.portal import (
    MANIFEST_NAME,
    PAGE_NAME,
    PUBLIC_KEY_NAME,
    SIGNATURE_NAME,
    SigningInfo,
    template_environment,
)
from service_kit.timestamps import as_utc

BUNDLE_NAME_TEMPLATE = "airgap-bundle-v{version}.tar"
BUNDLE_CONTENT_TYPE = "application/x-tar"
README_NAME = "README.txt"
README_TEMPLATE = "airgap_readme.txt.j2"
STACK_FOLDER = "stack"
# Beside the stack's files when the bundle carries released images: compose.yaml's images by id.
LOADED_IMAGES_NAME = "compose.loaded-images.yaml"
# Where the edge images' build publishes the archive in the stage's bucket: edge-images/<version>.tar.
EDGE_IMAGES_PREFIX = "edge-images/"
# The release version as an image tag allows it (and a key segment needs no more): no slash, no
# leading dot or dash.
EDGE_IMAGES_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
# The files beside the artifacts: no artifact may take their names.
FIXED_FILES = (README_NAME, MANIFEST_NAME, SIGNATURE_NAME, PUBLIC_KEY_NAME, PAGE_NAME)
# The bundle's only files its manifest cannot list: the manifest, its signature and the key.
UNLISTED_FILES = (MANIFEST_NAME, SIGNATURE_NAME, PUBLIC_KEY_NAME)
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


def render_airgap_readme(
    *, manifest: Manifest, images: EdgeImages, signing: SigningInfo, loaded_images: bool = False
) -> str:
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
            stack_files=[*BUNDLE_FILES, *([LOADED_IMAGES_NAME] if loaded_images else [])],
            loaded_images=LOADED_IMAGES_NAME if loaded_images else None,
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


def bundle_own_files(*, readme: str, index_html: bytes, stack: Mapping[str, bytes]) -> dict[str, bytes]:
    """The bundle's files beside its artifacts, by their path in its directory: the README, the
    version's page and ``stack/<name>`` for each file of the delivered stack (``BUNDLE_FILES``, and
    ``LOADED_IMAGES_NAME`` when the bundle carries released images)."""
    names = sorted(set(stack) - {LOADED_IMAGES_NAME})
    if names != sorted(BUNDLE_FILES):
        raise ValueError(
            f"the stack must hold {', '.join(BUNDLE_FILES)}, not {', '.join(stack) or 'nothing'}"
        )
    return {
        README_NAME: readme.encode("utf-8"),
        PAGE_NAME: index_html,
        **{
            f"{STACK_FOLDER}/{name}": stack[name]
            for name in [*BUNDLE_FILES, LOADED_IMAGES_NAME]
            if name in stack
        },
    }


def with_bundle_files(manifest: Manifest, own_files: Mapping[str, bytes]) -> Manifest:
    """The bundle's own manifest: ``manifest``'s artifacts and each of ``own_files`` with its size
    and sha256, so the signature covers every byte of the bundle but itself and the key."""
    listed = [
        BundleFile(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        for path, data in own_files.items()
    ]
    return manifest.model_copy(update={"bundle_files": listed})


def write_airgap_bundle(
    out: BinaryIO,
    *,
    version: int,
    created_at: datetime,
    files: Sequence[BundleMember],
    own_files: Mapping[str, bytes],
    inner_manifest: bytes,
    signature: bytes,
    public_key_pem: bytes,
) -> None:
    """Write the bundle of portal version ``version`` to ``out`` (a temporary file), as a stream.

    ``files`` are the artifacts the inner manifest (``inner_manifest``, the exact bytes that
    ``signature`` signs) lists, written in the order given; ``own_files`` the README, the page and
    the stack (``bundle_own_files``), which it lists as ``bundle_files``. A file whose name, size
    or sha256 is not the one the inner manifest lists is a ValueError: no bundle holds a file its
    own manifest would fail. The caller discards ``out`` then, as it would after any error of its
    reader.
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
    own_listed = {f.path: f.sha256 for f in inner.bundle_files}
    own_given = {path: hashlib.sha256(data).hexdigest() for path, data in own_files.items()}
    if own_listed != own_given:
        raise ValueError("the bundle's own files (README, page, stack) are not those its manifest lists")

    top = bundle_folder(version)
    tar = _TarStream(out, int(as_utc(created_at).timestamp()))
    tar.directory(top)
    # The README first, for whoever lists the archive; then what checks the rest.
    for name, data in (
        (README_NAME, own_files[README_NAME]),
        (MANIFEST_NAME, inner_manifest),
        (SIGNATURE_NAME, signature),
        (PUBLIC_KEY_NAME, public_key_pem),
        (PAGE_NAME, own_files[PAGE_NAME]),
    ):
        tar.file(f"{top}/{name}", len(data), [data])
    for member in files:
        # closing(): the reader is closed also when its member fails half-way.
        with closing(_chunks_of(member.open())) as chunks:
            digest = tar.file(f"{top}/{member.name}", member.size, chunks)
        if digest != listed[member.name].sha256:
            raise ValueError(f"{member.name}: its sha256 is not the one the manifest lists")
    tar.directory(f"{top}/{STACK_FOLDER}")
    for path, data in own_files.items():
        if not path.startswith(f"{STACK_FOLDER}/"):
            continue
        mode = SECRET_MODE if path.removeprefix(f"{STACK_FOLDER}/") in SECRET_FILES else FILE_MODE
        tar.file(f"{top}/{path}", len(data), [data], mode)
    tar.close()


def _unsafe(name: str) -> bool:
    parts = name.split("/")
    return "\x00" in name or "\\" in name or name.startswith("/") or ".." in parts or ":" in parts[0]


def _sha256(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(CHUNK_SIZE), b""):
        digest.update(chunk)
    return digest.hexdigest()


def bundle_problems(archive: BinaryIO, manifest: Manifest, public_key_pem: bytes) -> list[str]:
    """What is wrong with a bundle of ``manifest``'s version, read as a stream; empty when nothing is.

    ``manifest`` is the version's published manifest (its ``bundle`` entry, the bundle itself, is
    left out) and ``public_key_pem`` the key that signed it. The bundle's own manifest must be
    signed by that key (and carry it), name the same order and version, list the same artifacts,
    and list every other file of the bundle with its size and sha256: nothing may lie in the
    bundle that it does not list but the signature and the key, nothing listed may be missing or
    differ, and no member may be a link, a device or a name that leaves the bundle's directory.
    """
    expected = [a for a in manifest.as_stored().artifacts if a.kind != "bundle"]
    top = bundle_folder(manifest.version)
    problems: list[str] = []
    seen: set[str] = set()
    small: dict[str, bytes] = {}
    found: dict[str, tuple[int, str]] = {}
    folders: set[str] = set()
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
                    if inner_name:
                        folders.add(inner_name)
                    continue
                stream = tar.extractfile(member)
                assert stream is not None  # a regular file always has a stream
                if inner_name in UNLISTED_FILES:
                    if member.size > SMALL_FILE_LIMIT:
                        problems.append(f"{inner_name} is too large ({member.size} bytes)")
                    else:
                        small[inner_name] = stream.read()
                else:
                    found[inner_name] = (member.size, _sha256(stream))
    except (tarfile.TarError, OSError, EOFError) as error:
        problems.append(f"the archive cannot be read: {error}")
        return problems
    if top not in seen:
        problems.append(f"no {top}/ directory: not the bundle of portal version {manifest.version}")
    problems.extend(f"{name} is missing" for name in UNLISTED_FILES if name not in small)
    inner, signed_problems = _signed_inner_manifest(small, public_key_pem)
    problems.extend(signed_problems)
    if inner is None:
        return problems
    problems.extend(_inner_manifest_problems(inner, manifest, expected))
    listed = {a.name: (a.size, a.sha256) for a in inner.artifacts}
    listed.update({f.path: (f.size, f.sha256) for f in inner.bundle_files})
    for path in sorted(found):
        if path not in listed:
            problems.append(f"unexpected file {path!r}: the signed manifest does not list it")
        elif found[path][0] != listed[path][0]:
            problems.append(
                f"{path}: {found[path][0]} bytes in the archive, the manifest lists {listed[path][0]}"
            )
        elif found[path][1] != listed[path][1]:
            problems.append(f"{path}: its sha256 differs from the signed manifest's")
    problems.extend(f"{path} is missing" for path in listed if path not in found)
    allowed_folders = {path.rsplit("/", 1)[0] for path in listed if "/" in path}
    problems.extend(f"unexpected directory {folder!r}" for folder in sorted(folders - allowed_folders))
    return problems


def _signed_inner_manifest(
    small: Mapping[str, bytes], public_key_pem: bytes
) -> tuple[Manifest | None, list[str]]:
    """The bundle's own manifest once its signature by the trusted key is good."""
    stored, signature, key = (small.get(n) for n in (MANIFEST_NAME, SIGNATURE_NAME, PUBLIC_KEY_NAME))
    if stored is None or signature is None or key is None:
        return None, []
    problems = []
    if key.strip() != public_key_pem.strip():
        problems.append(f"{PUBLIC_KEY_NAME} is not the key that signed the version's manifest")
    try:
        good = verify_signature(public_key_pem, stored, signature)
    except ValueError as error:
        return None, [*problems, f"the signing key: {error}"]
    if not good:
        return None, [
            *problems,
            f"{SIGNATURE_NAME} is not a good signature of {MANIFEST_NAME} by the signing key",
        ]
    try:
        return Manifest.model_validate_json(stored), problems
    except ValidationError as error:
        return None, [
            *problems,
            f"{MANIFEST_NAME} is signed but not a valid manifest: {error.error_count()} error(s)",
        ]


def _inner_manifest_problems(
    inner: Manifest, published: Manifest, expected: Sequence[ManifestArtifact]
) -> list[str]:
    problems = []
    if (inner.cfg_id, inner.version) != (published.cfg_id, published.version):
        problems.append(
            f"{MANIFEST_NAME} is of order {inner.cfg_id} version {inner.version}, "
            f"not {published.cfg_id} version {published.version}"
        )
    if [a.model_dump() for a in inner.artifacts] != [a.model_dump() for a in expected]:
        problems.append(f"{MANIFEST_NAME} lists other artifacts than the version's manifest")
    return problems
