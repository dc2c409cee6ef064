"""The customer's stable portal link and the download links under it.

A presigned S3 URL lives at most 7 days; these links live as long as the order, because the API
answers each download with a 303 to a freshly presigned URL. The token is an HMAC of cfg_id and a
rotation generation under PORTAL_TOKEN_KEY: unguessable, per order, and revocable by rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from dataclasses import dataclass

MAC_BYTES = 16


class PortalTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the portal token key must be at least 16 bytes")
        self._key = key

    def _mac(self, cfg_id: uuid.UUID, generation: int) -> bytes:
        message = f"portal:{cfg_id}:{generation}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()[:MAC_BYTES]

    def token(self, cfg_id: str, generation: int) -> str:
        order = uuid.UUID(cfg_id)
        raw = order.bytes + self._mac(order, generation)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @staticmethod
    def cfg_id_of(token: str) -> str | None:
        """The order a well-formed token names (not yet proof that the token is valid)."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != 16 + MAC_BYTES:
            return None
        return str(uuid.UUID(bytes=raw[:16]))

    def is_valid(self, token: str, cfg_id: str, generation: int) -> bool:
        return hmac.compare_digest(token, self.token(cfg_id, generation))

    def commissioning_token(self, cfg_id: str, generation: int) -> str:
        """The order's gateway commissioning token of ``generation``: derived, so every rebuild of
        the bundle (and of the seed ISO) of one generation carries the same one and the portal shows
        it without storing it; a new generation (a rotation) gives a new one."""
        if generation < 0:
            raise ValueError("a commissioning token generation is 0 or more")
        # Generation 0 is the message of the tokens delivered before rotation existed: those sites
        # keep their token.
        suffix = "" if generation == 0 else f":{generation}"
        message = f"commissioning:{uuid.UUID(cfg_id)}{suffix}".encode()
        mac = hmac.new(self._key, message, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@dataclass(frozen=True)
class PortalLinks:
    """Links of one order's portal under the API's public URL."""

    base_url: str
    token: str

    def portal(self) -> str:
        return f"{self.base_url.rstrip('/')}/portal/{self.token}"

    def version_page(self, version: int) -> str:
        return f"{self.portal()}/v{int(version)}"

    def artifact(self, version: int, name: str) -> str:
        return f"{self.version_page(version)}/{name}"

    def public_key(self, version: int, key_id: str) -> str:
        """The key's stable URL: outside the token, so a rotated portal link leaves it unchanged."""
        return public_key_url(self.base_url, key_id)


def public_key_url(base_url: str, key_id: str) -> str:
    return f"{base_url.rstrip('/')}/signing-keys/{key_id}.pem"
