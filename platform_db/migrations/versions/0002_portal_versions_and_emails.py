"""portal_versions and delivery_emails: what was published and mailed per order.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "portal_versions",
        sa.Column("cfg_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("manifest_key", sa.String(length=255), nullable=True),
        sa.Column("artifact_count", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cfg_id"], ["orders.cfg_id"], name="fk_portal_versions_cfg_id_orders"),
        sa.PrimaryKeyConstraint("cfg_id", "version", name="pk_portal_versions"),
        sa.UniqueConstraint("cfg_id", "run_id", name="uq_portal_versions_cfg_id_run_id"),
    )
    op.create_table(
        "delivery_emails",
        sa.Column("cfg_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["cfg_id", "version"],
            ["portal_versions.cfg_id", "portal_versions.version"],
            name="fk_delivery_emails_cfg_id_portal_versions",
        ),
        sa.PrimaryKeyConstraint("cfg_id", "version", name="pk_delivery_emails"),
    )


def downgrade() -> None:
    op.drop_table("delivery_emails")
    op.drop_table("portal_versions")
