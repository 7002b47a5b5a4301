"""WAL retention: exactly the WAL that kept base backups need (a pure plan)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel_backup.physical.retention import BaseInfo, WalObject, plan_wal, scan_bases
from sentinel_backup.retention.plan import RetentionPolicy, plan
from sentinel_backup.storage.local import LocalStorage

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
A, B = "7000000000000000001", "7000000000000000002"


def wal(sysid: str, name: str) -> WalObject:
    return WalObject(f"wal/{sysid}/{name[:8]}/{name}.{'0' * 64}.gz", sysid, name)


def seg(tli: int, n: int, suffix: str = "") -> str:
    return f"{tli:08X}{n // 4096:08X}{n % 4096:08X}{suffix}"


def names(objects: list[WalObject]) -> list[str]:
    return sorted(o.name for o in objects)


def test_keeps_from_the_oldest_kept_start_forward_and_removes_before() -> None:
    archive = [wal(A, seg(1, n)) for n in range(1, 11)]
    the_plan = plan_wal(archive, [BaseInfo("b2", A, seg(1, 7)), BaseInfo("b1", A, seg(1, 4))])
    assert names(the_plan.keep) == [seg(1, n) for n in range(4, 11)]
    assert names(the_plan.remove) == [seg(1, n) for n in range(1, 4)]
    assert the_plan.cutoff == {A: seg(1, 4)}
    lines = the_plan.ranges()
    assert f"WAL remove {A} timeline 1: {seg(1, 1)} .. {seg(1, 3)} (3 file(s))" in lines
    assert f"WAL keep {A} timeline 1: {seg(1, 4)} .. {seg(1, 10)} (7 file(s))" in lines


def test_history_files_stay_other_timelines_follow_the_segment_number() -> None:
    archive = [wal(A, seg(1, 3)), wal(A, seg(1, 5, ".00000028.backup")), wal(A, seg(1, 6)), wal(A, "00000002.history"),
               wal(A, seg(2, 5)), wal(A, seg(2, 6, ".partial")), wal(A, seg(2, 9))]
    the_plan = plan_wal(archive, [BaseInfo("b", A, seg(1, 6))])
    assert names(the_plan.remove) == sorted([seg(1, 3), seg(1, 5, ".00000028.backup"), seg(2, 5)])
    assert "00000002.history" in names(the_plan.keep)
    assert seg(2, 6, ".partial") in names(the_plan.keep)


def test_clusters_are_separate_and_without_a_kept_base_everything_stays() -> None:
    archive = [wal(A, seg(1, 1)), wal(A, seg(1, 8)), wal(B, seg(1, 1)), wal(B, seg(1, 2))]
    the_plan = plan_wal(archive, [BaseInfo("b", A, seg(1, 8))])
    assert names(the_plan.remove) == [seg(1, 1)] and the_plan.remove[0].system_id == A
    assert sorted((o.system_id, o.name) for o in the_plan.keep) == [(A, seg(1, 8)), (B, seg(1, 1)), (B, seg(1, 2))]
    assert plan_wal(archive, []).remove == []


def test_ordering_holds_across_log_boundaries() -> None:
    archive = [wal(A, seg(1, 4095)), wal(A, seg(1, 4096)), wal(A, seg(1, 4097))]
    the_plan = plan_wal(archive, [BaseInfo("b", A, seg(1, 4096))])
    assert names(the_plan.remove) == [seg(1, 4095)]


def test_base_backup_leftovers_on_a_real_folder_are_removed_after_the_grace(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    folder = tmp_path / "basebackups" / A
    folder.mkdir(parents=True)
    old = (NOW - timedelta(days=3)).timestamp()
    for name in (".sentinel_base_20261101T000000Z.tar.gz.partial", "sentinel_base_20261102T000000Z.tar.gz",
                 "sentinel_base_20261102T000000Z.backup_manifest.gz"):
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (old, old))
    (folder / "sentinel_base_20261202T000000Z.tar.gz").write_bytes(b"fresh")  # a running backup's, say
    refs, infos = scan_bases(storage)
    assert infos == {} and all(r.incomplete and r.kind == "physical" for r in refs)
    the_plan = plan(refs, RetentionPolicy(keep_last=1), NOW)
    removed = sorted(k for d in the_plan.removed for k in d.backup.keys)
    assert removed == [f"basebackups/{A}/.sentinel_base_20261101T000000Z.tar.gz.partial",
                       f"basebackups/{A}/sentinel_base_20261102T000000Z.backup_manifest.gz",
                       f"basebackups/{A}/sentinel_base_20261102T000000Z.tar.gz"]


def test_a_servers_prune_scope_is_its_own_base_backups_and_their_clusters_wal() -> None:
    """db1 backs up cluster A, db2 cluster B, an unnamed server cluster C; a leftover without
    manifest belongs to its cluster's server; WAL of a cluster another server also backs up
    stays anchored on that server's base backups."""
    from sentinel_backup.physical.retention import server_scope
    from sentinel_backup.retention.plan import BackupRef

    def ref(ident: str, sysid: str, server: str | None) -> BackupRef:
        return BackupRef(id=ident, database="(cluster)", created_at=NOW, keys=(ident,), good=server is not None,
                         incomplete=server is None, kind="physical", system_id=sysid, server=server)

    bases = [ref("a1", A, "db1"), ref("a-left", A, None), ref("b1", B, "db2"), ref("c1", "3", ""),
             ref("shared", A, "db2")]
    infos = {r.id: BaseInfo(r.id, r.system_id or "", seg(1, 2)) for r in bases if r.good}
    archive = [wal(A, seg(1, 1)), wal(B, seg(1, 1)), wal("3", seg(1, 1)), wal("4", seg(1, 1))]
    db1 = server_scope(bases, infos, "db1", archive)
    assert [r.id for r in db1.bases] == ["a1", "a-left"] and db1.clusters == {A}
    assert [w.system_id for w in db1.wal(archive)] == [A]
    assert [i.id for i in db1.anchors] == ["shared"]  # db2's base backup of cluster A keeps its WAL
    db2 = server_scope(bases, infos, "db2", archive)
    assert [r.id for r in db2.bases] == ["a-left", "b1", "shared"] and db2.clusters == {A, B}  # a shared cluster
    unnamed = server_scope(bases, infos, "", archive)
    assert [r.id for r in unnamed.bases] == ["c1"] and unnamed.clusters == {"3", "4"}  # "4": WAL only, as before
