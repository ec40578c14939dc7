"""Imaging Document Consumer, durable import jobs: import_jobs, import_instances, events.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_UTC = sa.DateTime(timezone=True)
"""UTC timestamps (imagebridge.store.schema.UtcDateTime stores them)."""


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=False, server_default="")


def _optional_text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=True)


def upgrade() -> None:
    """Create the job tables (existing tables and their rows are untouched)."""
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.Column("state", sa.String(), nullable=False, server_default="pending"),
        _text("source_community_id"),
        _text("source_community_name"),
        _text("imaging_community_id"),
        _text("foreign_patient_id"),
        _text("foreign_patient_issuer"),
        _optional_text("local_patient_id"),
        _optional_text("local_patient_issuer"),
        _text("study_instance_uid"),
        _text("kos_document_id"),
        _text("kos_repository_id"),
        _text("target_name"),
        _text("target_kind"),
        sa.Column("reconciliation", sa.JSON(), nullable=False),
        sa.Column("expected_count", sa.Integer(), nullable=True),
        sa.Column("found_count", sa.Integer(), nullable=True),
        sa.Column("verified_at", _UTC, nullable=True),
        sa.Column("verified_ok", sa.Boolean(), nullable=True),
        _optional_text("last_error"),
        _optional_text("hold_reason"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        _optional_text("lease_owner"),
        sa.Column("lease_expires_at", _UTC, nullable=True),
        sa.Column("heartbeat_at", _UTC, nullable=True),
        sa.Column("finished_at", _UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_import_jobs"),
        sa.UniqueConstraint(
            "study_instance_uid",
            "foreign_patient_id",
            "foreign_patient_issuer",
            "target_name",
            name="uq_import_jobs_study_patient_target",
        ),
    )
    op.create_index("ix_import_jobs_state_created_at", "import_jobs", ["state", "created_at"])
    op.create_index("ix_import_jobs_updated_at", "import_jobs", ["updated_at"])

    op.create_table(
        "import_instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        _text("sop_instance_uid"),
        _text("series_instance_uid"),
        _text("sop_class_uid"),
        _text("repository_unique_id"),
        sa.Column("state", sa.String(), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        _optional_text("error_code"),
        _optional_text("error_text"),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name="fk_import_instances_job_id_import_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_import_instances"),
        sa.UniqueConstraint(
            "job_id", "sop_instance_uid", name="uq_import_instances_job_id_sop_instance_uid"
        ),
    )
    op.create_index("ix_import_instances_job_id_state", "import_instances", ["job_id", "state"])

    op.create_table(
        "import_job_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("at", _UTC, nullable=False),
        _text("message"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["import_jobs.id"],
            name="fk_import_job_events_job_id_import_jobs",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_import_job_events"),
    )
    op.create_index("ix_import_job_events_job_id_id", "import_job_events", ["job_id", "id"])


def downgrade() -> None:
    """Drop the job tables."""
    for table in ("import_job_events", "import_instances", "import_jobs"):
        op.drop_table(table)
