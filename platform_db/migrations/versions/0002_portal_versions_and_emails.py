"""portal_versions and delivery_emails: what was published and mailed per order."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


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
