"""The platform_db schema as SQLAlchemy Core metadata.

The migrations under ``platform_db/migrations`` create this schema; a test compares the two, so a
change here without a migration (or the other way round) fails the build.
"""

from __future__ import annotations

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
    # The sensors' cursor. AUTOINCREMENT on SQLite guarantees a value is never handed out twice,
    # even after the newest row was deleted.
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
    UniqueConstraint("cfg_id", "run_id"),
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
    ForeignKeyConstraint(["cfg_id", "version"], ["portal_versions.cfg_id", "portal_versions.version"]),
)

# One row per re-delivery launched through the API (a Dagster backfill of one order). A request
# claims its Idempotency-Key here before it launches anything, so a retried request answers the
# backfill it launched before instead of launching a second one; ``backfill_id`` is NULL while the
# claiming request is still launching.
redeliveries = Table(
    "redeliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # NULL for requests without an Idempotency-Key; NULLs never collide in a unique index.
    Column("idempotency_key", String(255), nullable=True, unique=True),
    Column("cfg_id", String(36), ForeignKey("orders.cfg_id"), nullable=False),
    Column("apk", Boolean, nullable=False),
    Column("backfill_id", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_redeliveries_cfg_id", "cfg_id"),
    sqlite_autoincrement=True,
)
