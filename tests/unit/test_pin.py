"""Pins (``<artifact>.pin.json``): retention keeps a pinned backup whatever its rules say."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sentinel_backup.model.manifest import CompressionInfo, Manifest, PhysicalFacts
from sentinel_backup.model.pin import PIN_SUFFIX, UNREADABLE, Pin, parse, reason
from sentinel_backup.physical.chain import chain_plan
from sentinel_backup.retention.plan import RetentionPolicy, apply, plan, scan
from tests.unit.test_chain import NOW as CHAIN_NOW
from tests.unit.test_chain import PARENTS, REFS
from tests.unit.test_retention import NOW, MemoryStorage, days_ago, decisions, put_backup, ref

EVERY_RULE = RetentionPolicy(days=7, keep_last=1, keep_daily=1, keep_weekly=1, keep_monthly=1, keep_yearly=1)


def test_a_pinned_backup_is_kept_when_every_rule_would_remove_it() -> None:
    old = ref("app", days_ago(900))
    pinned = replace(ref("app", days_ago(800)), pinned="pinned: before the v2 migration")
    newest = ref("app", days_ago(1))
    by_id = decisions(plan([old, pinned, newest], EVERY_RULE, NOW))
    assert by_id[old.id] == (False, "older than 7 days")
    assert by_id[pinned.id] == (True, "pinned: before the v2 migration")
    assert by_id[newest.id][0] is True
    unpinned = decisions(plan([old, replace(pinned, pinned=None), newest], EVERY_RULE, NOW))
    assert unpinned[pinned.id] == (False, "older than 7 days")  # the pin alone kept it


def test_a_pinned_backup_still_counts_for_the_rules_and_leftovers_are_not_pinned() -> None:
    newest = replace(ref("app", days_ago(1)), pinned="pinned")
    older = ref("app", days_ago(2))
    leftover = replace(ref("app", days_ago(30), kind="incomplete"), pinned="pinned")
    by_id = decisions(plan([newest, older, leftover], RetentionPolicy(keep_last=1), NOW))
    assert by_id[newest.id] == (True, "pinned; newest backup of app; last 1")
    assert by_id[older.id][0] is False  # keep_last 1 is used up by the pinned newest one
    assert by_id[leftover.id][0] is False  # a pin does not make a leftover a backup


def test_a_pinned_incremental_keeps_its_whole_chain() -> None:
    refs = [replace(r, pinned="pinned: audit") if r.id == "a" else r for r in REFS]
    the_plan = chain_plan(refs, PARENTS, RetentionPolicy(keep_last=1), CHAIN_NOW)
    kept = {d.backup.id: d.reason for d in the_plan.kept}
    assert {"f1", "a", "b"} <= set(kept) and kept["a"].startswith("pinned: audit")
    assert not the_plan.removed


def test_scan_reads_the_pin_and_deletes_it_after_the_manifest() -> None:
    store = MemoryStorage()
    artifact = put_backup(store, "app", days_ago(400))
    put_backup(store, "app", days_ago(1))
    store.put(artifact + PIN_SUFFIX, json.dumps({"note": "keep me", "pinned_at": "2026-01-01T00:00:00Z"}).encode(),
              days_ago(0))
    refs = {r.keys[-1]: r for r in scan(store)}
    pinned = refs[artifact]
    assert pinned.pinned == "pinned: keep me" and pinned.good
    assert pinned.keys == (artifact + ".manifest.json", artifact + ".sha256", artifact + PIN_SUFFIX, artifact)
    assert decisions(plan(list(refs.values()), RetentionPolicy(days=7), NOW))[pinned.id] == (True, "pinned: keep me")
    # unpinned later: the sidecar is gone, the backup is removed, manifest first
    del store.objects[artifact + PIN_SUFFIX]
    refs = {r.keys[-1]: r for r in scan(store)}
    assert refs[artifact].pinned is None
    apply(store, plan(list(refs.values()), RetentionPolicy(days=7), NOW), dry_run=False)  # type: ignore[arg-type]
    assert store.deleted == [artifact + ".manifest.json", artifact + ".sha256", artifact]


def test_a_lone_pin_file_is_a_leftover_and_an_unreadable_one_still_pins() -> None:
    store = MemoryStorage()
    artifact = put_backup(store, "app", days_ago(400))
    for suffix in (".manifest.json", ".sha256", ""):
        del store.objects[artifact + suffix]
    store.put(artifact + PIN_SUFFIX, b"{}", days_ago(3))
    (lone,) = scan(store)
    assert lone.incomplete and lone.note == "pin without artifact or manifest"
    assert parse(b"{broken").note == UNREADABLE and reason(parse(b"[1]")) == f"pinned: {UNREADABLE}"
    assert reason(Pin("", "")) == "pinned" and parse(b'{"note": "x", "host": "h"}') == Pin("x", "", "h")


def test_physical_base_backups_carry_the_pin_in_retention_and_the_catalog(tmp_path: Path) -> None:
    from sentinel_backup.model import pin
    from sentinel_backup.model.catalog import scan as catalog_scan
    from sentinel_backup.physical.retention import scan_bases
    from sentinel_backup.storage.local import LocalStorage
    sysid, moment = "7000000000000000001", datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
    facts = PhysicalFacts(system_identifier=sysid, timeline=1, start_lsn="0/1000028", stop_lsn="0/2000000",
                          start_wal="000000010000000000000001", stop_wal="000000010000000000000001",
                          wal_segment_size=1 << 20)
    artifact = f"basebackups/{sysid}/sentinel_base_20261102T030000Z.tar.gz"
    manifest = Manifest(id="base_20261102T030000Z", kind="physical", database="(cluster)", artifact=artifact,
                        created_at=moment, finished_at=moment, duration_seconds=1, tool_version="t", hostname="h",
                        compression=CompressionInfo(algorithm="gzip", level=6), raw_size_bytes=1, raw_sha256="",
                        size_bytes=1, sha256="", physical=facts, format="tar")
    storage = LocalStorage(tmp_path)
    storage.put_bytes(artifact, b"x")
    storage.put_bytes(manifest.manifest_key, manifest.to_json())
    pin.write(storage, artifact, Pin("quarterly audit", "2026-12-01T00:00:00Z", "db1"))
    (ref,), infos = scan_bases(storage)
    assert ref.good and ref.pinned == "pinned: quarterly audit" and list(infos) == [manifest.id]
    assert ref.keys[0].endswith(".manifest.json") and ref.keys[-1] == artifact and artifact + PIN_SUFFIX in ref.keys
    entry = catalog_scan([storage]).find(manifest.id)
    assert entry.pin_json() == {"note": "quarterly audit", "pinned_at": "2026-12-01T00:00:00Z"}
    assert entry.to_json()["pinned"]["note"] == "quarterly audit" and entry.pins == {storage.name}
    pin.remove(storage, artifact)
    assert scan_bases(storage)[0][0].pinned is None and catalog_scan([storage]).find(manifest.id).pin is None
