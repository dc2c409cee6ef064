"""redeliveries: re-deliveries launched through the API, keyed by their Idempotency-Key."""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "redeliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("cfg_id", sa.String(length=36), nullable=False),
        sa.Column("apk", sa.Boolean(), nullable=False),
        sa.Column("backfill_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cfg_id"], ["orders.cfg_id"], name="fk_redeliveries_cfg_id_orders"),
        sa.PrimaryKeyConstraint("id", name="pk_redeliveries"),
        sa.UniqueConstraint("idempotency_key", name="uq_redeliveries_idempotency_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_redeliveries_cfg_id", "redeliveries", ["cfg_id"])


def downgrade() -> None:
    op.drop_index("ix_redeliveries_cfg_id", table_name="redeliveries")
    op.drop_table("redeliveries")
