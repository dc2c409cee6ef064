"""Verify a downloaded portal version: the signature of its manifest.json, then each file it lists.

    python -m portal_verify FOLDER [--key KEY.pem] [--complete]
    python portal_verify.py FOLDER [--key KEY.pem] [--complete]    (this file alone, any name)

FOLDER is a copy of one portal version folder: ``manifest.json``, ``manifest.json.sig`` and the
files downloaded beside them under their names. It may also be the version's air-gap bundle, a
``.tar`` holding one directory with the same files, read in place (nothing is extracted).

The signature is checked first, with the public key of ``--key``: take it from the portal's
published signing keys (``<portal>/signing-keys/<key id>.pem``). Without ``--key`` the
``signing-key.pem`` beside the manifest is used, with a warning: a key that travels with the files
only shows that they agree with each other, so compare its key id and fingerprint with the ones
the portal publishes. Then each listed file present is checked against its size and sha256;
files not downloaded are a failure only with ``--complete``. Exit status 0: all checks passed.

The same signature check with openssl alone, in the folder:

    openssl pkeyutl -verify -pubin -inkey signing-key.pem -rawin -in manifest.json -sigfile manifest.json.sig

Needs Python 3.9 or later and the ``cryptography`` package (``pip install cryptography``).
"""

# Customers get this one file, so it imports only the standard library and cryptography: the few
# rules it shares with the platform (file names, the artifact name pattern, the key id and
# fingerprint) are written out again here rather than imported from the platform's packages.

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
PUBLIC_KEY_NAME = "signing-key.pem"
# contracts.s3_layout.ARTIFACT_NAME_PATTERN: one path segment, no leading dot or dash.
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
SIGNATURE_SIZE = 64
# manifest.json, its signature and the key are read whole: a bound keeps a hostile copy from
# filling memory. The artifacts are read in chunks.
SMALL_FILE_LIMIT = 16 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024

OK = "OK"
MISMATCH = "MISMATCH"


class VerifyError(Exception):
    """A check that stops the verification: the message says what is wrong, the exit status is 1."""


class VersionCopy(Protocol):
    """A copy of a portal version: a folder, or the inside of an air-gap bundle."""

    where: str
    absent: str

    def read_small(self, name: str) -> bytes | None: ...
    def size(self, name: str) -> int | None: ...
    def sha256(self, name: str) -> str: ...


class FolderCopy:
    absent = "not downloaded"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)

    def read_small(self, name: str) -> bytes | None:
        size = self.size(name)
        if size is None:
            return None
        if size > SMALL_FILE_LIMIT:
            raise VerifyError(f"{self.folder / name} is too large ({size} bytes) to be a {name}")
        return (self.folder / name).read_bytes()

    def size(self, name: str) -> int | None:
        path = self.folder / name
        return path.stat().st_size if path.is_file() else None

    def sha256(self, name: str) -> str:
        with (self.folder / name).open("rb") as stream:
            return _sha256(stream)


class TarCopy:
    """The files of an air-gap bundle, read from the archive member by member."""

    absent = "not in archive"

    def __init__(self, archive: tarfile.TarFile, path: Path) -> None:
        self.archive = archive
        top, self.members = _bundle_members(archive)
        self.where = f"{path} (directory {top!r})"

    def read_small(self, name: str) -> bytes | None:
        member = self.members.get(name)
        if member is None:
            return None
        if member.size > SMALL_FILE_LIMIT:
            raise VerifyError(f"{name} in {self.where} is too large ({member.size} bytes)")
        with self._open(member) as stream:
            return stream.read()

    def size(self, name: str) -> int | None:
        member = self.members.get(name)
        return None if member is None else member.size

    def sha256(self, name: str) -> str:
        with self._open(self.members[name]) as stream:
            return _sha256(stream)

    def _open(self, member: tarfile.TarInfo) -> IO[bytes]:
        stream = self.archive.extractfile(member)
        if stream is None:  # only a regular file is ever in self.members
            raise VerifyError(f"{member.name!r} in {self.where} is not a regular file")
        return stream


def _bundle_members(archive: tarfile.TarFile) -> tuple[str, dict[str, tarfile.TarInfo]]:
    """The archive's single top-level directory and its files by their path inside it.

    Nothing is extracted, but a name that would escape a directory on extraction, a link or a
    device is refused all the same: such a bundle did not come from the portal.
    """
    top: str | None = None
    files: dict[str, tarfile.TarInfo] = {}
    try:
        members = archive.getmembers()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise VerifyError(f"the archive cannot be read: {error}") from None
    for member in members:
        parts = _safe_parts(member.name)
        if not parts:
            continue  # "." or "./": the archive's own root
        if top is None:
            top = parts[0]
        elif parts[0] != top:
            raise VerifyError(
                f"archive member {member.name!r} is outside {top!r}: a bundle holds one top-level directory"
            )
        if member.isdir():
            continue
        if not member.isfile():
            raise VerifyError(f"unsafe archive member {member.name!r}: a link or device, not a file")
        if len(parts) == 1:
            raise VerifyError(f"archive member {member.name!r} is not inside the top-level directory")
        inner = "/".join(parts[1:])
        if inner in files:
            raise VerifyError(f"the archive holds {member.name!r} twice")
        files[inner] = member
    if top is None:
        raise VerifyError("the archive is empty")
    return top, files


def _safe_parts(name: str) -> list[str]:
    if "\x00" in name or "\\" in name or name.startswith("/"):
        raise VerifyError(f"unsafe archive member name {name!r}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts or (parts and ":" in parts[0]):
        raise VerifyError(f"unsafe archive member name {name!r}")
    return parts


def _sha256(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: stream.read(CHUNK_SIZE), b""):
        digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def open_copy(path: Path) -> Iterator[VersionCopy]:
    if path.is_dir():
        yield FolderCopy(path)
        return
    if not path.is_file():
        raise VerifyError(f"{path}: no such folder or archive")
    if not tarfile.is_tarfile(path):
        raise VerifyError(f"{path} is neither a folder nor a tar archive")
    try:
        with tarfile.open(path, "r:*") as archive:
            yield TarCopy(archive, path)
    except tarfile.TarError as error:
        # Also when a member turns out truncated while it is read.
        raise VerifyError(f"{path} cannot be read as a tar archive: {error}") from None


def key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    """delivery.manifest_signing's key id: the first 16 hex characters of sha256(raw public key)."""
    return _raw_digest(public_key).hex()[:16]


def fingerprint(public_key: ed25519.Ed25519PublicKey) -> str:
    """delivery.manifest_signing's fingerprint: "SHA256:" + unpadded base64 of sha256(raw public key)."""
    return "SHA256:" + base64.b64encode(_raw_digest(public_key)).decode("ascii").rstrip("=")


def _raw_digest(public_key: ed25519.Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()


def _public_key(pem: bytes, source: str) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise VerifyError(f"{source} is not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise VerifyError(f"{source} is not an Ed25519 public key")
    return key


def _signing_key(copy: VersionCopy, key_file: Path | None) -> tuple[ed25519.Ed25519PublicKey, bool]:
    """The public key to check with, and whether it is the one that came with the files."""
    if key_file is not None:
        if not key_file.is_file():
            raise VerifyError(f"{key_file}: no such key file")
        if key_file.stat().st_size > SMALL_FILE_LIMIT:
            raise VerifyError(f"{key_file} is too large to be a public key")
        return _public_key(key_file.read_bytes(), str(key_file)), False
    pem = copy.read_small(PUBLIC_KEY_NAME)
    if pem is None:
        raise VerifyError(
            f"no {PUBLIC_KEY_NAME} in {copy.where}: pass --key with the key the portal publishes"
        )
    return _public_key(pem, f"{PUBLIC_KEY_NAME} in {copy.where}"), True


def _check_signature(copy: VersionCopy, public_key: ed25519.Ed25519PublicKey) -> bytes:
    """manifest.json's bytes, once its signature is proven good."""
    manifest = copy.read_small(MANIFEST_NAME)
    if manifest is None:
        raise VerifyError(f"no {MANIFEST_NAME} in {copy.where}")
    signature = copy.read_small(SIGNATURE_NAME)
    if signature is None:
        raise VerifyError(
            f"no {SIGNATURE_NAME} in {copy.where}: without it {MANIFEST_NAME} cannot be trusted "
            "(download it from the portal version beside the manifest)"
        )
    if len(signature) != SIGNATURE_SIZE:
        raise VerifyError(
            f"BAD SIGNATURE: {SIGNATURE_NAME} is not an Ed25519 signature "
            f"({len(signature)} bytes, not {SIGNATURE_SIZE})"
        )
    try:
        public_key.verify(signature, manifest)
    except InvalidSignature:
        raise VerifyError(
            f"BAD SIGNATURE: {MANIFEST_NAME} was not signed by key {key_id(public_key)}, "
            "or it was changed after signing. Do not use these files."
        ) from None
    return manifest


def _listed_artifacts(manifest: bytes) -> tuple[dict[str, Any], list[tuple[str, int, str]]]:
    """The manifest document and its artifacts as (name, size, sha256)."""
    try:
        document = json.loads(manifest)
        listed = [(a["name"], a["size"], a["sha256"]) for a in document["artifacts"]]
    except (ValueError, TypeError, KeyError):
        raise VerifyError(f"{MANIFEST_NAME} is signed but is not a portal manifest") from None
    for name, size, sha256 in listed:
        if not (isinstance(name, str) and ARTIFACT_NAME.fullmatch(name)):
            raise VerifyError(f"{MANIFEST_NAME} lists an unsafe file name {name!r}")
        if not (type(size) is int and size >= 0 and isinstance(sha256, str) and SHA256_HEX.fullmatch(sha256)):
            raise VerifyError(f"{MANIFEST_NAME} lists {name} without a valid size and sha256")
    return document, listed


def _check_file(copy: VersionCopy, name: str, size: int, sha256: str) -> tuple[str, str]:
    """The file's status (OK, MISMATCH or the copy's word for absent) and what differs."""
    found = copy.size(name)
    if found is None:
        return copy.absent, ""
    if found != size:
        return MISMATCH, f"{found} bytes, the manifest says {size}"
    if copy.sha256(name) != sha256:
        return MISMATCH, "sha256 differs from the manifest"
    return OK, ""


def verify(copy: VersionCopy, *, key_file: Path | None, complete: bool) -> int:
    public_key, shipped = _signing_key(copy, key_file)
    source = f"{PUBLIC_KEY_NAME} in {copy.where}" if shipped else str(key_file)
    print(f"signing key: key id {key_id(public_key)}, fingerprint {fingerprint(public_key)} ({source})")
    if shipped:
        print(
            f"warning: checking with the {PUBLIC_KEY_NAME} that came with the files, which proves only "
            "that they agree with each other. Compare the key id and fingerprint above with the key "
            f"the portal publishes (<portal>/signing-keys/{key_id(public_key)}.pem), or pass --key "
            "with that file.",
            file=sys.stderr,
        )
    document, listed = _listed_artifacts(_check_signature(copy, public_key))
    print(
        f"signature: OK ({MANIFEST_NAME} of order {document.get('cfg_id')}, "
        f"portal version {document.get('version')}, {len(listed)} files)"
    )
    counts = {OK: 0, MISMATCH: 0, copy.absent: 0}
    width = max(len(status) for status in counts)
    for name, size, sha256 in listed:
        status, detail = _check_file(copy, name, size, sha256)
        counts[status] += 1
        print(f"{status:<{width}}  {name}" + (f" ({detail})" if detail else ""))
    failures = []
    if counts[MISMATCH]:
        failures.append(f"{counts[MISMATCH]} file(s) do not match the manifest")
    if complete and counts[copy.absent]:
        failures.append(f"{counts[copy.absent]} file(s) {copy.absent} (--complete)")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    absent = f", {counts[copy.absent]} {copy.absent}" if counts[copy.absent] else ""
    print(f"verified: {counts[OK]} file(s) match the signed manifest{absent}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="portal_verify",
        description="Verify a downloaded portal version (folder or air-gap bundle .tar) against its signed manifest.",
    )
    parser.add_argument(
        "folder",
        type=Path,
        help="the version folder (manifest.json, manifest.json.sig, files) or a bundle .tar",
    )
    parser.add_argument(
        "--key",
        type=Path,
        help=f"the portal's published public key (default: {PUBLIC_KEY_NAME} in FOLDER, with a warning)",
    )
    parser.add_argument("--complete", action="store_true", help="fail when a listed file is not in FOLDER")
    args = parser.parse_args(argv)
    try:
        with open_copy(args.folder) as copy:
            return verify(copy, key_file=args.key, complete=args.complete)
    except VerifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (OSError, tarfile.TarError) as error:
        # A file that cannot be read (permissions, a truncated archive) is a failed check, not a crash.
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
