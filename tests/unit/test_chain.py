"""Incremental chains: walking a chain, the chain policy, and retention on chains (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel_backup.errors import NotFound
from sentinel_backup.model.catalog import Entry
from sentinel_backup.model.manifest import CompressionInfo, Manifest, PhysicalFacts
from sentinel_backup.physical.chain import ChainPolicy, chain_of, chain_plan, needs_full
from sentinel_backup.retention.plan import BackupRef, RetentionPolicy

T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
GROUP = "(cluster) 7000000000000000001"


def entry(ident: str, day: int, parent: str | None = None, root: str | None = None, pos: int = 0,
          manifest_key: str | None = "m") -> Entry:
    moment = T0 + timedelta(days=day)
    facts = PhysicalFacts(system_identifier="7000000000000000001", timeline=1, start_lsn="0/1000028",
                          stop_lsn="0/2000000", start_wal="000000010000000000000001",
                          stop_wal="000000010000000000000001", wal_segment_size=1 << 20, parent_id=parent,
                          chain_root_id=root, chain_position=pos, backup_manifest_key=manifest_key)
    manifest = Manifest(id=ident, kind="physical", database="(cluster)", artifact=f"{ident}.tar", created_at=moment,
                        finished_at=moment, duration_seconds=1, tool_version="t", hostname="h",
                        compression=CompressionInfo(algorithm="gzip", level=6), raw_size_bytes=1, raw_sha256="",
                        size_bytes=1, sha256="", physical=facts, format="tar")
    return Entry(manifest, {"local": manifest.artifact})


def test_chain_of_walks_to_the_root_and_refuses_a_missing_member() -> None:
    full, one, two = entry("f", 0), entry("i1", 1, "f", "f", 1), entry("i2", 2, "i1", "f", 2)
    assert [e.id for e in chain_of(two, [two, one, full])] == ["f", "i1", "i2"]
    assert [e.id for e in chain_of(full, [two, one, full])] == ["f"]
    with pytest.raises(NotFound, match="chain member i1 is missing"):
        chain_of(two, [two, full])


def test_chain_policy_decides_when_a_full_backup_is_taken() -> None:
    full, one = entry("f", 0), entry("i1", 1, "f", "f", 1)
    now = T0 + timedelta(days=2)
    assert needs_full(None, None, ChainPolicy(), now) == "no earlier physical backup of this cluster"
    assert needs_full(one, full, ChainPolicy(), now) is None
    assert needs_full(one, full, ChainPolicy(max_incrementals=2), now) is None
    assert "PHYSICAL_MAX_INCREMENTALS=1" in str(needs_full(one, full, ChainPolicy(max_incrementals=1), now))
    assert needs_full(one, full, ChainPolicy(full_every=timedelta(days=3)), now) is None
    assert "PHYSICAL_FULL_EVERY" in str(needs_full(one, full, ChainPolicy(full_every=timedelta(days=2)), now))
    assert "no stored backup_manifest" in str(needs_full(entry("x", 1, manifest_key=None), None, ChainPolicy(), now))


def ref(ident: str, day: int, good: bool = True) -> BackupRef:
    return BackupRef(id=ident, database=GROUP, created_at=T0 + timedelta(days=day),
                     keys=(f"{ident}.manifest.json", f"{ident}.tar"), good=good, kind="physical", size=10)


# Two chains: f1 (day 0) <- a (1) <- b (2); f2 (day 7) <- c (8); and a logical backup.
REFS = [ref("f1", 0), ref("a", 1), ref("b", 2), ref("f2", 7), ref("c", 8),
        BackupRef(id="db1", database="app", created_at=T0, keys=("x",), good=True)]
PARENTS: dict[str, str | None] = {"f1": None, "a": "f1", "b": "a", "f2": None, "c": "f2"}
NOW = T0 + timedelta(days=9)


def decided(policy: RetentionPolicy, refs: list[BackupRef] = REFS,
            parents: dict[str, str | None] = PARENTS) -> tuple[list[str], list[str]]:
    the_plan = chain_plan(refs, parents, policy, NOW)
    return [d.backup.id for d in the_plan.kept], [d.backup.id for d in the_plan.removed]


def test_a_chain_is_kept_or_removed_whole_newest_member_first() -> None:
    kept, removed = decided(RetentionPolicy(keep_last=1))
    assert sorted(kept) == ["c", "db1", "f2"]
    assert removed == ["b", "a", "f1"]  # newest first: never an incremental left without its parent


def test_gfs_counts_chains_dated_by_their_newest_member() -> None:
    kept, removed = decided(RetentionPolicy(keep_last=2))
    assert removed == [] and len(kept) == 6
    # days: the old chain's newest member (day 2) is 7 days old: within 8 days, whole chain kept
    kept, removed = decided(RetentionPolicy(days=8))
    assert removed == []
    kept, removed = decided(RetentionPolicy(days=6))
    assert removed == ["b", "a", "f1"]
    # weekly: the chains fall in two ISO weeks -> both kept with keep_weekly=2, the old one removed with 1
    assert decided(RetentionPolicy(keep_weekly=2))[1] == []
    assert decided(RetentionPolicy(keep_weekly=1))[1] == ["b", "a", "f1"]


def test_the_newest_chain_is_never_removed_and_a_damaged_member_is_kept_apart() -> None:
    kept, removed = decided(RetentionPolicy(days=1))
    assert "c" in kept and "f2" in kept
    refs = [*REFS[:2], ref("b", 2, good=False), *REFS[3:]]
    kept, removed = decided(RetentionPolicy(keep_last=1), refs)
    assert "b" in kept  # damaged: kept for inspection, never removed automatically
    assert removed == ["a", "f1"]


def test_an_orphan_incremental_stands_alone_and_keeps_nothing_else() -> None:
    refs = [ref("a", 1), ref("f2", 7), ref("c", 8)]  # a's parent f1 is gone
    kept, removed = decided(RetentionPolicy(keep_last=1), refs, {"a": "f1", "f2": None, "c": "f2"})
    assert sorted(kept) == ["c", "f2"] and removed == ["a"]


def test_incremental_needs_postgresql_17_and_summarize_wal() -> None:
    from sentinel_backup.physical.incremental import incremental_problem
    old = incremental_problem({"version": "15.18", "version_num": 150018, "summarize_wal": None})
    assert old is not None and old.exit_code == 2 and "PostgreSQL 15.18" in old.message and "17" in old.message
    off = incremental_problem({"version": "18.6", "version_num": 180006, "summarize_wal": "off"})
    assert off is not None and "ALTER SYSTEM SET summarize_wal = on" in str(off.hint)
    assert incremental_problem({"version": "17.2", "version_num": 170002, "summarize_wal": "on"}) is None


def test_wal_retention_follows_the_oldest_kept_chain() -> None:
    from sentinel_backup.physical.retention import BaseInfo, WalObject, plan_wal, wal_for_plan
    sysid = "7000000000000000001"
    starts = {"f1": 1, "a": 3, "b": 5, "f2": 8, "c": 10}
    infos = {i: BaseInfo(i, sysid, f"00000001000000000000{n:04X}") for i, n in starts.items()}
    archive = [WalObject(f"wal/{n}", sysid, f"00000001000000000000{n:04X}") for n in range(1, 13)]
    kept = wal_for_plan(chain_plan(REFS, PARENTS, RetentionPolicy(keep_last=1), NOW), infos)
    assert sorted(b.id for b in kept) == ["c", "f2"]
    the_plan = plan_wal(archive, kept)
    assert [o.name[-2:] for o in the_plan.remove] == ["01", "02", "03", "04", "05", "06", "07"]
    kept = wal_for_plan(chain_plan(REFS, PARENTS, RetentionPolicy(keep_last=2), NOW), infos)
    assert plan_wal(archive, kept).remove == []  # the old chain's full backup anchors the archive


def test_scratch_of_a_killed_restore_is_removed_a_running_ones_is_not(tmp_path: Path) -> None:
    import os

    from sentinel_backup.physical.incremental import SCRATCH_PREFIX, remove_stale
    dead = tmp_path / f"{SCRATCH_PREFIX}999999999-abc"
    running = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    for folder in (dead, running):
        (folder / "000-base").mkdir(parents=True)
    assert remove_stale(tmp_path, SCRATCH_PREFIX) == [dead]
    assert not dead.exists() and running.exists()
