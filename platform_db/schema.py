"""The platform_db schema as SQLAlchemy Core metadata.

The migrations under ``platform_db/migrations`` create this schema; a test compares the two, so a
change here without a migration (or the other way round) fails the build.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.schema import SchemaItem

# Named constraints make migrations deterministic across dialects; SQLite batch mode needs the
# names to find a constraint again when it rebuilds a table.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

orders = Table(
    "orders",
    metadata,
    # The order of arrival (oldest first in every listing). AUTOINCREMENT on SQLite guarantees a
    # value is never handed out twice, even after the newest row was deleted.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("cfg_id", String(36), nullable=False, unique=True),
    # NULL for orders submitted without an Idempotency-Key; NULLs never collide in a unique index.
    Column("idempotency_key", String(255), nullable=True, unique=True),
    Column("payload_sha256", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("target", String(16), nullable=False),
    # A plain string rather than an enum type: a new status needs no ALTER TYPE on PostgreSQL.
    # Indexed because the sensors poll by status.
    Column("status", String(32), nullable=False),
    Column("edp_job_id", String(128), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Bumped to rotate the customer's portal link: tokens of an older generation stop working.
    Column("portal_token_generation", Integer, nullable=False, server_default="0"),
    # Part of the EDP Idempotency-Key: a retry after a failed EDP job bumps it to get a new job.
    Column("edp_attempt", Integer, nullable=False, server_default="0"),
    # The failure of the latest attempt on an order that stays delivered (a failed re-delivery).
    Column("attempt_error", Text, nullable=True),
    # When the API (right after the commit) or order_sensor (its safety net) claimed starting the
    # order's first run: whoever sets it starts the run, so an order never gets two.
    Column("first_run_requested_at", DateTime(timezone=True), nullable=True),
    # Bumped to rotate the gateway's commissioning token (a new portal version carries the new
    # secrets.env); generation 0 derives the token orders had before rotation existed.
    Column("commissioning_token_generation", Integer, nullable=False, server_default="0"),
    Index("ix_orders_status", "status"),
    sqlite_autoincrement=True,
)

# One row per published portal version. ``run_id`` makes publishing idempotent: a retried
# manifest step of the same run gets the same version back instead of a new one.
portal_versions = Table(
    "portal_versions",
    metadata,
    Column("cfg_id", String(36), ForeignKey("orders.cfg_id"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("run_id", String(64), nullable=False),
    Column("manifest_key", String(255), nullable=True),
    Column("artifact_count", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The Ed25519 key that signed the version's manifest.json (signing_keys), NULL before signing existed.
    Column("signing_key_id", String(32), nullable=True),
    # An operator's yank: the version stays listed (struck through) and its downloads answer 410.
    Column("yanked_at", DateTime(timezone=True), nullable=True),
    Column("yank_reason", Text, nullable=True),
    # The customer's email about the yank is claimed here before SES is called: at most one per version.
    Column("yank_notice_at", DateTime(timezone=True), nullable=True),
    Column("yank_notice_message_id", String(255), nullable=True),
    UniqueConstraint("cfg_id", "run_id"),
)

# Every public key that ever signed a manifest: a rotated key's versions stay verifiable.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("public_key_pem", Text, nullable=False),
    Column("first_used_at", DateTime(timezone=True), nullable=False),
    # Manifests signed at or after revoked_at are refused by the verifier; earlier ones stand.
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revocation_reason", Text, nullable=True),
)

# One row per portal page view or download (``file`` NULL: a page), kept for
# ``portal.download_record_days``. ``client`` is the truncated address (an IPv4 /24, an IPv6 /48).
portal_downloads = Table(
    "portal_downloads",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("cfg_id", String(36), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=True),
    Column("file", String(128), nullable=True),
    Column("user_agent", String(256), nullable=True),
    Column("client", String(64), nullable=True),
    Index("ix_portal_downloads_cfg_id_at", "cfg_id", "at"),
    Index("ix_portal_downloads_at", "at"),
    sqlite_autoincrement=True,
)

# At most one email per portal version: the row is claimed before SES is called.
delivery_emails = Table(
    "delivery_emails",
    metadata,
    Column("cfg_id", String(36), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("message_id", String(255), nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    # contracts.orders.EmailState: sending (claimed, request under way), sent, unknown (the
    # request may have reached SES, its answer was lost), marked_sent (an operator confirmed it),
    # resend_requested (an operator released it for one more attempt).
    Column("state", String(16), nullable=False, server_default="sending"),
    # Why the outcome is unknown, in words fit for GET /orders (no URL queries, capped).
    Column("reason", Text, nullable=True),
    # The operator's resolution of an unknown outcome ("mark_sent" or "resend") and when.
    Column("resolution", String(16), nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    ForeignKeyConstraint(["cfg_id", "version"], ["portal_versions.cfg_id", "portal_versions.version"]),
    Index("ix_delivery_emails_state", "state"),
)


def _keyed_requests(
    name: str, cfg_id: Column[str], *request: Column[Any], constraints: list[SchemaItem]
) -> Table:
    """A table of API requests that launch a Dagster backfill, one row each, keyed by Idempotency-Key.

    A request stores its key before it launches anything, so a retried request answers what the
    first one launched; ``backfill_id`` is NULL while it is being launched. ``request`` are the
    columns of what the request asked for.
    """
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        # NULL for requests without an Idempotency-Key; NULLs never collide in a unique index.
        Column("idempotency_key", String(255), nullable=True, unique=True),
        cfg_id,
        *request,
        Column("backfill_id", String(64), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        *constraints,
        sqlite_autoincrement=True,
    )


# One row per operator resolution of an unknown email outcome (POST /orders/{cfg_id}/email): the
# audit of who-did-what is in the API log, what was done is here. A request claims its
# Idempotency-Key in the same transaction that changes the email's state; ``backfill_id`` is the
# resend's.
email_resolutions = _keyed_requests(
    "email_resolutions",
    Column("cfg_id", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    constraints=[
        ForeignKeyConstraint(["cfg_id", "version"], ["portal_versions.cfg_id", "portal_versions.version"]),
        Index("ix_email_resolutions_cfg_id_version", "cfg_id", "version"),
    ],
)

# One row per re-delivery launched through the API (a Dagster backfill of one order), claimed
# before the launch (platform_db.claims).
redeliveries = _keyed_requests(
    "redeliveries",
    Column("cfg_id", String(36), ForeignKey("orders.cfg_id"), nullable=False),
    Column("apk", Boolean, nullable=False),
    constraints=[Index("ix_redeliveries_cfg_id", "cfg_id")],
)

# One row per retry of a failed order launched through the API (POST /orders/{cfg_id}/retry: a
# Dagster backfill from where the order stopped), claimed like a re-delivery; ``assets`` and
# ``new_edp_job`` are NULL while the claiming request is launching.
order_retries = _keyed_requests(
    "order_retries",
    Column("cfg_id", String(36), ForeignKey("orders.cfg_id"), nullable=False),
    # The backfilled asset keys, e.g. ["order/config"], and whether the retry asked EDP for a new job.
    Column("assets", JSON(none_as_null=True), nullable=True),
    Column("new_edp_job", Boolean, nullable=True),
    constraints=[Index("ix_order_retries_cfg_id", "cfg_id")],
)


# One row per state-changing operator call that has no claims table of its own (a portal-link
# rotation, a yank or un-yank, a signing key's revocation, a commissioning-token rotation), keyed by
# its Idempotency-Key: claimed before the call acts and answered once it has, so a retried call
# gets the first one's answer and acts once (platform_db.operator_calls).
operator_calls = Table(
    "operator_calls",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(255), nullable=False, unique=True),
    # The call: its method and path, e.g. "POST /orders/<cfg_id>/portal-token".
    Column("what", String(255), nullable=False),
    # Of the request's body as parsed: the same key with another body is another request.
    Column("request_sha256", String(64), nullable=False),
    # Both NULL while the claiming request acts. The answer as stored: never a secret or a link.
    Column("status_code", Integer, nullable=True),
    Column("answer", JSON(none_as_null=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("answered_at", DateTime(timezone=True), nullable=True),
    sqlite_autoincrement=True,
)
