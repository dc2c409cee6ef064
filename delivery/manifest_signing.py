"""Ed25519 signatures over portal manifests, checkable by the customer with openssl alone.

Each portal version folder holds ``manifest.json``, ``manifest.json.sig`` (the raw 64-byte Ed25519
signature over the exact bytes of manifest.json) and ``signing-key.pem`` (the SubjectPublicKeyInfo
PEM of the key that signed), so a copy of the folder checks with

    openssl pkeyutl -verify -pubin -inkey signing-key.pem -rawin -in manifest.json -sigfile manifest.json.sig

A key is named by its *key id*, the first 16 hex characters of the sha256 of the raw 32-byte public
key, and shown to people by its *fingerprint*, ``SHA256:`` and the unpadded base64 of that same
sha256 (the form ``ssh-keygen -l`` prints, though ssh hashes its own key encoding, so the values
differ from ssh's). Both come from the public key alone, so a customer can recompute them:

    openssl pkey -pubin -in signing-key.pem -outform DER | tail -c 32 | openssl dgst -sha256

A rotated key stays published (``GET /signing-keys``), so what it signed stays verifiable.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

SIGNATURE_NAME: Final = "manifest.json.sig"
PUBLIC_KEY_NAME: Final = "signing-key.pem"
SECRET_NAME: Final = "MANIFEST_SIGNING_KEY"

KEY_ID_LENGTH: Final = 16


class ManifestSigner:
    """Signs manifest bytes with the platform's Ed25519 private key (MANIFEST_SIGNING_KEY)."""

    __slots__ = ("_private_key",)

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        self._private_key = private_key

    @classmethod
    def from_pem(cls, pem: bytes) -> ManifestSigner:
        """The signer of an unencrypted PKCS#8 PEM Ed25519 private key.

        The error names the secret, never its content: the message reaches logs and run failures.
        """
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # TypeError is cryptography's answer to an encrypted key. "from None": the library's
            # message and traceback may quote what it failed to read.
            raise ValueError(f"{SECRET_NAME} is not an unencrypted PKCS#8 PEM private key") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey")
            raise ValueError(f"{SECRET_NAME} must be an Ed25519 private key (it holds: {kind})")
        return cls(key)

    @classmethod
    def generate(cls) -> ManifestSigner:
        return cls(ed25519.Ed25519PrivateKey.generate())

    def private_pem(self) -> bytes:
        """The private key as MANIFEST_SIGNING_KEY holds it: PKCS#8 PEM, unencrypted."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_pem(self) -> bytes:
        """The public key as ``signing-key.pem`` holds it: SubjectPublicKeyInfo PEM."""
        return _public_pem(self._private_key.public_key())

    @property
    def key_id(self) -> str:
        return _key_id(self._private_key.public_key())

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self._private_key.public_key())

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature over ``data`` (the exact manifest.json bytes)."""
        return self._private_key.sign(data)

    def __repr__(self) -> str:
        return f"ManifestSigner(key_id={self.key_id!r})"


def verify_signature(public_pem: bytes, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the Ed25519 signature of ``data`` by the key of ``public_pem``.

    A PEM that is not an Ed25519 public key is a ValueError, not ``False``: it is a wrong key file,
    not a forged manifest.
    """
    try:
        _load_public_key(public_pem).verify(signature, data)
    except InvalidSignature:
        return False
    return True


def key_id_of(public_pem: bytes) -> str:
    return _key_id(_load_public_key(public_pem))


def fingerprint_of(public_pem: bytes) -> str:
    return _fingerprint(_load_public_key(public_pem))


def _load_public_key(public_pem: bytes) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a PEM public key (SubjectPublicKeyInfo, Ed25519)") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError("the public key is not an Ed25519 key")
    return key


def _public_pem(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _raw_digest(key: ed25519.Ed25519PublicKey) -> bytes:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()


def _key_id(key: ed25519.Ed25519PublicKey) -> str:
    return _raw_digest(key).hex()[:KEY_ID_LENGTH]


def _fingerprint(key: ed25519.Ed25519PublicKey) -> str:
    return "SHA256:" + base64.b64encode(_raw_digest(key)).decode("ascii").rstrip("=")
