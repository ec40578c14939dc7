"""Audit trail outbox and performance-measure counters: audit_outbox, transaction_counters.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the two tables (existing tables and rows are untouched)."""
    op.create_table(
        "audit_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("event", sa.String(), nullable=False, server_default=""),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", _UTC, nullable=False),
        sa.Column("sent_at", _UTC, nullable=True),
        sa.Column("last_error", sa.String(), nullable=True, server_default=""),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_outbox")),
    )
    op.create_index(
        op.f("ix_audit_outbox_sent_at_next_attempt_at"),
        "audit_outbox",
        ["sent_at", "next_attempt_at"],
    )
    op.create_table(
        "transaction_counters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("month", sa.String(), nullable=False, server_default=""),
        sa.Column("partner", sa.String(), nullable=False, server_default=""),
        sa.Column("transaction", sa.String(), nullable=False, server_default=""),
        sa.Column("role", sa.String(), nullable=False, server_default=""),
        sa.Column("requests", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("errors", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("latency_ms_total", sa.Float(), nullable=False, server_default="0"),
        sa.Column("studies", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("documents", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transaction_counters")),
        sa.UniqueConstraint(
            "month",
            "partner",
            "transaction",
            "role",
            name=op.f("uq_transaction_counters_month_partner_transaction_role"),
        ),
    )


def downgrade() -> None:
    op.drop_table("transaction_counters")
    op.drop_index(op.f("ix_audit_outbox_sent_at_next_attempt_at"), table_name="audit_outbox")
    op.drop_table("audit_outbox")
