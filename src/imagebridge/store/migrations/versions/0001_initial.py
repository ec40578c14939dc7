"""Imaging Document Source index, initial schema: patients, studies, instances, files, manifests.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _text(name: str) -> sa.Column[str]:
    return sa.Column(name, sa.String(), nullable=False, server_default="")


def upgrade() -> None:
    """Create every table of the index."""
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("patient_id"),
        _text("assigning_authority"),
        _text("family"),
        sa.Column("given", sa.JSON(), nullable=False),
        _text("family_key"),
        _text("given_key"),
        _text("birth_date"),
        _text("sex"),
        _text("address"),
        sa.Column("telephones", sa.JSON(), nullable=False),
        sa.Column("other_ids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_patients"),
        sa.UniqueConstraint(
            "patient_id", "assigning_authority", name="uq_patients_patient_id_assigning_authority"
        ),
    )
    op.create_index("ix_patients_birth_date", "patients", ["birth_date"])
    op.create_index("ix_patients_family_key", "patients", ["family_key"])

    op.create_table(
        "patient_other_ids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        _text("other_id"),
        _text("assigning_authority"),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name="fk_patient_other_ids_patient_pk_patients",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_patient_other_ids"),
    )
    op.create_index(
        "ix_patient_other_ids_other_id_assigning_authority",
        "patient_other_ids",
        ["other_id", "assigning_authority"],
    )
    op.create_index("ix_patient_other_ids_patient_pk", "patient_other_ids", ["patient_pk"])

    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("repository_unique_id"),
        _text("study_instance_uid"),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("patient_module", sa.JSON(), nullable=False),
        _text("study_date"),
        _text("study_time"),
        _text("description"),
        _text("accession_number"),
        sa.Column("accession_issuer", sa.JSON(), nullable=True),
        _text("referring_physician_name"),
        _text("study_id"),
        sa.Column("procedure_codes", sa.JSON(), nullable=False),
        sa.Column("modalities", sa.JSON(), nullable=False),
        sa.Column("body_parts", sa.JSON(), nullable=False),
        sa.Column("number_of_series", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("number_of_instances", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("total_size", sa.BigInteger(), nullable=False, server_default="0"),
        _text("fingerprint"),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name="fk_studies_patient_pk_patients",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_studies"),
        sa.UniqueConstraint(
            "repository_unique_id",
            "study_instance_uid",
            name="uq_studies_repository_unique_id_study_instance_uid",
        ),
    )
    op.create_index("ix_studies_study_instance_uid", "studies", ["study_instance_uid"])
    op.create_index("ix_studies_patient_pk", "studies", ["patient_pk"])
    op.create_index("ix_studies_accession_number", "studies", ["accession_number"])

    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        _text("series_instance_uid"),
        _text("modality"),
        sa.Column("series_number", sa.Integer(), nullable=True),
        _text("body_part_examined"),
        _text("description"),
        sa.ForeignKeyConstraint(
            ["study_pk"], ["studies.id"], name="fk_series_study_pk_studies", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.UniqueConstraint(
            "study_pk", "series_instance_uid", name="uq_series_study_pk_series_instance_uid"
        ),
    )

    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("repository_unique_id"),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        _text("sop_instance_uid"),
        _text("sop_class_uid"),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        _text("kind"),
        sa.Column("has_pixel_data", sa.Boolean(), nullable=False),
        _text("photometric_interpretation"),
        sa.Column("number_of_frames", sa.Integer(), nullable=False, server_default="1"),
        sa.ForeignKeyConstraint(
            ["study_pk"], ["studies.id"], name="fk_instances_study_pk_studies", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["series_pk"], ["series.id"], name="fk_instances_series_pk_series", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
        sa.UniqueConstraint(
            "repository_unique_id",
            "sop_instance_uid",
            name="uq_instances_repository_unique_id_sop_instance_uid",
        ),
    )
    op.create_index("ix_instances_sop_instance_uid", "instances", ["sop_instance_uid"])
    op.create_index("ix_instances_study_pk", "instances", ["study_pk"])
    op.create_index("ix_instances_series_pk", "instances", ["series_pk"])

    op.create_table(
        "representations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_pk", sa.Integer(), nullable=False),
        _text("repository_unique_id"),
        _text("transfer_syntax_uid"),
        sa.Column("path", sa.String(), nullable=True),
        sa.Column("file_size", sa.BigInteger(), nullable=True),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_pk"],
            ["instances.id"],
            name="fk_representations_instance_pk_instances",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_representations"),
        sa.UniqueConstraint(
            "instance_pk",
            "transfer_syntax_uid",
            name="uq_representations_instance_pk_transfer_syntax_uid",
        ),
        sa.UniqueConstraint(
            "repository_unique_id", "path", name="uq_representations_repository_unique_id_path"
        ),
    )

    op.create_table(
        "indexed_files",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("repository_unique_id"),
        _text("path"),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime_ns", sa.BigInteger(), nullable=False),
        _text("result"),
        _text("error"),
        sa.PrimaryKeyConstraint("id", name="pk_indexed_files"),
        sa.UniqueConstraint(
            "repository_unique_id", "path", name="uq_indexed_files_repository_unique_id_path"
        ),
    )

    op.create_table(
        "manifests",
        sa.Column("id", sa.Integer(), nullable=False),
        _text("repository_unique_id"),
        _text("study_instance_uid"),
        _text("sop_instance_uid"),
        _text("series_instance_uid"),
        _text("content_datetime"),
        _text("fingerprint"),
        sa.Column("size", sa.Integer(), nullable=False),
        _text("sha1"),
        sa.Column("document", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_manifests"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_manifests_sop_instance_uid"),
    )
    op.create_index(
        "ix_manifests_study_version",
        "manifests",
        ["repository_unique_id", "study_instance_uid", "fingerprint"],
    )


def downgrade() -> None:
    """Drop every table of the index."""
    for table in (
        "manifests",
        "indexed_files",
        "representations",
        "instances",
        "series",
        "studies",
        "patient_other_ids",
        "patients",
    ):
        op.drop_table(table)
