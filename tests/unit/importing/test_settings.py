"""The ``[import]`` configuration table (pure parsing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagebridge.config import config_from_mapping
from imagebridge.errors import ConfigError
from imagebridge.importing.config import CStoreTargetConfig, FolderTargetConfig, StowTargetConfig
from imagebridge.importing.settings import import_config
from imagebridge.model.reconcile import AccessionPolicy, UidCollisionPolicy


def test_stow_target_with_policies() -> None:
    parsed = import_config(
        {
            "target": "stow",
            "url": "http://pacs:8042/dicom-web/",
            "accession": "map",
            "accession_map": {"A1": "L1"},
            "uid_collision": "remap",
            "batch_size": 7,
        }
    )
    # A STOW-RS request carries one import batch: the target follows import.batch_size.
    assert parsed.target == StowTargetConfig(
        "http://pacs:8042/dicom-web", name="stow", batch_size=7
    )
    assert parsed.reconcile.accession is AccessionPolicy.MAP
    assert [(m.foreign, m.local.number) for m in parsed.reconcile.accession_map] == [("A1", "L1")]
    assert parsed.reconcile.uid_collision is UidCollisionPolicy.REMAP
    assert parsed.batch_size == 7


def test_folder_path_is_relative_to_the_config_file_and_cstore_needs_its_keys() -> None:
    parsed = import_config({"target": "folder", "path": "imported"}, base_dir=Path("/etc/ib"))
    assert parsed.target == FolderTargetConfig(Path("/etc/ib/imported"), name="folder")
    cstore = import_config({"target": "cstore", "host": "pacs", "port": 104, "called_ae": "PACS"})
    assert (
        isinstance(cstore.target, CStoreTargetConfig) and cstore.target.calling_ae == "IMAGEBRIDGE"
    )
    assert cstore.reconcile.accession is AccessionPolicy.CLEAR  # the safe default
    assert cstore.reconcile.uid_collision is UidCollisionPolicy.HOLD


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"target": "tape"}, "import.target must be one of"),
        ({"target": "stow"}, "import.url is required"),
        ({"target": "stow", "url": "ftp://x"}, "http(s) base_url"),
        ({"target": "folder", "path": "x", "url": "y"}, "unknown key(s) for folder: url"),
        ({"target": "folder", "path": "x", "accession": "map"}, "needs import.accession_map"),
        ({"target": "folder", "path": "x", "accession": "shred"}, "[import]"),
        ({"target": "folder", "path": "x", "batch_size": 0}, "batch_size"),
        ({"target": "cstore", "host": "h", "port": 104, "called_ae": "X" * 17}, "AE title"),
    ],
)
def test_bad_tables_are_refused_with_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        import_config(table)
    assert message in caught.value.message


def test_the_import_table_hangs_under_the_config() -> None:
    raw = {
        "community": {"home_community_id": "1.2.3"},
        "import": {"target": "folder", "path": "/srv/in"},
    }
    config = config_from_mapping(raw, {})
    assert config.importing is not None
    assert config.importing.target == FolderTargetConfig(Path("/srv/in"), name="folder")
    assert config_from_mapping({"community": {"home_community_id": "1.2.3"}}, {}).importing is None
