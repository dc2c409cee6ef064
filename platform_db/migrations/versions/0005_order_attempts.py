"""orders: edp_attempt (a new EDP job per retry) and attempt_error (a failed re-delivery beside a delivered order)."""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("edp_attempt", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("attempt_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("attempt_error")
        batch.drop_column("edp_attempt")
