"""Imaging Document Source index, the tables of the store (SQLAlchemy Core metadata).

The migrations in :mod:`imagebridge.store.migrations` create exactly these
tables (a test compares them).  Only portable types are used (strings,
integers, booleans, JSON, binary), so the same schema runs on SQLite and
PostgreSQL.  Strings carry no length: DICOM values are kept as found, and a
malformed over-long value must not make a write fail.

* ``patients``: the community's patient index, one row per (Patient ID,
  assigning authority OID), demographics from the patient's latest study and
  normalised search keys (``family_key``, ``given_key``).
* ``patient_other_ids``: the patient's Other Patient IDs that have an
  assigning authority, for look-ups by identifier (``other_ids`` of
  ``patients`` holds the same list for reading).
* ``studies``: one row per (repository, Study Instance UID) with the study
  attributes, the Patient module as the images carry it (``patient_module``,
  JSON), aggregates and the instance-set ``fingerprint``.
* ``series`` and ``instances``: the remaining header fields.
* ``representations``: each stored form of an instance (transfer syntax,
  path, size, mtime); an instance has one or more.
* ``indexed_files``: every file a folder source has looked at, with the
  result, so unchanged files are never read again.
* ``manifests``: every KOS built, with its bytes.
* ``import_jobs``: durable import jobs, one per (study, foreign patient,
  target), with the worker lease and the verification result;
  ``import_instances`` the state of each instance the job's KOS lists and
  ``import_job_events`` each job's timestamped history
  (see :mod:`imagebridge.store.jobs`).  Timestamps are UTC (:class:`UtcDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime: ``timestamptz`` on PostgreSQL, naive UTC text on SQLite.

    Naive datetimes are refused on the way in; values always come back aware (UTC),
    so comparisons (lease expiry) mean the same on both databases.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("UtcDateTime needs an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"UtcDateTime column returned {type(value).__name__}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _text(name: str, *, nullable: bool = False) -> Column[str]:
    """A string column; '' rather than NULL for an absent DICOM value."""
    return Column(name, String(), nullable=nullable, server_default="" if not nullable else None)


patients = Table(
    "patients",
    metadata,
    Column("id", Integer, primary_key=True),
    _text("patient_id"),
    _text("assigning_authority"),
    _text("family"),
    Column("given", JSON, nullable=False),
    _text("family_key"),
    _text("given_key"),
    _text("birth_date"),
    _text("sex"),
    _text("address"),
    Column("telephones", JSON, nullable=False),
    Column("other_ids", JSON, nullable=False),
    UniqueConstraint("patient_id", "assigning_authority"),
    Index(None, "birth_date"),
    Index(None, "family_key"),
)

patient_other_ids = Table(
    "patient_other_ids",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_pk", Integer, ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
    _text("other_id"),
    _text("assigning_authority"),
    Index(None, "other_id", "assigning_authority"),
    Index(None, "patient_pk"),
)

studies = Table(
    "studies",
    metadata,
    Column("id", Integer, primary_key=True),
    _text("repository_unique_id"),
    _text("study_instance_uid"),
    Column("patient_pk", Integer, ForeignKey("patients.id", ondelete="CASCADE"), nullable=False),
    Column("patient_module", JSON, nullable=False),
    _text("study_date"),
    _text("study_time"),
    _text("description"),
    _text("accession_number"),
    Column("accession_issuer", JSON, nullable=True),
    _text("referring_physician_name"),
    _text("study_id"),
    Column("procedure_codes", JSON, nullable=False),
    Column("modalities", JSON, nullable=False),
    Column("body_parts", JSON, nullable=False),
    Column("number_of_series", Integer, nullable=False, server_default="0"),
    Column("number_of_instances", Integer, nullable=False, server_default="0"),
    Column("total_size", BigInteger, nullable=False, server_default="0"),
    _text("fingerprint"),
    UniqueConstraint("repository_unique_id", "study_instance_uid"),
    Index(None, "study_instance_uid"),
    Index(None, "patient_pk"),
    Index(None, "accession_number"),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("study_pk", Integer, ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
    _text("series_instance_uid"),
    _text("modality"),
    Column("series_number", Integer, nullable=True),
    _text("body_part_examined"),
    _text("description"),
    UniqueConstraint("study_pk", "series_instance_uid"),
)

instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True),
    _text("repository_unique_id"),
    Column("study_pk", Integer, ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
    Column("series_pk", Integer, ForeignKey("series.id", ondelete="CASCADE"), nullable=False),
    _text("sop_instance_uid"),
    _text("sop_class_uid"),
    Column("instance_number", Integer, nullable=True),
    _text("kind"),
    Column("has_pixel_data", Boolean, nullable=False),
    _text("photometric_interpretation"),
    Column("number_of_frames", Integer, nullable=False, server_default="1"),
    UniqueConstraint("repository_unique_id", "sop_instance_uid"),
    Index(None, "sop_instance_uid"),
    Index(None, "study_pk"),
    Index(None, "series_pk"),
)

representations = Table(
    "representations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("instance_pk", Integer, ForeignKey("instances.id", ondelete="CASCADE"), nullable=False),
    _text("repository_unique_id"),
    _text("transfer_syntax_uid"),
    Column("path", String(), nullable=True),
    Column("file_size", BigInteger, nullable=True),
    Column("mtime_ns", BigInteger, nullable=True),
    UniqueConstraint("instance_pk", "transfer_syntax_uid"),
    UniqueConstraint("repository_unique_id", "path"),
)

indexed_files = Table(
    "indexed_files",
    metadata,
    Column("id", Integer, primary_key=True),
    _text("repository_unique_id"),
    _text("path"),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    _text("result"),
    _text("error"),
    UniqueConstraint("repository_unique_id", "path"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("id", Integer, primary_key=True),
    _text("repository_unique_id"),
    _text("study_instance_uid"),
    _text("sop_instance_uid"),
    _text("series_instance_uid"),
    _text("content_datetime"),
    _text("fingerprint"),
    Column("size", Integer, nullable=False),
    _text("sha1"),
    Column("document", LargeBinary, nullable=False),
    UniqueConstraint("sop_instance_uid"),
    Index(
        "ix_manifests_study_version", "repository_unique_id", "study_instance_uid", "fingerprint"
    ),
)

import_jobs = Table(
    "import_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("state", String(), nullable=False, server_default="pending"),
    _text("source_community_id"),
    _text("source_community_name"),
    _text("imaging_community_id"),
    _text("foreign_patient_id"),
    _text("foreign_patient_issuer"),
    Column("local_patient_id", String(), nullable=True),
    Column("local_patient_issuer", String(), nullable=True),
    _text("study_instance_uid"),
    _text("kos_document_id"),
    _text("kos_repository_id"),
    _text("target_name"),
    _text("target_kind"),
    Column("reconciliation", JSON, nullable=False),
    Column("expected_count", Integer, nullable=True),
    Column("found_count", Integer, nullable=True),
    Column("verified_at", UtcDateTime, nullable=True),
    Column("verified_ok", Boolean, nullable=True),
    Column("last_error", String(), nullable=True),
    Column("hold_reason", String(), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(), nullable=True),
    Column("lease_expires_at", UtcDateTime, nullable=True),
    Column("heartbeat_at", UtcDateTime, nullable=True),
    Column("finished_at", UtcDateTime, nullable=True),
    UniqueConstraint(
        "study_instance_uid",
        "foreign_patient_id",
        "foreign_patient_issuer",
        "target_name",
        name="uq_import_jobs_study_patient_target",  # the convention's name passes 63 chars
    ),
    Index(None, "state", "created_at"),
    Index(None, "updated_at"),
)

import_instances = Table(
    "import_instances",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("import_jobs.id", ondelete="CASCADE"), nullable=False),
    _text("sop_instance_uid"),
    _text("series_instance_uid"),
    _text("sop_class_uid"),
    _text("repository_unique_id"),
    Column("state", String(), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error_code", String(), nullable=True),
    Column("error_text", String(), nullable=True),
    Column("bytes", BigInteger, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("job_id", "sop_instance_uid"),
    Index(None, "job_id", "state"),
)

import_job_events = Table(
    "import_job_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("import_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    _text("message"),
    Index(None, "job_id", "id"),
)

# --- audit trail and performance measures (issue 7) ------------------------------------------
# audit_outbox: each ATNA audit message is written here first (in the transaction's own
# process, never waiting on the network); a sender drains it to the audit repository.
audit_outbox = Table(
    "audit_outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    _text("event"),  # the transaction or event audited (ITI-55, RAD-75, import, ...)
    Column("message", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    _text("last_error", nullable=True),
    Index(None, "sent_at", "next_attempt_at"),
)

# transaction_counters: guide section 5 performance measures, one row per month, partner,
# transaction and role; latency is kept as a sum so the mean is exact over any period.
transaction_counters = Table(
    "transaction_counters",
    metadata,
    Column("id", Integer, primary_key=True),
    _text("month"),  # YYYY-MM, UTC
    _text("partner"),  # the partner's homeCommunityId, or the client address when unknown
    _text("transaction"),
    _text("role"),
    Column("requests", Integer, nullable=False, server_default="0"),
    Column("errors", Integer, nullable=False, server_default="0"),
    Column("latency_ms_total", Float, nullable=False, server_default="0"),
    Column("studies", Integer, nullable=False, server_default="0"),
    Column("documents", Integer, nullable=False, server_default="0"),
    UniqueConstraint("month", "partner", "transaction", "role"),
)

# --- several workers sharing one database (issue 9) ------------------------------------------
# service_leases: duties exactly one worker does at a time (the audit sender, the scan of
# an archive): a worker holds the named lease until it expires, renewing it while it works.
service_leases = Table(
    "service_leases",
    metadata,
    Column("name", String(), primary_key=True),
    _text("owner"),
    Column("expires_at", UtcDateTime, nullable=False),
)

# gateway_settings: values every worker must share and nobody configured, made once by the
# first worker that needs them (the staff page's session-signing key).
gateway_settings = Table(
    "gateway_settings",
    metadata,
    Column("name", String(), primary_key=True),
    Column("value", Text, nullable=False),
)

# index_generation: one row, incremented by every write to the index, so workers that did
# not write notice the change and drop what they cached.
index_generation = Table(
    "index_generation",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False, server_default="0"),
)
