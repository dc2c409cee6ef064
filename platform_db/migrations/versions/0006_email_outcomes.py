"""delivery_emails: the outcome of each email (state, reason, resolution); email_resolutions.

An email whose SES answer was lost is ``unknown`` until an operator resolves it (mark it sent, or
release it for one resend); ``email_resolutions`` holds those resolutions with their
Idempotency-Keys. Rows claimed before this revision get their state from ``sent_at``: sent when
set, else unknown (the claim was never recorded as sent: the sender may have died mid-send).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

PRE_0006_REASON = (
    "claimed before platform_db recorded email outcomes (revision 0006) and never recorded as sent; "
    "SES may or may not have sent it"
)


def upgrade() -> None:
    with op.batch_alter_table("delivery_emails") as batch:
        batch.add_column(sa.Column("state", sa.String(length=16), nullable=False, server_default="sending"))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("resolution", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
    emails = sa.table("delivery_emails", sa.column("state"), sa.column("sent_at"), sa.column("reason"))
    op.execute(emails.update().where(emails.c.sent_at.is_not(None)).values(state="sent"))
    op.execute(
        emails.update().where(emails.c.sent_at.is_(None)).values(state="unknown", reason=PRE_0006_REASON)
    )
    op.create_index("ix_delivery_emails_state", "delivery_emails", ["state"])
    op.create_table(
        "email_resolutions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("cfg_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("backfill_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cfg_id", "version"],
            ["portal_versions.cfg_id", "portal_versions.version"],
            name="fk_email_resolutions_cfg_id_version_portal_versions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_email_resolutions"),
        sa.UniqueConstraint("idempotency_key", name="uq_email_resolutions_idempotency_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_email_resolutions_cfg_id_version", "email_resolutions", ["cfg_id", "version"])


def downgrade() -> None:
    op.drop_index("ix_email_resolutions_cfg_id_version", table_name="email_resolutions")
    op.drop_table("email_resolutions")
    op.drop_index("ix_delivery_emails_state", table_name="delivery_emails")
    with op.batch_alter_table("delivery_emails") as batch:
        batch.drop_column("resolved_at")
        batch.drop_column("resolution")
        batch.drop_column("reason")
        batch.drop_column("state")
