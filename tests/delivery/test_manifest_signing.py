"""Signing portal manifests: what a customer's openssl accepts, and the key's names and storage."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from contracts.manifest import Manifest, ManifestArtifact
from delivery.manifest_signing import (
    PUBLIC_KEY_NAME,
    SIGNATURE_NAME,
    ManifestSigner,
    fingerprint_of,
    key_id_of,
    verify_signature,
)
from delivery.portal import MANIFEST_NAME, manifest_json
from tests.conftest import run_captured

CFG_ID = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"


def a_manifest(version: int = 1) -> Manifest:
    content = b"the edp archive"
    return Manifest(
        cfg_id=CFG_ID,
        version=version,
        created_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        deployment_target="cloud",
        artifacts=[
            ManifestArtifact(
                kind="edp",
                name="edp.tar.gz",
                key=f"portal/{CFG_ID}/v{version}/edp.tar.gz",
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
            )
        ],
    )


def test_a_signature_verifies_with_the_public_key() -> None:
    signer = ManifestSigner.generate()
    data = manifest_json(a_manifest())

    signature = signer.sign(data)

    assert len(signature) == 64
    assert verify_signature(signer.public_pem(), data, signature)


def test_a_changed_manifest_fails_verification() -> None:
    signer = ManifestSigner.generate()
    signature = signer.sign(manifest_json(a_manifest(version=1)))

    assert not verify_signature(signer.public_pem(), manifest_json(a_manifest(version=2)), signature)


def test_another_key_fails_verification() -> None:
    data = manifest_json(a_manifest())
    signature = ManifestSigner.generate().sign(data)

    assert not verify_signature(ManifestSigner.generate().public_pem(), data, signature)


def test_the_key_id_is_stable_and_names_one_key() -> None:
    signer = ManifestSigner.generate()
    reloaded = ManifestSigner.from_pem(signer.private_pem())

    assert reloaded.key_id == signer.key_id == key_id_of(signer.public_pem())
    assert len(signer.key_id) == 16 and int(signer.key_id, 16) >= 0
    assert reloaded.fingerprint == signer.fingerprint == fingerprint_of(signer.public_pem())
    assert signer.fingerprint.startswith("SHA256:")
    other = ManifestSigner.generate()
    assert other.key_id != signer.key_id
    assert other.fingerprint != signer.fingerprint


def test_the_repr_names_the_key_and_hides_the_private_key() -> None:
    signer = ManifestSigner.generate()
    private_body = b"".join(signer.private_pem().splitlines()[1:-1]).decode()

    shown = repr(signer)

    assert signer.key_id in shown
    assert private_body not in shown and private_body[:12] not in shown
    assert "PRIVATE" not in shown


def _rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    "pem",
    [
        pytest.param(_rsa_pem(), id="rsa"),
        pytest.param(b"SECRET-garbage-value-0123456789", id="garbage"),
        pytest.param(ManifestSigner.generate().public_pem(), id="a public key"),
        pytest.param(
            ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"password"),
            ),
            id="encrypted ed25519",
        ),
    ],
)
def test_from_pem_refuses_what_is_not_an_ed25519_private_key_without_echoing_it(pem: bytes) -> None:
    with pytest.raises(ValueError, match="MANIFEST_SIGNING_KEY") as raised:
        ManifestSigner.from_pem(pem)

    message = str(raised.value)
    for line in pem.splitlines():
        if len(line) > 8 and not line.startswith(b"-----"):
            assert line.decode()[:12] not in message
    # Nothing chained either: a traceback in a log would show the library's message.
    error = raised.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def a_signed_folder(folder: Path, signer: ManifestSigner) -> Path:
    """A version folder as the portal stores it: manifest.json, its signature and the public key."""
    folder.mkdir(parents=True, exist_ok=True)
    data = manifest_json(a_manifest())
    (folder / MANIFEST_NAME).write_bytes(data)
    (folder / SIGNATURE_NAME).write_bytes(signer.sign(data))
    (folder / PUBLIC_KEY_NAME).write_bytes(signer.public_pem())
    return folder


OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed on this machine")
CUSTOMER_VERIFY = [
    "pkeyutl",
    "-verify",
    "-pubin",
    "-inkey",
    PUBLIC_KEY_NAME,
    "-rawin",
    "-in",
    MANIFEST_NAME,
    "-sigfile",
    SIGNATURE_NAME,
]


@needs_openssl
def test_openssl_verifies_the_signature_as_the_customer_runs_it(tmp_path: Path) -> None:
    folder = a_signed_folder(tmp_path / "v1", ManifestSigner.generate())

    verified = run_captured([str(OPENSSL), *CUSTOMER_VERIFY], cwd=folder)

    assert verified.returncode == 0, verified.stderr
    assert "Signature Verified Successfully" in verified.stdout


@needs_openssl
def test_openssl_rejects_a_changed_manifest(tmp_path: Path) -> None:
    folder = a_signed_folder(tmp_path / "v1", ManifestSigner.generate())
    (folder / MANIFEST_NAME).write_bytes(manifest_json(a_manifest(version=2)))

    verified = run_captured([str(OPENSSL), *CUSTOMER_VERIFY], cwd=folder)

    assert verified.returncode != 0
    assert "Signature Verified Successfully" not in verified.stdout


@needs_openssl
def test_openssl_rejects_another_key(tmp_path: Path) -> None:
    folder = a_signed_folder(tmp_path / "v1", ManifestSigner.generate())
    (folder / PUBLIC_KEY_NAME).write_bytes(ManifestSigner.generate().public_pem())

    verified = run_captured([str(OPENSSL), *CUSTOMER_VERIFY], cwd=folder)

    assert verified.returncode != 0
    assert "Signature Verified Successfully" not in verified.stdout


@needs_openssl
def test_the_customer_can_recompute_the_key_id_with_openssl(tmp_path: Path) -> None:
    signer = ManifestSigner.generate()
    folder = a_signed_folder(tmp_path / "v1", signer)

    # As documented: openssl pkey -pubin -in signing-key.pem -outform DER | tail -c 32 | openssl dgst -sha256
    der = subprocess.run(
        [str(OPENSSL), "pkey", "-pubin", "-in", PUBLIC_KEY_NAME, "-outform", "DER"],
        cwd=folder,
        capture_output=True,
        check=True,
    ).stdout

    assert hashlib.sha256(der[-32:]).hexdigest().startswith(signer.key_id)
