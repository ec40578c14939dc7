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
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


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
