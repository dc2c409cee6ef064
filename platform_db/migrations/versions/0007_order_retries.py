"""order_retries: retries of failed orders launched through the API, keyed by their Idempotency-Key."""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    op.create_table(
        "order_retries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("cfg_id", sa.String(length=36), nullable=False),
        sa.Column("assets", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("new_edp_job", sa.Boolean(), nullable=True),
        sa.Column("backfill_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["cfg_id"], ["orders.cfg_id"], name="fk_order_retries_cfg_id_orders"),
        sa.PrimaryKeyConstraint("id", name="pk_order_retries"),
        sa.UniqueConstraint("idempotency_key", name="uq_order_retries_idempotency_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_order_retries_cfg_id", "order_retries", ["cfg_id"])


def downgrade() -> None:
    op.drop_index("ix_order_retries_cfg_id", table_name="order_retries")
    op.drop_table("order_retries")
