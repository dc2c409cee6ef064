"""orders: first_run_requested_at, the claim of whoever starts an order's first run (API or order_sensor)."""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("first_run_requested_at", sa.DateTime(timezone=True), nullable=True))
    # Orders past `received` had their first run from the cursor-based order_sensor of before;
    # a `received` one may not have, and order_sensor's run key keeps a second request out.
    op.execute(sa.text("UPDATE orders SET first_run_requested_at = created_at WHERE status <> 'received'"))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("first_run_requested_at")
