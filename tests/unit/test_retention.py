"""Retention: the pure plan (exhaustive cases and properties), scan over an in-memory store, apply."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel_backup.config import Settings
from sentinel_backup.errors import ConfigError, ObjectLocked, StorageError
from sentinel_backup.model.manifest import Manifest, artifact_name, backup_id
from sentinel_backup.retention.plan import (
    BackupRef,
    RetentionPlan,
    RetentionPolicy,
    apply,
    plan,
    scan,
)
from sentinel_backup.storage.base import Capabilities, ObjectInfo

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
_n = iter(range(10**9))


def ref(db: str, at: datetime, *, kind: str = "good", group: str = "database") -> BackupRef:
    n = next(_n)
    base = f"sentinel_backup_{db}_{n}"
    return BackupRef(id=f"{db}-{n}", database=db, created_at=at,
                     keys=(base + ".sql.gz.manifest.json", base + ".sql.gz.sha256", base + ".sql.gz"),
                     good=kind == "good", legacy=kind == "legacy", incomplete=kind == "incomplete",
                     kind=group)  # type: ignore[arg-type]


def decisions(p: RetentionPlan) -> dict[str, tuple[bool, str]]:
    return {d.backup.id: (d.keep, d.reason) for d in p.decisions}


def days_ago(n: float, hour: int = 3) -> datetime:
    return (NOW - timedelta(days=n)).replace(hour=hour, minute=0)


# --- policy --------------------------------------------------------------------------------
def _settings(**env: object) -> Settings:
    base = {"POSTGRES_USER": "u", "POSTGRES_DB": "app", "BACKUP_DIR": "/tmp/x", "_env_file": None}
    return Settings(**{**base, **env})  # type: ignore[arg-type]


def test_policy_from_settings_and_destination_overrides() -> None:
    s = _settings(RETENTION_DAYS=30, S3_RETENTION_DAYS=90, RETENTION_KEEP_DAILY=7,
                  RETENTION_TIMEZONE="Europe/Paris")
    local = RetentionPolicy.from_settings(s, "local")
    assert (local.days, local.keep_daily, local.timezone) == (30, 7, "Europe/Paris")
    assert RetentionPolicy.from_settings(s, "s3").days == 90
    assert RetentionPolicy.from_settings(s, "minio").days == 30  # no MinIO override
    s2 = _settings(RETENTION_DAYS=30, MINIO_RETENTION_DAYS=0)
    assert RetentionPolicy.from_settings(s2, "minio").days == 0
    assert RetentionPolicy.from_settings(s2, "minio").empty


def test_empty_policy_when_nothing_or_zero_is_set() -> None:
    assert RetentionPolicy.from_settings(_settings(), "local").empty
    assert RetentionPolicy(days=0, keep_last=0, keep_daily=0).empty
    assert not RetentionPolicy(keep_yearly=1).empty
    assert RetentionPolicy().describe() == "no rule"
    assert RetentionPolicy(days=30, keep_daily=7).describe() == "days 30, daily 7 (UTC)"


def test_policy_rejects_unknown_timezone_and_negative_values() -> None:
    with pytest.raises(ConfigError, match="RETENTION_TIMEZONE"):
        RetentionPolicy(timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="keep_last"):
        RetentionPolicy(keep_last=-1)


# --- plan: rules ---------------------------------------------------------------------------
def test_empty_policy_keeps_every_backup() -> None:
    refs = [ref("app", days_ago(n)) for n in range(400)] + [ref("app", days_ago(900), kind="legacy")]
    p = plan(refs, RetentionPolicy(), NOW)
    assert not p.removed
    assert decisions(p)[refs[0].id] == (True, "newest backup of app")
    assert decisions(p)[refs[5].id] == (True, "no retention rule")


def test_days_rule_keeps_recent_and_removes_old() -> None:
    refs = [ref("app", days_ago(n)) for n in (0, 10, 29, 31, 100)]
    got = decisions(plan(refs, RetentionPolicy(days=30), NOW))
    assert got[refs[0].id] == (True, "newest backup of app; within 30 days")
    assert got[refs[2].id] == (True, "within 30 days")
    assert got[refs[3].id] == (False, "older than 30 days")
    assert got[refs[4].id] == (False, "older than 30 days")


def test_days_boundary_is_inclusive() -> None:
    edge = ref("app", NOW - timedelta(days=30))
    older = ref("app", NOW - timedelta(days=30, seconds=1))
    newest = ref("app", NOW)
    got = decisions(plan([edge, older, newest], RetentionPolicy(days=30), NOW))
    assert got[edge.id][0] and not got[older.id][0]


def test_newest_good_backup_is_never_removed() -> None:
    refs = [ref("app", days_ago(n)) for n in (400, 500, 600)]
    got = decisions(plan(refs, RetentionPolicy(days=1), NOW))
    assert got[refs[0].id] == (True, "newest backup of app")
    assert not got[refs[1].id][0] and not got[refs[2].id][0]


def test_keep_last() -> None:
    refs = [ref("app", days_ago(n)) for n in range(10)]
    got = decisions(plan(refs, RetentionPolicy(keep_last=3), NOW))
    assert [got[r.id][0] for r in refs] == [True] * 3 + [False] * 7
    assert got[refs[1].id] == (True, "last 3")
    assert got[refs[9].id] == (False, "not kept by any rule (last 3 (UTC))")


def test_keep_daily_keeps_newest_of_each_day() -> None:
    refs = [ref("app", days_ago(d, hour=h)) for d in range(5) for h in (3, 15)]
    got = decisions(plan(refs, RetentionPolicy(keep_daily=3), NOW))
    kept = {r.created_at for r in refs if got[r.id][0]}
    assert kept == {days_ago(d, hour=15) for d in range(3)} | {days_ago(0, hour=15)}
    assert got[refs[3].id] == (True, "daily 2026-11-28")


def test_gfs_counts_periods_that_have_backups_not_calendar_periods() -> None:
    refs = [ref("app", days_ago(n)) for n in (0, 5, 40, 41)]
    got = decisions(plan(refs, RetentionPolicy(keep_daily=3), NOW))
    assert [got[r.id][0] for r in refs] == [True, True, True, False]


def test_weekly_uses_iso_weeks_across_new_year() -> None:
    # 2026-12-31 (Thu) and 2027-01-02 (Sat) are both in ISO week 2026-W53.
    now = datetime(2027, 1, 20, tzinfo=UTC)
    a = ref("app", datetime(2026, 12, 31, 3, tzinfo=UTC))
    b = ref("app", datetime(2027, 1, 2, 3, tzinfo=UTC))
    c = ref("app", datetime(2027, 1, 4, 3, tzinfo=UTC))  # Monday: 2027-W01
    got = decisions(plan([a, b, c], RetentionPolicy(keep_weekly=5), now))
    assert got[c.id] == (True, "newest backup of app; weekly 2027-W01")
    assert got[b.id] == (True, "weekly 2026-W53")
    assert got[a.id][0] is False


def test_monthly_and_yearly() -> None:
    refs = [ref("app", datetime(y, m, 1, tzinfo=UTC)) for y in (2024, 2025, 2026) for m in (1, 6, 11)]
    got = decisions(plan(refs, RetentionPolicy(keep_monthly=4, keep_yearly=3), NOW))
    reasons = {r.created_at.strftime("%Y-%m"): got[r.id] for r in refs}
    assert reasons["2026-11"] == (True, "newest backup of app; monthly 2026-11; yearly 2026")
    assert reasons["2025-11"] == (True, "monthly 2025-11; yearly 2025")
    assert reasons["2025-06"] == (False, "not kept by any rule (monthly 4, yearly 3 (UTC))")
    assert reasons["2024-11"] == (True, "yearly 2024")
    assert reasons["2024-01"][0] is False


def test_any_rule_keeps() -> None:
    refs = [ref("app", days_ago(n)) for n in range(60)]
    got = decisions(plan(refs, RetentionPolicy(days=7, keep_last=10), NOW))
    assert sum(keep for keep, _ in got.values()) == 10
    assert got[refs[3].id] == (True, "within 7 days; last 10")
    assert got[refs[20].id] == (False, "older than 7 days")


def test_timezone_moves_the_day_boundary() -> None:
    late = ref("app", datetime(2026, 11, 27, 23, 30, tzinfo=UTC))  # 00:30 on the 28th in Paris
    early = ref("app", datetime(2026, 11, 27, 22, 0, tzinfo=UTC))  # 23:00 on the 27th in Paris
    utc = decisions(plan([late, early], RetentionPolicy(keep_daily=2), NOW))
    paris = decisions(plan([late, early], RetentionPolicy(keep_daily=2, timezone="Europe/Paris"), NOW))
    assert utc[early.id] == (False, "not kept by any rule (daily 2 (UTC))")
    assert paris[late.id] == (True, "newest backup of app; daily 2026-11-28")
    assert paris[early.id] == (True, "daily 2026-11-27")


def test_timezone_dst_fall_back_day_is_one_day() -> None:
    # 2026-10-25 is 25 hours long in Europe/Paris; 22:30 UTC on the 24th is 00:30 local on the 25th.
    refs = [ref("app", datetime(2026, 10, 24, 22, 30, tzinfo=UTC)),
            ref("app", datetime(2026, 10, 25, 22, 30, tzinfo=UTC))]  # 23:30 local, same day
    got = plan(refs, RetentionPolicy(keep_daily=5, timezone="Europe/Paris"), NOW)
    assert [d.keep for d in got.decisions] == [False, True]


def test_rules_apply_per_database_and_globals_separately() -> None:
    app = [ref("app", days_ago(n)) for n in (100, 200)]
    crm = [ref("crm", days_ago(n)) for n in (150, 250)]
    glob = [ref("", days_ago(n), group="globals") for n in (120, 220)]
    got = decisions(plan(app + crm + glob, RetentionPolicy(days=30), NOW))
    assert got[app[0].id] == (True, "newest backup of app")
    assert got[crm[0].id] == (True, "newest backup of crm")
    assert got[glob[0].id] == (True, "newest backup of globals")
    assert [got[r.id][0] for r in (app[1], crm[1], glob[1])] == [False, False, False]


# --- plan: legacy, leftovers, damaged ------------------------------------------------------
def test_legacy_is_subject_to_days_only() -> None:
    good = [ref("app", days_ago(n)) for n in (0, 1)]
    old, recent = ref("app", days_ago(45), kind="legacy"), ref("app", days_ago(3), kind="legacy")
    got = decisions(plan([*good, old, recent], RetentionPolicy(days=30, keep_last=10, keep_yearly=5), NOW))
    assert got[old.id] == (False, "legacy older than 30 days")
    assert got[recent.id] == (True, "within 30 days")
    assert decisions(plan([*good, old], RetentionPolicy(keep_last=1), NOW))[old.id] == (
        True, "legacy, kept: no days rule")


def test_legacy_is_kept_without_days_rule() -> None:
    legacy = ref("app", days_ago(900), kind="legacy")
    got = decisions(plan([ref("app", NOW), legacy], RetentionPolicy(), NOW))
    assert got[legacy.id] == (True, "no retention rule")


def test_newest_legacy_is_protected_when_database_has_no_good_backup() -> None:
    legacy = [ref("old", days_ago(n), kind="legacy") for n in (100, 200)]
    got = decisions(plan(legacy, RetentionPolicy(days=30), NOW))
    assert got[legacy[0].id] == (True, "newest backup of old (legacy)")
    assert got[legacy[1].id] == (False, "legacy older than 30 days")


def test_incomplete_leftovers_removed_after_grace_even_with_empty_policy() -> None:
    old = ref("app", NOW - timedelta(hours=25), kind="incomplete")
    young = ref("app", NOW - timedelta(hours=2), kind="incomplete")
    got = decisions(plan([ref("app", days_ago(1)), old, young], RetentionPolicy(), NOW))
    assert got[old.id] == (False, "incomplete leftover older than 24h")
    assert got[young.id] == (True, "incomplete, younger than 24h (a run may still be writing it)")
    short = decisions(plan([young], RetentionPolicy(), NOW, leftover_grace=timedelta(hours=1)))
    assert short[young.id] == (False, "incomplete leftover older than 1h")


def test_incomplete_is_never_the_protected_newest() -> None:
    good = ref("app", days_ago(100))
    leftover = ref("app", NOW - timedelta(days=2), kind="incomplete")
    got = decisions(plan([good, leftover], RetentionPolicy(days=30), NOW))
    assert got[good.id] == (True, "newest backup of app")
    assert got[leftover.id][0] is False


def test_damaged_backup_is_kept_and_not_counted_as_good() -> None:
    damaged = BackupRef(id="d", database="app", created_at=NOW, keys=("k",), note="damaged: bad json")
    older = ref("app", days_ago(90))
    got = decisions(plan([damaged, older], RetentionPolicy(days=30), NOW))
    assert got["d"] == (True, "damaged: bad json: kept for inspection")
    assert got[older.id] == (True, "newest backup of app")


def test_plan_to_dict_for_json_output() -> None:
    refs = [ref("app", days_ago(0)), ref("app", days_ago(90))]
    out = plan(refs, RetentionPolicy(days=30), NOW).to_dict()
    assert out["policy"] == "days 30 (UTC)"
    assert [(d["action"], d["kind"], d["database"]) for d in out["decisions"]] == [
        ("keep", "good", "app"), ("remove", "good", "app")]
    assert out["decisions"][1]["keys"][0].endswith(".manifest.json")


# --- properties ----------------------------------------------------------------------------
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Pacific/Chatham", "Asia/Kolkata"]
_rule = st.one_of(st.none(), st.integers(0, 12))


@st.composite
def refs_strategy(draw: st.DrawFn) -> list[BackupRef]:
    items = draw(st.lists(st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 3 * 366 * 24 * 60),
        st.sampled_from(["good"] * 6 + ["legacy", "incomplete", "damaged"]),
    ), max_size=60))
    out = []
    for i, (db, minutes, kind) in enumerate(items):
        at = NOW - timedelta(minutes=minutes)
        out.append(BackupRef(id=f"{db}{i}", database=db, created_at=at, keys=(f"m{i}", f"s{i}", f"a{i}"),
                             good=kind == "good", legacy=kind == "legacy", incomplete=kind == "incomplete"))
    return out


policies = st.builds(RetentionPolicy, days=_rule, keep_last=_rule, keep_daily=_rule, keep_weekly=_rule,
                     keep_monthly=_rule, keep_yearly=_rule, timezone=st.sampled_from(ZONES))


def _newest_good(refs: list[BackupRef]) -> dict[str, str]:
    newest: dict[str, BackupRef] = {}
    for r in refs:
        if r.good and (r.database not in newest or (r.created_at, r.id) > (newest[r.database].created_at,
                                                                            newest[r.database].id)):
            newest[r.database] = r
    return {db: r.id for db, r in newest.items()}


@settings(max_examples=300, deadline=None)
@given(refs_strategy(), policies)
def test_property_never_removes_newest_good_backup(refs: list[BackupRef], policy: RetentionPolicy) -> None:
    got = decisions(plan(refs, policy, NOW))
    for ident in _newest_good(refs).values():
        assert got[ident][0], got[ident]


@settings(max_examples=200, deadline=None)
@given(refs_strategy(), st.sampled_from(ZONES))
def test_property_empty_policy_removes_nothing_but_leftovers(refs: list[BackupRef], zone: str) -> None:
    p = plan(refs, RetentionPolicy(timezone=zone), NOW)
    assert all(d.backup.incomplete for d in p.removed)


@settings(max_examples=300, deadline=None)
@given(refs_strategy(), policies)
def test_property_stable_replanning_removes_nothing_more(refs: list[BackupRef], policy: RetentionPolicy) -> None:
    survivors = [d.backup for d in plan(refs, policy, NOW).kept]
    again = plan(survivors, policy, NOW)
    assert not again.removed
    assert [d.reason for d in again.decisions] == [d.reason for d in plan(refs, policy, NOW).kept]


@settings(max_examples=200, deadline=None)
@given(refs_strategy(), st.integers(1, 15))
def test_property_keep_last_keeps_exactly_the_n_newest(refs: list[BackupRef], n: int) -> None:
    got = decisions(plan(refs, RetentionPolicy(keep_last=n), NOW))
    for db in {r.database for r in refs}:
        goods = sorted((r for r in refs if r.good and r.database == db), key=lambda r: (r.created_at, r.id),
                       reverse=True)
        assert [got[r.id][0] for r in goods] == [True] * min(n, len(goods)) + [False] * (len(goods) - n)


@settings(max_examples=200, deadline=None)
@given(refs_strategy(), st.sampled_from(ZONES))
def test_property_daily_keeps_one_per_local_day(refs: list[BackupRef], zone: str) -> None:
    from zoneinfo import ZoneInfo

    got = decisions(plan(refs, RetentionPolicy(keep_daily=10_000, timezone=zone), NOW))
    for db in {r.database for r in refs}:
        goods = [r for r in refs if r.good and r.database == db]
        days = {r.created_at.astimezone(ZoneInfo(zone)).date() for r in goods}
        assert sum(got[r.id][0] for r in goods) == len(days)


@settings(max_examples=200, deadline=None)
@given(refs_strategy(), policies)
def test_property_legacy_only_removed_by_days(refs: list[BackupRef], policy: RetentionPolicy) -> None:
    removed = [d.backup for d in plan(refs, policy, NOW).removed if d.backup.legacy]
    assert not removed or policy.days
    assert all(r.created_at < NOW - timedelta(days=policy.days or 0) for r in removed)


@settings(max_examples=200, deadline=None)
@given(refs_strategy(), st.integers(1, 400))
def test_property_days_only_removes_older_than_cutoff(refs: list[BackupRef], days: int) -> None:
    p = plan(refs, RetentionPolicy(days=days), NOW)
    cutoff = NOW - timedelta(days=days)
    assert all(d.backup.created_at < cutoff or d.backup.incomplete for d in p.removed)
    assert all(d.reason for d in p.decisions)


# --- scan over an in-memory destination ----------------------------------------------------
class MemoryStorage:
    """The parts of the Storage protocol retention uses, in memory (objects may sit in folders)."""

    name = "memory"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, datetime]] = {}
        self.deleted: list[str] = []
        self.locked: set[str] = set()
        self.broken: set[str] = set()

    def put(self, key: str, data: bytes, at: datetime) -> None:
        self.objects[key] = (data, at)

    def list(self, prefix: str = "", *, deep: bool = False) -> Iterator[ObjectInfo]:
        folder = prefix.rpartition("/")[0]
        for key, (data, at) in list(self.objects.items()):
            if key.startswith(prefix) and (deep or "/" not in key[len(folder) + 1 if folder else 0:]):
                yield ObjectInfo(key, len(data), at)

    def list_partials(self) -> Iterator[ObjectInfo]:
        return iter(())

    def is_locked(self, key: str) -> bool:
        return False

    def read_bytes(self, key: str) -> bytes:
        return self.objects[key][0]

    def delete(self, key: str) -> None:
        if key in self.locked:
            raise ObjectLocked(f"{key} is locked until 2027", None)
        if key in self.broken:
            raise StorageError("access denied", None)
        self.objects.pop(key, None)
        self.deleted.append(key)


def put_backup(store: MemoryStorage, db: str, at: datetime, *, manifest: bool = True, size: int | None = None) -> str:
    artifact = artifact_name(db, at, ".sql.gz")
    data = b"x" * 100
    digest = hashlib.sha256(data).hexdigest()
    store.put(artifact, data, at)
    store.put(artifact + ".sha256", f"{digest}  {artifact}\n".encode(), at)
    if manifest:
        m = Manifest(id=backup_id(artifact), database=db, artifact=artifact, created_at=at, finished_at=at,
                     duration_seconds=1.0, tool_version="0.1.0", hostname="h",
                     compression={"algorithm": "gzip", "level": 6},  # type: ignore[arg-type]
                     raw_size_bytes=1, raw_sha256="0" * 64, size_bytes=size or len(data), sha256=digest)
        store.put(artifact + ".manifest.json", m.to_json(), at)
    return artifact


def test_scan_groups_objects_into_backups_legacy_and_leftovers() -> None:
    store = MemoryStorage()
    good = put_backup(store, "my db", days_ago(1))
    put_backup(store, "app", days_ago(2), manifest=False)
    store.put("sentinel_backup_20251103_030000.sql.gz", b"legacy", days_ago(0))
    store.put("sentinel_backup_crm_20250102_040506.sql.gz.enc", b"legacy", days_ago(0))
    store.put("sentinel_backup_old.sql.gz", b"legacy", days_ago(500))
    store.put("sentinel_backup_app_20260101T000000Z.sql.gz.sha256", b"orphan", days_ago(3))
    store.put("notes.txt", b"not ours", days_ago(900))
    store.put("sentinel_backup_readme.txt", b"not ours either", days_ago(900))
    leftover = artifact_name("app", days_ago(2), ".sql.gz")
    refs = {r.id: r for r in scan(store, legacy_database="app")}
    assert set(refs) == {backup_id(good), backup_id(leftover), "app_20260101T000000Z",
                         "sentinel_backup_20251103_030000.sql.gz", "sentinel_backup_crm_20250102_040506.sql.gz.enc",
                         "sentinel_backup_old.sql.gz"}
    g = next(r for r in refs.values() if r.good)
    assert (g.database, g.created_at, g.keys) == ("my db", days_ago(1), (
        good + ".manifest.json", good + ".sha256", good))
    inc = refs[backup_id(leftover)]
    assert inc.incomplete and inc.note == "artifact without manifest" and inc.database == "app"
    assert len(inc.keys) == 2
    legacy = refs["sentinel_backup_20251103_030000.sql.gz"]
    assert legacy.legacy and legacy.database == "app" and legacy.created_at == datetime(2025, 11, 3, 3, tzinfo=UTC)
    crm = refs["sentinel_backup_crm_20250102_040506.sql.gz.enc"]
    assert crm.database == "crm" and crm.created_at == datetime(2025, 1, 2, 4, 5, 6, tzinfo=UTC)
    undated = refs["sentinel_backup_old.sql.gz"]
    assert undated.legacy and undated.created_at == days_ago(500) and undated.database == "app"
    orphan = refs["app_20260101T000000Z"]
    assert orphan.incomplete and orphan.note == ".sha256 without artifact or manifest"
    assert orphan.created_at == days_ago(3)  # newest sign of life, not the name's stamp


def test_scan_marks_damaged_and_dataless_manifests() -> None:
    store = MemoryStorage()
    bad_json = put_backup(store, "app", days_ago(1))
    store.put(bad_json + ".manifest.json", b"{not json", days_ago(1))
    wrong_size = put_backup(store, "app", days_ago(2), size=5)
    no_data = put_backup(store, "app", days_ago(3))
    del store.objects[no_data]
    refs = {r.keys[-1]: r for r in scan(store)}
    assert not refs[bad_json].good and "not valid JSON" in refs[bad_json].note
    assert not refs[wrong_size].good and "manifest says 5" in refs[wrong_size].note
    dataless = refs[no_data + ".sha256"]
    assert dataless.incomplete and dataless.note == "manifest without its artifact"


def test_scan_legacy_name_variants() -> None:
    store = MemoryStorage()
    for name in ("sentinel_backup_2025-11-03_03-00-00.sql.gz", "sentinel_backup_my_db_20251103-030000.sql.gz",
                 "sentinel_backup_20251103.sql.gz", "sentinel_backup_app_20251399_030000.sql.gz"):
        store.put(name, b"x", days_ago(7))
    got = {r.id: (r.database, r.created_at) for r in scan(store)}
    assert got["sentinel_backup_2025-11-03_03-00-00.sql.gz"] == ("(unknown)", datetime(2025, 11, 3, 3, tzinfo=UTC))
    assert got["sentinel_backup_my_db_20251103-030000.sql.gz"] == ("my_db", datetime(2025, 11, 3, 3, tzinfo=UTC))
    assert got["sentinel_backup_20251103.sql.gz"] == ("(unknown)", datetime(2025, 11, 3, tzinfo=UTC))
    assert got["sentinel_backup_app_20251399_030000.sql.gz"] == ("app", days_ago(7))  # impossible date: mtime


# --- apply ---------------------------------------------------------------------------------
def _plan_removing_all_but_newest(store: MemoryStorage) -> RetentionPlan:
    return plan(scan(store), RetentionPolicy(days=1), NOW)


def test_apply_deletes_manifest_then_checksum_then_artifact() -> None:
    store = MemoryStorage()
    put_backup(store, "app", days_ago(0))
    old = put_backup(store, "app", days_ago(10))
    result = apply(store, _plan_removing_all_but_newest(store))
    assert store.deleted == [old + ".manifest.json", old + ".sha256", old]
    assert [r.removed for r in result.results] == [True] and result.ok and result.destination == "memory"


def test_apply_dry_run_deletes_nothing() -> None:
    store = MemoryStorage()
    put_backup(store, "app", days_ago(0))
    put_backup(store, "app", days_ago(10))
    result = apply(store, _plan_removing_all_but_newest(store), dry_run=True)
    assert store.deleted == [] and len(store.objects) == 6
    assert result.dry_run and result.results[0].notes == ["dry run: nothing deleted"]
    assert not result.results[0].removed


def test_apply_skips_locked_objects_with_a_note_not_an_error() -> None:
    store = MemoryStorage()
    put_backup(store, "app", days_ago(0))
    locked = put_backup(store, "app", days_ago(10))
    other = put_backup(store, "app", days_ago(11))
    store.locked.add(locked)
    result = apply(store, _plan_removing_all_but_newest(store))
    by_key = {r.backup.keys[-1]: r for r in result.results}
    assert by_key[locked].skipped == [locked] and by_key[locked].error is None
    assert "object lock" in by_key[locked].notes[0]
    assert by_key[locked].deleted == [locked + ".manifest.json", locked + ".sha256"]
    assert by_key[other].removed and result.ok and len(result.locked) == 1
    # What remains is an incomplete leftover: removed by a later run once the lock expires.
    store.locked.clear()
    later = plan(scan(store), RetentionPolicy(days=1), NOW + timedelta(days=2))
    assert [d.backup.keys for d in later.removed] == [(locked,)]


def test_apply_locked_manifest_deletes_nothing_of_that_backup() -> None:
    store = MemoryStorage()
    put_backup(store, "app", days_ago(0))
    old = put_backup(store, "app", days_ago(10))
    store.locked.add(old + ".manifest.json")
    result = apply(store, _plan_removing_all_but_newest(store))
    assert store.deleted == [] and result.results[0].skipped == list(result.results[0].backup.keys)


def test_apply_collects_errors_and_continues() -> None:
    store = MemoryStorage()
    put_backup(store, "app", days_ago(0))
    broken = put_backup(store, "app", days_ago(10))
    fine = put_backup(store, "app", days_ago(11))
    store.broken.add(broken + ".manifest.json")
    result = apply(store, _plan_removing_all_but_newest(store))
    assert not result.ok and len(result.errors) == 1
    assert "access denied" in (result.errors[0].error or "")
    assert fine not in store.objects and broken in store.objects


def test_apply_asks_a_backend_that_can_tell_about_locks_first() -> None:
    class LockAware(MemoryStorage):
        capabilities = Capabilities(object_lock=True)

        def is_locked(self, key: str) -> bool:
            return key in self.locked

    store = LockAware()
    put_backup(store, "app", days_ago(0))
    locked = put_backup(store, "app", days_ago(10))
    store.locked.add(locked)
    result = apply(store, _plan_removing_all_but_newest(store))
    (outcome,) = result.results
    assert store.deleted == [] and outcome.skipped == list(outcome.backup.keys) and outcome.error is None
    assert outcome.notes == [f"{locked} under an object lock; kept until the lock ends"]
    assert result.counts() == {"removed": 0, "locked": 1, "errors": 0}


def test_apply_counts() -> None:
    store = MemoryStorage()
    for n in range(4):
        put_backup(store, "app", days_ago(n * 10))
    assert apply(store, _plan_removing_all_but_newest(store), dry_run=True).counts() == {"would_remove": 3}
    assert apply(store, _plan_removing_all_but_newest(store)).counts() == {"removed": 3, "locked": 0, "errors": 0}


# --- physical groups and dependencies -------------------------------------------------------
SYS_A, SYS_B = "7000000000000000001", "7000000000000000002"


def physical(name: str, at: datetime, system_id: str = SYS_A, *, parent: str | None = None,
             kind: str = "good") -> BackupRef:
    return BackupRef(id=name, database="(cluster)", created_at=at,
                     keys=(f"basebackups/{system_id}/sentinel_{name}.tar.gz.manifest.json",
                           f"basebackups/{system_id}/sentinel_{name}.tar.gz"),
                     good=kind == "good", incomplete=kind == "incomplete", kind="physical", system_id=system_id,
                     depends_on=(parent,) if parent else ())


def test_physical_backups_are_grouped_per_cluster() -> None:
    refs = [physical("a1", days_ago(1)), physical("a2", days_ago(20)),
            physical("b1", days_ago(30), SYS_B), physical("b2", days_ago(40), SYS_B)]
    got = decisions(plan(refs, RetentionPolicy(days=7), NOW))
    assert got["a1"] == (True, "newest backup of cluster 7000000000000000001; within 7 days")
    assert got["a2"] == (False, "older than 7 days")
    assert got["b1"] == (True, "newest backup of cluster 7000000000000000002")  # its own group's newest
    assert got["b2"][0] is False


def test_a_backup_others_depend_on_is_kept_while_they_are() -> None:
    # full <- inc1 <- inc2 (a chain), and an unrelated older full: only inc2 is young enough
    refs = [physical("full", days_ago(30)), physical("inc1", days_ago(20), parent="full"),
            physical("inc2", days_ago(1), parent="inc1"), physical("old", days_ago(60))]
    the_plan = plan(refs, RetentionPolicy(days=7), NOW)
    got = decisions(the_plan)
    assert got["inc2"][0] and got["inc1"] == (True, "needed by inc2")
    assert got["full"] == (True, "needed by inc1")  # transitively: the chain keeps its root
    assert got["old"] == (False, "older than 7 days")


def test_dependencies_of_removed_backups_are_removed_dependents_first() -> None:
    refs = [physical("new", days_ago(1)), physical("full", days_ago(30)),
            physical("inc", days_ago(20), parent="full")]
    the_plan = plan(refs, RetentionPolicy(days=7), NOW)
    assert {d.backup.id for d in the_plan.removed} == {"full", "inc"}
    store = MemoryStorage()
    for r in refs:
        for key in r.keys:
            store.put(key, b"x", r.created_at)
    result = apply(store, the_plan)
    assert [r.backup.id for r in result.results] == ["inc", "full"]  # the dependent goes first
    assert store.deleted[:2] == list(refs[2].keys) and result.ok


def test_a_kept_dependency_keeps_its_other_reasons_and_a_damaged_one_is_never_removed() -> None:
    refs = [physical("full", days_ago(2)), physical("inc", days_ago(1), parent="full"),
            physical("broken", days_ago(50), kind="damaged"), physical("inc2", days_ago(1), parent="broken")]
    got = decisions(plan(refs, RetentionPolicy(days=7), NOW))
    assert got["full"] == (True, "within 7 days; needed by inc")
    assert got["broken"][0] and got["broken"][1].startswith("damaged")


def test_scan_finds_physical_backups_through_the_layout() -> None:
    store = MemoryStorage()
    at = days_ago(2)
    artifact = f"basebackups/{SYS_A}/sentinel_base_20261127T030000Z.tar.gz"
    m = Manifest.model_validate({
        "id": "base_20261127T030000Z", "kind": "physical", "format": "tar", "database": "(cluster)",
        "artifact": artifact, "created_at": at, "finished_at": at, "duration_seconds": 1, "tool_version": "t",
        "hostname": "h", "compression": {"algorithm": "gzip", "level": 6}, "raw_size_bytes": 1,
        "raw_sha256": "0" * 64, "size_bytes": 3, "sha256": "0" * 64,
        "physical": {"system_identifier": SYS_A, "timeline": 1, "start_lsn": "0/2000028", "stop_lsn": "0/2000138",
                     "start_wal": "000000010000000000000002", "stop_wal": "000000010000000000000002",
                     "wal_segment_size": 16777216, "parent_id": "base_20261120T030000Z"}})
    store.put(artifact, b"tar", at)
    store.put(artifact + ".manifest.json", m.to_json(), at)
    store.put(artifact + ".sha256", b"x", at)
    store.put(f"basebackups/{SYS_A}/sentinel_base_20261127T030000Z.backup_manifest.gz", b"pg", at)
    store.put(f"basebackups/{SYS_A}/sentinel_base_20261101T030000Z.tar.gz", b"leftover", days_ago(30))
    store.put(f"wal/{SYS_A}/00000001/000000010000000000000002.{'0' * 64}.gz", b"wal", at)
    refs = {r.id: r for r in scan(store)}
    assert set(refs) == {"base_20261127T030000Z", "base_20261101T030000Z"}
    good = refs["base_20261127T030000Z"]
    assert good.good and good.kind == "physical" and good.system_id == SYS_A
    assert good.depends_on == ("base_20261120T030000Z",) and good.group == ("physical", SYS_A)
    assert good.keys == (artifact + ".manifest.json", artifact + ".sha256",
                         f"basebackups/{SYS_A}/sentinel_base_20261127T030000Z.backup_manifest.gz", artifact)
    leftover = refs["base_20261101T030000Z"]
    assert leftover.incomplete and leftover.note == "base backup without manifest"
    assert all(not k.startswith("wal/") for r in refs.values() for k in r.keys)  # the archive is not a backup


def test_a_servers_scan_sees_only_its_own_folder(tmp_path: object) -> None:
    """Two servers' `postgres` backups in one folder: each scan (and so each prune) sees its own
    series only; the unnamed server's is the root, legacy files included."""
    from pathlib import Path

    from sentinel_backup.model.catalog import server_of
    from sentinel_backup.retention.scan import scan
    from sentinel_backup.storage.local import LocalStorage

    storage = LocalStorage(Path(str(tmp_path)))
    for server in ("db1", "db2", ""):
        for n in (1, 2):
            name = artifact_name("postgres", days_ago(n), ".sql.gz")
            key = f"servers/{server}/{name}" if server else name
            manifest = Manifest(id=backup_id(key), database="postgres", artifact=key, created_at=days_ago(n),
                                finished_at=days_ago(n), duration_seconds=1, tool_version="t", hostname="h",
                                server=server, compression={"algorithm": "gzip", "level": 6},  # type: ignore[arg-type]
                                raw_size_bytes=1, raw_sha256="0" * 64, size_bytes=4, sha256="0" * 64)
            storage.put_bytes(key, b"data")
            storage.put_bytes(manifest.manifest_key, manifest.to_json())
            assert server_of(manifest) == server
    storage.put_bytes("sentinel_backup_postgres_20251103_030000.sql.gz", b"legacy")
    (Path(str(tmp_path)) / "servers/db2/.sentinel_backup_postgres_20261101T000000Z.sql.gz.partial").write_bytes(b"x")
    db1 = scan(storage, server="db1")
    assert sorted(r.id for r in db1) == [f"db1/postgres_{days_ago(n):%Y%m%dT%H%M%SZ}" for n in (2, 1)]
    db2 = scan(storage, server="db2")
    assert len([r for r in db2 if r.good]) == 2 and [r.note for r in db2 if r.incomplete] == [
        "temporary file of an interrupted run"]
    unnamed = scan(storage)
    assert len([r for r in unnamed if r.good]) == 2 and len([r for r in unnamed if r.legacy]) == 1
    assert all("/" not in r.id for r in unnamed)
    the_plan = plan(db1, RetentionPolicy(keep_last=1), NOW)
    assert [d.backup.id for d in the_plan.removed] == [f"db1/postgres_{days_ago(2):%Y%m%dT%H%M%SZ}"]
    assert all(k.startswith("servers/db1/") for d in the_plan.removed for k in d.backup.keys)
