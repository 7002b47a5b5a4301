"""The manifest: version 1 documents read unchanged, version 2 adds kind "physical", newer refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentinel_backup.errors import VerifyFailed
from sentinel_backup.model.manifest import FORMAT_VERSION, Manifest, PhysicalFacts

V1 = Path(__file__).parent.parent / "data" / "manifest-v1" / \
    "sentinel_backup_legacy_app_20261203T080106Z.sql.gz.manifest.json"


def test_version_1_document_reads() -> None:
    manifest = Manifest.from_json(V1.read_bytes(), "fixture")
    assert manifest.format_version == 1
    assert manifest.kind == "database" and manifest.physical is None
    assert manifest.tables == {"public.items": 50, "public.notes": 2}
    assert manifest.manifest_key == manifest.artifact + ".manifest.json"


def test_physical_round_trip() -> None:
    doc = json.loads(V1.read_bytes())
    doc.update(format_version=FORMAT_VERSION, kind="physical", format="tar", database="cluster",
               artifact="basebackups/7312/sentinel_base_20261203T080106Z.tar.zst", tables=None,
               physical={"system_identifier": "7312", "timeline": 1, "start_lsn": "0/2000028",
                         "stop_lsn": "0/2000138", "start_wal": "000000010000000000000002",
                         "stop_wal": "000000010000000000000002", "wal_segment_size": 1048576})
    manifest = Manifest.from_json(json.dumps(doc).encode(), "doc")
    assert isinstance(manifest.physical, PhysicalFacts) and manifest.physical.timeline == 1
    assert manifest.manifest_key == "basebackups/7312/sentinel_base_20261203T080106Z.tar.zst.manifest.json"
    again = Manifest.from_json(manifest.to_json(), "again")
    assert again == manifest


def test_newer_format_is_refused_with_a_hint() -> None:
    doc = json.loads(V1.read_bytes())
    doc["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(VerifyFailed) as caught:
        Manifest.from_json(json.dumps(doc).encode(), "doc")
    assert "not supported" in caught.value.message and caught.value.hint == "upgrade sentinel-backup to read it"


def test_unknown_kind_is_refused() -> None:
    doc = json.loads(V1.read_bytes())
    doc["kind"] = "mystery"
    with pytest.raises(VerifyFailed):
        Manifest.from_json(json.dumps(doc).encode(), "doc")
