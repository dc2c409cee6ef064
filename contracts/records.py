"""The records platform_db returns: an order, its portal versions and their delivery emails.

They are the data contract between the store and the domain: ``platform_db`` builds them from its
rows, and the delivery steps, the sensors and the API read them without knowing the store.
Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from contracts.configurator import ConfiguratorPayload
from contracts.orders import EmailState, OrderStatus


@dataclass(frozen=True)
class Order:
    """One order as stored."""

    seq: int
    cfg_id: str
    idempotency_key: str | None
    # Kept out of repr: it carries the customer's name and email, and orders end up in logs.
    payload: dict[str, Any] = field(repr=False)
    target: str
    status: OrderStatus
    edp_job_id: str | None
    last_error: str | None
    created_at: datetime
    # When the status last moved.
    updated_at: datetime
    portal_token_generation: int = 0
    # Bumped by a retry after a failed EDP job: part of the EDP Idempotency-Key, so the retry
    # submits a new job instead of getting the failed one back.
    edp_attempt: int = 0
    # Why the latest attempt on an already delivered order (a re-delivery) failed; the order
    # itself stays delivered. Cleared by the next delivery.
    attempt_error: str | None = None
    # Which commissioning token the order's gateway bundle carries (bumped to rotate it).
    commissioning_token_generation: int = 0

    def configurator_payload(self) -> ConfiguratorPayload:
        """The stored payload validated back into the model the website submitted."""
        return ConfiguratorPayload.model_validate(self.payload)


@dataclass(frozen=True)
class PortalVersion:
    """One portal version of an order, numbered when a run claims it."""

    cfg_id: str
    version: int
    run_id: str
    # Both None until the version's publication is recorded.
    manifest_key: str | None
    artifact_count: int | None
    created_at: datetime
    signing_key_id: str | None = None
    # Set while an operator has the version yanked; the reason is shown to the customer.
    yanked_at: datetime | None = None
    yank_reason: str | None = None
    yank_notice_at: datetime | None = None

    @property
    def yanked(self) -> bool:
        return self.yanked_at is not None


class EmailAction(StrEnum):
    """An operator's resolution of an unknown email outcome."""

    MARK_SENT = "mark_sent"
    RESEND = "resend"


@dataclass(frozen=True)
class DeliveryEmail:
    """The email of one portal version, from its claim on (see ``platform_db.deliveries``)."""

    cfg_id: str
    version: int
    state: EmailState
    message_id: str | None
    claimed_at: datetime
    sent_at: datetime | None
    reason: str | None
    resolution: EmailAction | None
    resolved_at: datetime | None
    # ``sending`` for longer than the repository's stale_sending: the sender stopped mid-send.
    stale: bool = False

    @property
    def outcome(self) -> EmailState:
        """The state as far as anyone can tell: a stale ``sending`` is ``unknown``."""
        return EmailState.UNKNOWN if self.stale else self.state

    @property
    def outcome_reason(self) -> str | None:
        if self.stale:
            return (
                f"claimed at {self.claimed_at.isoformat(timespec='seconds')} and never finished: the sender "
                "stopped mid-send, SES may or may not have sent it"
            )
        return self.reason


@dataclass(frozen=True)
class SigningKey:
    """A public key that signed portal manifests (Ed25519, SubjectPublicKeyInfo PEM)."""

    key_id: str
    public_key_pem: str
    first_used_at: datetime
    # Signatures made at or after this moment are not to be trusted (a lost or leaked key).
    revoked_at: datetime | None = None
    revocation_reason: str | None = None


def current_version(versions: Sequence[PortalVersion]) -> PortalVersion | None:
    """The version the portal offers as current: the newest one that is not yanked."""
    offered = [version for version in versions if not version.yanked]
    return max(offered, key=lambda version: version.version, default=None)


@dataclass(frozen=True)
class PortalDownload:
    """One portal page view or download, as recorded."""

    id: int
    cfg_id: str
    at: datetime
    # None for the order's landing page (``/portal/{token}``).
    version: int | None
    # None for a page view; else the artifact's name, or manifest.json.
    file: str | None
    user_agent: str | None
    # The client's network (an IPv4 /24, an IPv6 /48), never its full address.
    client: str | None

    @property
    def page_view(self) -> bool:
        return self.file is None


@dataclass(frozen=True)
class DownloadCounts:
    """What an order's record holds, in numbers."""

    downloads: int
    page_views: int
    last_download_at: datetime | None
