"""orders: edp_attempt (a new EDP job per retry) and attempt_error (a failed re-delivery beside a delivered order).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("edp_attempt", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("attempt_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("attempt_error")
        batch.drop_column("edp_attempt")
