"""Verify a downloaded portal version against the portal's key: its signed manifest.json, every file,
and the signed provenance.

    python -m portal_verify PATH --fingerprint SHA256:... [--cfg-id ID] [--version N] [--keys KEYS.json]
    python -m portal_verify PATH --key KEY.pem [...]
    python portal_verify.py PATH ...                 (this file alone, under any name)

PATH is the version's air-gap bundle (``airgap-bundle-v<N>.tar``, read in place: nothing is
extracted), the folder it was extracted to, or a folder of files downloaded from the version's
portal page beside its ``manifest.json`` and ``manifest.json.sig``.

A trust anchor is required: the portal's public key (``--key``, from
``<portal>/signing-keys/<key id>.pem``), its fingerprint (``--fingerprint``, as the version's portal
page and ``<portal>/signing-keys`` show it), or the portal's key list (``--keys``, the JSON of
``<portal>/signing-keys`` saved to a file). The key beside the manifest (``signing-key.pem``) is
used only when it is the anchor's. With ``--keys`` a manifest signed by a key revoked before the
manifest was created is refused. ``--cfg-id`` and ``--version`` check that the manifest is the
one of that order and portal version (a valid signature of another order's manifest proves
nothing about this one).

Then every file is checked. The manifest lists each file of the version with its size and
sha256; a bundle's own manifest also lists its README, its page and every file of ``stack/``. Any
file that is not listed (but the signature and the key), missing, of another size or sha256, a
link, or with an unsafe name fails the verification, naming it. ``--partial`` lets a folder of
downloads lack files. Last, the provenance (``provenance.intoto.jsonl``, a DSSE envelope) must
be signed by the same key and name exactly the version's artifacts with their sha256.

Exit status 0: everything passed; 1: a check failed; 2: no trust anchor or a wrong argument.

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
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"
PUBLIC_KEY_NAME = "signing-key.pem"
# The portal's page of a version: re-rendered when the version is withdrawn, so a folder of
# downloads may hold it unsigned. A bundle's own page is listed like any other file.
PAGE_NAME = "index.html"
UNLISTED = (MANIFEST_NAME, SIGNATURE_NAME, PUBLIC_KEY_NAME)
# contracts.s3_layout.ARTIFACT_NAME_PATTERN: one path segment, no leading dot or dash.
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# contracts.manifest.BUNDLE_PATH_PATTERN: a name, or one folder and a name.
BUNDLE_PATH = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,127}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
SIGNATURE_SIZE = 64
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
# manifest.json, its signature, the key and the provenance are read whole: a bound keeps a hostile
# copy from filling memory. The artifacts are read in chunks.
SMALL_FILE_LIMIT = 16 * 1024 * 1024
CHUNK_SIZE = 1024 * 1024

OK = "OK"
MISMATCH = "MISMATCH"
MISSING = "MISSING"
UNLISTED_FILE = "UNLISTED"
NOT_DOWNLOADED = "not downloaded"


class VerifyError(Exception):
    """A check that stops the verification: the message says what is wrong, the exit status is 1."""


class UsageError(Exception):
    """The verification cannot start (no trust anchor): the exit status is 2."""


class VersionCopy(Protocol):
    """A copy of a portal version: a folder, or the inside of an air-gap bundle."""

    where: str
    is_bundle: bool

    def files(self) -> list[str]: ...
    def read_small(self, name: str) -> bytes | None: ...
    def size(self, name: str) -> int | None: ...
    def sha256(self, name: str) -> str: ...


class FolderCopy:
    is_bundle = False

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.where = str(folder)
        self._files = _folder_files(folder)

    def files(self) -> list[str]:
        return list(self._files)

    def read_small(self, name: str) -> bytes | None:
        size = self.size(name)
        if size is None:
            return None
        if size > SMALL_FILE_LIMIT:
            raise VerifyError(f"{self.folder / name} is too large ({size} bytes) to be a {name}")
        return (self.folder / name).read_bytes()

    def size(self, name: str) -> int | None:
        return self._files.get(name)

    def sha256(self, name: str) -> str:
        with (self.folder / name).open("rb") as stream:
            return _sha256(stream)


def _folder_files(folder: Path) -> dict[str, int]:
    """Every regular file under ``folder`` by its path there; a link or a device stops the check."""
    files: dict[str, int] = {}
    pending = [folder]
    while pending:
        current = pending.pop()
        for entry in sorted(current.iterdir()):
            relative = entry.relative_to(folder).as_posix()
            if entry.is_symlink():
                raise VerifyError(f"{relative} is a link: a copy of a portal version holds none")
            if entry.is_dir():
                pending.append(entry)
            elif entry.is_file():
                files[relative] = entry.stat().st_size
            else:
                raise VerifyError(f"{relative} is not a regular file")
    return files


class TarCopy:
    """The files of an air-gap bundle, read from the archive member by member."""

    is_bundle = True

    def __init__(self, archive: tarfile.TarFile, path: Path) -> None:
        self.archive = archive
        top, self.members = _bundle_members(archive)
        self.where = f"{path} (directory {top!r})"

    def files(self) -> list[str]:
        return list(self.members)

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


def _read_anchor_file(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise VerifyError(f"{path}: no such {what}")
    if path.stat().st_size > SMALL_FILE_LIMIT:
        raise VerifyError(f"{path} is too large to be a {what}")
    return path.read_bytes()


def _key_list(path: Path) -> list[dict[str, Any]]:
    """The keys of a saved ``<portal>/signing-keys`` answer."""
    try:
        listed = json.loads(_read_anchor_file(path, "key list"))["keys"]
        if not isinstance(listed, list) or not all(isinstance(k, dict) for k in listed):
            raise TypeError
    except (ValueError, TypeError, KeyError):
        raise VerifyError(
            f"{path} is not the portal's key list (the JSON of <portal>/signing-keys)"
        ) from None
    return listed


def _trusted_key(
    copy: VersionCopy,
    *,
    key_file: Path | None,
    expected_fingerprint: str | None,
    keys: list[dict[str, Any]] | None,
) -> tuple[ed25519.Ed25519PublicKey, str]:
    """The anchor's public key, and where it came from."""
    if key_file is not None:
        return _public_key(_read_anchor_file(key_file, "key file"), str(key_file)), str(key_file)
    shipped_pem = copy.read_small(PUBLIC_KEY_NAME)
    if shipped_pem is None:
        raise VerifyError(
            f"no {PUBLIC_KEY_NAME} in {copy.where}: pass --key with the key the portal publishes"
        )
    shipped = _public_key(shipped_pem, f"{PUBLIC_KEY_NAME} in {copy.where}")
    wanted = expected_fingerprint
    source = f"{PUBLIC_KEY_NAME}, fingerprint as given"
    if wanted is None and keys is not None:
        listed = [k.get("fingerprint") for k in keys]
        if fingerprint(shipped) not in listed:
            raise VerifyError(
                f"{PUBLIC_KEY_NAME} (key id {key_id(shipped)}, {fingerprint(shipped)}) is not a key the "
                "portal's key list names: these files were not signed by the portal"
            )
        wanted, source = fingerprint(shipped), f"{PUBLIC_KEY_NAME}, listed in the portal's key list"
    if wanted is None:
        raise UsageError(
            "no trust anchor: a key that travels with the files proves only that they agree with each other. "
            f"Pass --fingerprint with the fingerprint the version's portal page shows (this copy's key is "
            f"{key_id(shipped)}), or --key with <portal>/signing-keys/{key_id(shipped)}.pem, "
            "or --keys with the JSON of <portal>/signing-keys"
        )
    if fingerprint(shipped) != wanted:
        raise VerifyError(
            f"BAD KEY: {PUBLIC_KEY_NAME} has fingerprint {fingerprint(shipped)}, not {wanted}: "
            "these files were not signed by the portal's key. Do not use them."
        )
    return shipped, source


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


def _parse_time(value: Any, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise VerifyError(f"{what} {value!r} is not a time") from None
    # timezone.utc, not datetime.UTC (Python 3.11+): customers run this file on Python 3.9 and later.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)  # noqa: UP017


def _check_revocation(
    document: dict[str, Any], public_key: ed25519.Ed25519PublicKey, keys: list[dict[str, Any]]
) -> str:
    entry = next((k for k in keys if k.get("fingerprint") == fingerprint(public_key)), None)
    if entry is None:
        raise VerifyError(f"key {key_id(public_key)} is not in the portal's key list: not the portal's key")
    revoked_at = entry.get("revoked_at")
    if revoked_at is None:
        return "not revoked"
    revoked = _parse_time(revoked_at, "revoked_at")
    created = _parse_time(document.get("created_at"), f"{MANIFEST_NAME}'s created_at")
    if created >= revoked:
        reason = entry.get("revocation_reason") or "no reason given"
        raise VerifyError(
            f"REVOKED KEY: key {key_id(public_key)} was revoked from {revoked_at} ({reason}); "
            f"this manifest was created {document.get('created_at')}. Do not use these files."
        )
    return f"revoked from {revoked_at}, after this manifest was signed"


def _listed_files(manifest: bytes) -> tuple[dict[str, Any], dict[str, tuple[int, str]]]:
    """The manifest document and every file it lists: path -> (size, sha256)."""
    try:
        document = json.loads(manifest)
        entries = [(a["name"], a["size"], a["sha256"], ARTIFACT_NAME) for a in document["artifacts"]]
        entries += [
            (f["path"], f["size"], f["sha256"], BUNDLE_PATH) for f in document.get("bundle_files", [])
        ]
    except (ValueError, TypeError, KeyError):
        raise VerifyError(f"{MANIFEST_NAME} is signed but is not a portal manifest") from None
    listed: dict[str, tuple[int, str]] = {}
    for name, size, sha256, pattern in entries:
        if not (isinstance(name, str) and pattern.fullmatch(name) and ".." not in name):
            raise VerifyError(f"{MANIFEST_NAME} lists an unsafe file name {name!r}")
        if not (type(size) is int and size >= 0 and isinstance(sha256, str) and SHA256_HEX.fullmatch(sha256)):
            raise VerifyError(f"{MANIFEST_NAME} lists {name} without a valid size and sha256")
        if name in listed or name in UNLISTED:
            raise VerifyError(f"{MANIFEST_NAME} lists {name} twice")
        listed[name] = (size, sha256)
    return document, listed


def _check_file(copy: VersionCopy, name: str, size: int, sha256: str) -> tuple[str, str]:
    """The file's status and what differs."""
    found = copy.size(name)
    if found is None:
        return MISSING, ""
    if found != size:
        return MISMATCH, f"{found} bytes, the manifest says {size}"
    if copy.sha256(name) != sha256:
        return MISMATCH, "sha256 differs from the manifest"
    return OK, ""


def _pae(payload_type: bytes, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the envelope's signature signs."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(payload), payload)


def _check_provenance(
    copy: VersionCopy, document: dict[str, Any], public_key: ed25519.Ed25519PublicKey
) -> str:
    """The provenance's signature and subjects against the manifest; what it covers."""
    entry = next((a for a in document["artifacts"] if a.get("kind") == "provenance"), None)
    if entry is None:
        return "none in this version"
    data = copy.read_small(entry["name"])
    if data is None:
        return f"{entry['name']} {NOT_DOWNLOADED}"
    try:
        envelope = json.loads(data)
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
    except (ValueError, TypeError, KeyError):
        raise VerifyError(f"{entry['name']} is not a DSSE envelope") from None
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise VerifyError(f"{entry['name']}: payload type {payload_type!r}, not an in-toto statement")
    signed = _pae(payload_type.encode("utf-8"), payload)
    good = False
    for signature in signatures:
        try:
            public_key.verify(signature, signed)
            good = True
        except InvalidSignature:
            continue
    if not good:
        raise VerifyError(f"BAD SIGNATURE: {entry['name']} is not signed by key {key_id(public_key)}")
    try:
        statement = json.loads(payload)
        subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    except (ValueError, TypeError, KeyError):
        raise VerifyError(f"{entry['name']} holds no in-toto statement with subjects") from None
    try:
        parameters = statement["predicate"]["buildDefinition"]["externalParameters"]
        about = (parameters["cfg_id"], parameters["portalVersion"])
    except (TypeError, KeyError):
        raise VerifyError(f"{entry['name']} does not name the order and portal version it is of") from None
    if about != (document.get("cfg_id"), document.get("version")):
        raise VerifyError(
            f"{entry['name']} is the provenance of order {about[0]} version {about[1]}, not of this manifest's"
        )
    expected = {
        a["name"]: a["sha256"] for a in document["artifacts"] if a.get("kind") not in ("provenance", "bundle")
    }
    if subjects != expected:
        differ = sorted(set(subjects.items()) ^ set(expected.items()))
        names = sorted({name for name, _ in differ})
        raise VerifyError(f"{entry['name']} names other artifacts than {MANIFEST_NAME}: {', '.join(names)}")
    return f"OK ({len(subjects)} artifacts, signed by key {key_id(public_key)})"


def verify(
    copy: VersionCopy,
    *,
    key_file: Path | None = None,
    expected_fingerprint: str | None = None,
    keys_file: Path | None = None,
    cfg_id: str | None = None,
    version: int | None = None,
    partial: bool = False,
) -> int:
    keys = _key_list(keys_file) if keys_file is not None else None
    public_key, source = _trusted_key(
        copy, key_file=key_file, expected_fingerprint=expected_fingerprint, keys=keys
    )
    print(f"signing key: key id {key_id(public_key)}, fingerprint {fingerprint(public_key)} ({source})")
    document, listed = _listed_files(_check_signature(copy, public_key))
    print(
        f"signature: OK ({MANIFEST_NAME} of order {document.get('cfg_id')}, "
        f"portal version {document.get('version')}, {len(listed)} files)"
    )
    if keys is not None:
        print(f"key: {_check_revocation(document, public_key, keys)}")
    if cfg_id is not None and document.get("cfg_id") != cfg_id:
        raise VerifyError(f"WRONG ORDER: {MANIFEST_NAME} is of order {document.get('cfg_id')}, not {cfg_id}")
    if version is not None and document.get("version") != version:
        raise VerifyError(
            f"WRONG VERSION: {MANIFEST_NAME} is of portal version {document.get('version')}, not {version}"
        )
    bundle_listing = bool(document.get("bundle_files"))
    # A bundle, packed or unpacked, is whole or it is not the bundle: only downloads may lack files.
    may_lack = partial and not copy.is_bundle and not bundle_listing
    statuses: list[tuple[str, str, str]] = []
    for name, (size, sha256) in listed.items():
        status, detail = _check_file(copy, name, size, sha256)
        if status == MISSING and may_lack:
            status = NOT_DOWNLOADED
        statuses.append((status, name, detail))
    for name in sorted(set(copy.files()) - set(listed) - set(UNLISTED)):
        if name == PAGE_NAME and not copy.is_bundle and not bundle_listing:
            statuses.append(
                ("unsigned", name, "the portal's page, not listed: it changes when a version is withdrawn")
            )
            continue
        statuses.append((UNLISTED_FILE, name, "not in the signed manifest"))
    width = max((len(status) for status, _, _ in statuses), default=2)
    for status, name, detail in statuses:
        print(f"{status:<{width}}  {name}" + (f" ({detail})" if detail else ""))
    failed = [
        f"{name} ({status})" for status, name, _ in statuses if status in (MISMATCH, MISSING, UNLISTED_FILE)
    ]
    if failed:
        print(f"FAILED: {len(failed)} file(s): " + ", ".join(failed))
        return 1
    print(f"provenance: {_check_provenance(copy, document, public_key)}")
    checked = sum(1 for status, _, _ in statuses if status == OK)
    absent = sum(1 for status, _, _ in statuses if status == NOT_DOWNLOADED)
    print(
        f"verified: {checked} file(s) match the signed manifest"
        + (f", {absent} {NOT_DOWNLOADED}" if absent else "")
    )
    return 0


def _fingerprint_arg(value: str) -> str:
    value = value.strip()
    if not FINGERPRINT.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a key fingerprint (SHA256: and 43 base64 characters)"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="portal_verify",
        description="Verify a downloaded portal version (air-gap bundle .tar, or a folder) against the portal's key.",
    )
    parser.add_argument(
        "path", type=Path, help="the air-gap bundle .tar, its extracted folder, or a folder of downloads"
    )
    parser.add_argument(
        "--key", type=Path, help="the portal's public key file (<portal>/signing-keys/<key id>.pem)"
    )
    parser.add_argument(
        "--fingerprint",
        type=_fingerprint_arg,
        help="the fingerprint of the portal's key, as the version's page and <portal>/signing-keys show it",
    )
    parser.add_argument(
        "--keys",
        type=Path,
        help="the portal's key list (the JSON of <portal>/signing-keys): refuses revoked keys",
    )
    parser.add_argument("--cfg-id", help="fail unless the manifest is of this order")
    parser.add_argument("--version", type=int, help="fail unless the manifest is of this portal version")
    parser.add_argument(
        "--partial", action="store_true", help="a folder of downloads may lack listed files (never a bundle)"
    )
    # Listed files missing fail by default now; the flag of earlier releases is kept for scripts.
    parser.add_argument("--complete", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.key is not None and args.fingerprint is not None:
        parser.error("give --key or --fingerprint, not both")
    try:
        with open_copy(args.path) as copy:
            return verify(
                copy,
                key_file=args.key,
                expected_fingerprint=args.fingerprint,
                keys_file=args.keys,
                cfg_id=args.cfg_id,
                version=args.version,
                partial=args.partial,
            )
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except VerifyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (OSError, tarfile.TarError) as error:
        # A file that cannot be read (permissions, a truncated archive) is a failed check, not a crash.
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
