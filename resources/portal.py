"""The customer portal's links as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from delivery.manifest_signing import ManifestSigner
from delivery.portal_links import PortalLinks, PortalTokens
from platform_config.settings import load_secrets, manifest_signing_key, portal_token_key


class PortalResource(ConfigurableResource):
    """Builds an order's stable portal links and signs its manifests. Both keys are read when used,
    never kept in config."""

    public_url: str = Field(description="Base URL of the API that serves /portal/{token}.")
    local_key_file: str | None = Field(
        default=None, description="Local/demo: the generated key file used when PORTAL_TOKEN_KEY is unset."
    )

    local_signing_key_file: str | None = Field(
        default=None,
        description="Local/demo: the generated Ed25519 key file used when MANIFEST_SIGNING_KEY is unset.",
    )

    def manifest_signer(self) -> ManifestSigner:
        """The key that signs each portal version's manifest.json (MANIFEST_SIGNING_KEY)."""
        return ManifestSigner.from_pem(manifest_signing_key(load_secrets(), self.local_signing_key_file))

    def _tokens(self) -> PortalTokens:
        return PortalTokens(portal_token_key(load_secrets(), self.local_key_file))

    def links_for(self, cfg_id: str, generation: int) -> PortalLinks:
        return PortalLinks(base_url=self.public_url, token=self._tokens().token(cfg_id, generation))

    def commissioning_token(self, cfg_id: str, generation: int) -> str:
        """The token the order's gateway requires for commissioning (in its bundle's secrets.env),
        of the order's ``commissioning_token_generation``."""
        return self._tokens().commissioning_token(cfg_id, generation)
