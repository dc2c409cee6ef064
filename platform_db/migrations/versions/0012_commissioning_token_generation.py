"""orders.commissioning_token_generation: rotating the gateway's commissioning token.

Every order starts at 0, the generation whose token equals the one delivered before rotation
existed, so the sites already running keep working.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(
            sa.Column("commissioning_token_generation", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("commissioning_token_generation")
