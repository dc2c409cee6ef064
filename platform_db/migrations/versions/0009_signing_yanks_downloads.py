"""Signed manifests, yanked versions and the download record.

portal_versions: signing_key_id, yanked_at, yank_reason, yank_notice_at, yank_notice_message_id;
new tables signing_keys and portal_downloads.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    with op.batch_alter_table("portal_versions") as batch:
        batch.add_column(sa.Column("signing_key_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("yanked_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("yank_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("yank_notice_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("yank_notice_message_id", sa.String(length=255), nullable=True))
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("first_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_signing_keys"),
    )
    op.create_table(
        "portal_downloads",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cfg_id", sa.String(length=36), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("file", sa.String(length=128), nullable=True),
        sa.Column("user_agent", sa.String(length=256), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_portal_downloads"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_portal_downloads_cfg_id_at", "portal_downloads", ["cfg_id", "at"])
    op.create_index("ix_portal_downloads_at", "portal_downloads", ["at"])


def downgrade() -> None:
    op.drop_index("ix_portal_downloads_at", table_name="portal_downloads")
    op.drop_index("ix_portal_downloads_cfg_id_at", table_name="portal_downloads")
    op.drop_table("portal_downloads")
    op.drop_table("signing_keys")
    with op.batch_alter_table("portal_versions") as batch:
        for column in (
            "yank_notice_message_id",
            "yank_notice_at",
            "yank_reason",
            "yanked_at",
            "signing_key_id",
        ):
            batch.drop_column(column)
