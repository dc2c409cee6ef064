"""Checks an artifact's real consumer would run, as plain functions the asset checks call.

Each returns the problems it found; an empty list means the check passed.
"""

from __future__ import annotations

import io

import pycdlib

from contracts.manifest import Manifest
from delivery.artifact_store import ArtifactStore

SEED_FILES = ("user-data", "meta-data")


def manifest_artifact_problems(manifest: Manifest, store: ArtifactStore) -> list[str]:
    """Every listed object exists in the bucket with the size and sha256 the manifest records."""
    problems: list[str] = []
    for artifact in manifest.artifacts:
        if store.head(artifact.key) is None:
            problems.append(f"{artifact.name}: {artifact.key} does not exist")
            continue
        # Streamed: an ISO, the edge images or an air-gap bundle is hundreds of MB.
        size, sha256 = store.digest(artifact.key)
        if size != artifact.size:
            problems.append(f"{artifact.name}: size {size} != {artifact.size} in the manifest")
        if sha256 != artifact.sha256:
            problems.append(f"{artifact.name}: sha256 differs from the manifest")
    return problems


def cfn_lint_problems(template: bytes, region: str) -> list[str]:
    """cfn-lint's errors and warnings, as its own messages."""
    # Imported here: about 1 s per process, and only a cloud order's check needs it.
    from cfnlint.api import ManualArgs, lint

    matches = lint(template.decode("utf-8"), config=ManualArgs(regions=[region]))
    return [str(match) for match in matches]


def seed_iso_problems(image: bytes) -> list[str]:
    """The image reads back as a NoCloud seed: volume ``cidata`` with user-data and meta-data."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open_fp(io.BytesIO(image))
    except pycdlib.pycdlibexception.PyCdlibException as exc:
        return [f"not an ISO 9660 image: {exc}"]
    try:
        problems: list[str] = []
        volume = iso.pvd.volume_identifier.decode("ascii", "replace").strip()
        if volume != "cidata":
            problems.append(f"volume label is {volume!r}, cloud-init looks for 'cidata'")
        for name in SEED_FILES:
            try:
                with iso.open_file_from_iso(rr_path=f"/{name}") as entry:
                    if not entry.read():
                        problems.append(f"{name} is empty")
            except pycdlib.pycdlibexception.PyCdlibException:
                problems.append(f"{name} is missing (Rock Ridge path /{name})")
        if not problems:
            with iso.open_file_from_iso(rr_path="/user-data") as entry:
                if not entry.read().startswith(b"#cloud-config"):
                    problems.append("user-data does not start with #cloud-config")
        return problems
    finally:
        iso.close()
