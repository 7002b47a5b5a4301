"""Physical base backups and restores: the tool against pgBackRest, side by side in one run.

Not a test: it prints a Markdown table and PASS/MISS per target, and writes JSON.

    .venv/bin/python bench/physical.py                    # full: scale 70 (>= 1 GB cluster), 3 rounds
    .venv/bin/python bench/physical.py --scale 4 --repeat 2   # smoke, a few minutes

Two throwaway PostgreSQL 15 clusters (``wal_level=replica``, ``archive_mode=on``): the big
one (``bench/dataset.py`` at ``--scale``) and a small one (``scale // 5``) for the memory
check. The big cluster archives its WAL with ``pgbackrest archive-push``, as a pgBackRest
site does, so pgBackRest runs with its defaults (``archive-check=y``) plus
``archive-copy=y``: its backup then holds the WAL needed for consistency, like the tool's
``pg_basebackup -X fetch`` tar. Both: a fast checkpoint, zstd level 3, no encryption;
pgBackRest with ``process-max=2``, the tool with its defaults (``COMPRESSION_THREADS=1``,
``VERIFY_AFTER_BACKUP=integrity``). Rounds are interleaved (rotated start) and ratios are
taken pair by pair within a round, then the median.

Restores go into an empty folder (kept until the run ends: see ``recovered``); then the
bench starts each restored copy the same way (``pg_ctl -w start`` on a private socket, then
until ``pg_is_in_recovery()`` is false) and reports that time separately. pgBackRest restores with ``--type=immediate
--target-action=promote --archive-mode=off``; the tool with ``--tool-command /bin/false``
(the WAL it needs is in the tar), so both end at the end of the backup.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from dataset import build  # noqa: E402
from procwatch import Sample, Target, cpu_model, measure, median, paired, say, wall  # noqa: E402
from sentinel_backup.demo.cluster import TempCluster, free_port  # noqa: E402

DEFAULT_SCALE = 70
SMALL_DIVISOR = 5
PG_BIN = Path(os.environ.get("SENTINEL_PG_BIN", "/usr/lib/postgresql/15/bin"))
STANZA = "bench"
MB = 1024 * 1024
SETTINGS = {"wal_level": "replica", "archive_mode": "on", "archive_command": "'/bin/true'", "max_wal_senders": "5",
            "max_wal_size": "8GB", "checkpoint_timeout": "30min", "maintenance_work_mem": "256MB",
            "autovacuum": "off", "max_parallel_maintenance_workers": "1"}
BACKUPS = ("tool", "pgbackrest", "tool_small", "tool_workers2", "tool_pgzstd", "before")
RESTORES = ("tool_restore", "pgbackrest_restore", "before_restore")  # before_restore only with --before-restore
TITLES = {
    "tool": "sentinel-backup backup --physical (zstd)",
    "pgbackrest": "pgbackrest backup --type=full (zst, process-max=2)",
    "tool_small": "sentinel-backup backup --physical, small cluster",
    "tool_workers2": "sentinel-backup backup --physical, COMPRESSION_THREADS=2",
    "tool_pgzstd": "sentinel-backup backup --physical, PHYSICAL_ZSTD_BY_PG_BASEBACKUP=true",
    "before": "the tool of --before-src: backup --physical",
    "tool_restore": "sentinel-backup restore --physical latest",
    "pgbackrest_restore": "pgbackrest restore (process-max=2)",
    "before_restore": "the tool of --before-src: restore --physical",
}


def run_as() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def give(path: Path, mode: int = 0o700) -> Path:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, mode)
    return path


def stored_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def ensure_pgbackrest() -> str | None:
    found = shutil.which("pgbackrest")
    if found:
        return found
    if os.geteuid() != 0:
        print("# pgBackRest anchor skipped: pgbackrest is not installed and only root may apt-get install it",
              file=sys.stderr)
        return None
    subprocess.run(["apt-get", "install", "-y", "pgbackrest"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                   stdout=subprocess.DEVNULL, check=False)
    found = shutil.which("pgbackrest")
    if not found:
        print("# pgBackRest anchor skipped: apt-get install pgbackrest failed", file=sys.stderr)
    return found


@dataclass
class Bench:
    work: Path
    log: Path
    big: TempCluster
    small: TempCluster
    pgbackrest: str | None
    before_src: str = ""
    counter: int = 0
    keep: Path | None = None  # the tool's first big backup (BACKUP_DIR), restored by the restore modes

    @property
    def conf(self) -> Path:
        return self.work / "pgbackrest" / "pgbackrest.conf"

    @property
    def repo(self) -> Path:
        return self.work / "pgbackrest" / "repo"

    def fresh(self, label: str, *, postgres: bool = False) -> Path:
        self.counter += 1
        path = self.work / "out" / f"{self.counter:03d}-{label}"
        path.mkdir(parents=True)
        return give(path, 0o755) if postgres else path

    def tool_env(self, cluster: TempCluster, src: str, **extra: str) -> dict[str, str]:
        env = {"PATH": f"{PG_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(self.work),
               "LANG": "C.UTF-8", "TMPDIR": str(self.work / "tmp"), "PYTHONPATH": src,
               "SENTINEL_ENV_FILE": str(self.work / "no.env"), "POSTGRES_DB": "postgres", "LOG_LEVEL": "INFO",
               "BACKUP_MODE": "physical", "COMPRESSION": "zstd", **cluster.env(), **extra}
        return env

    def pgbackrest_argv(self, *args: str) -> list[str]:
        assert self.pgbackrest is not None
        return [*run_as(), self.pgbackrest, f"--config={self.conf}", f"--stanza={STANZA}", *args]

    def setup_pgbackrest(self) -> None:
        (self.work / "pgbackrest").mkdir()
        folder = give(self.work / "pgbackrest", 0o755)
        for sub in ("repo", "lock", "log", "spool"):
            (folder / sub).mkdir()
            give(folder / sub)
        self.conf.write_text("\n".join([
            "[global]", f"repo1-path={self.repo}", "repo1-retention-full=9999", "compress-type=zst",
            "compress-level=3", "process-max=2", "start-fast=y", "archive-check=y", "archive-copy=y",
            f"lock-path={folder / 'lock'}", f"log-path={folder / 'log'}", f"spool-path={folder / 'spool'}",
            "log-level-console=warn", "log-level-file=off",
            f"[{STANZA}]", f"pg1-path={self.big.data}", f"pg1-port={self.big.port}",
            f"pg1-socket-path={self.big.socket_dir}", "pg1-user=postgres",
            ""]))
        give(self.conf, 0o644)
        subprocess.run(self.pgbackrest_argv("stanza-create"), check=True, capture_output=True)
        command = f"{self.pgbackrest} --config={self.conf} --stanza={STANZA} archive-push %p"
        self.big.psql(f"ALTER SYSTEM SET archive_command = '{command}'; SELECT pg_reload_conf()")
        self.big.psql("SELECT pg_switch_wal()")
        subprocess.run(self.pgbackrest_argv("check"), check=True, capture_output=True)


# --- the modes ---------------------------------------------------------------------------

def tool_backup(b: Bench, mode: str, rnd: int) -> Sample:
    cluster = b.small if mode == "tool_small" else b.big
    src = b.before_src if mode == "before" else str(ROOT / "src")
    out = b.fresh(mode)
    env = b.tool_env(cluster, src, BACKUP_DIR=str(out))
    if mode == "tool_workers2":
        env["COMPRESSION_THREADS"] = "2"
    if mode == "tool_pgzstd":  # opt-in: pg_basebackup compresses, the tool decodes once
        env["PHYSICAL_ZSTD_BY_PG_BASEBACKUP"] = "true"
    sample = measure(mode, rnd, [sys.executable, "-m", "sentinel_backup", "backup", "--physical"], env=env,
                     cwd=b.work, log=b.log)
    sample.stored_bytes = stored_bytes(out)
    if mode == "tool" and b.keep is None and sample.ok:
        b.keep = out
    else:
        shutil.rmtree(out, ignore_errors=True)
    return sample


def pgbackrest_backup(b: Bench, mode: str, rnd: int) -> Sample:
    folder = b.repo / "backup" / STANZA
    before = {p.name for p in folder.iterdir()} if folder.exists() else set()
    sample = measure(mode, rnd, b.pgbackrest_argv("--type=full", "backup"), env=dict(os.environ), cwd=b.work,
                     log=b.log)
    made = [p for p in folder.iterdir() if p.is_dir() and p.name not in before and not p.is_symlink()]
    sample.stored_bytes = sum(stored_bytes(p) for p in made)
    sample.extra["labels"] = [p.name for p in made]
    return sample


def tool_restore(b: Bench, mode: str, rnd: int) -> Sample:
    assert b.keep is not None
    src = b.before_src if mode == "before_restore" else str(ROOT / "src")
    target = b.fresh(mode, postgres=True) / "pgdata"
    argv = [sys.executable, "-m", "sentinel_backup", "restore", "--physical", "latest", "--pgdata", str(target),
            "--tool-command", "/bin/false"]
    sample = measure(mode, rnd, argv, env=b.tool_env(b.big, src, BACKUP_DIR=str(b.keep)), cwd=b.work, log=b.log)
    return recovered(b, sample, target)


def pgbackrest_restore(b: Bench, mode: str, rnd: int) -> Sample:
    target = b.fresh(mode, postgres=True) / "pgdata"
    target.mkdir()
    give(target)  # pgbackrest wants the folder to exist
    argv = b.pgbackrest_argv(f"--pg1-path={target}", "--type=immediate", "--target-action=promote",
                             "--archive-mode=off", "restore")
    sample = measure(mode, rnd, argv, env=dict(os.environ), cwd=b.work, log=b.log)
    return recovered(b, sample, target)


def recovered(b: Bench, sample: Sample, pgdata: Path) -> Sample:
    """Start the restored copy on a private socket and time it until it left recovery (same for both)."""
    if sample.ok:
        socket_dir = give(Path(tempfile.mkdtemp(prefix="sock-", dir=b.work)), 0o755)
        port = free_port()
        options = f"-p {port} -c listen_addresses='' -c unix_socket_directories='{socket_dir}' -c archive_mode=off"
        t0 = time.perf_counter()
        started = subprocess.run([*run_as(), str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-l",
                                  str(pgdata.parent / "server.log"), "-o", options, "-w", "-t", "3600", "start"],
                                 capture_output=True, text=True, check=False, cwd=pgdata.parent)
        try:
            while started.returncode == 0:
                state = subprocess.run([str(PG_BIN / "psql"), "-X", "-A", "-t", "-h", str(socket_dir), "-p", str(port),
                                        "-U", "postgres", "-d", "postgres", "-c", "SELECT pg_is_in_recovery()"],
                                       capture_output=True, text=True, check=False)
                if state.stdout.strip() == "f":
                    sample.extra["recovery_s"] = time.perf_counter() - t0
                    break
                time.sleep(0.1)
            else:
                sample.error = f"the restored copy did not start: {started.stderr.strip()[-300:]}"
        finally:
            subprocess.run([*run_as(), str(PG_BIN / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
                           capture_output=True, check=False)
            shutil.rmtree(socket_dir, ignore_errors=True)
    # The restored copy stays until the end of the run: removing 1 GB of files right before the next restore makes
    # ext4 (without a journal, as here) scan past the just-freed inodes on every file it creates, which slowed
    # whichever restore came next by seconds.
    return sample


RUNNERS: dict[str, Callable[[Bench, str, int], Sample]] = {
    "tool": tool_backup, "tool_small": tool_backup, "tool_workers2": tool_backup, "tool_pgzstd": tool_backup,
    "before": tool_backup,
    "pgbackrest": pgbackrest_backup,
    "tool_restore": tool_restore, "before_restore": tool_restore, "pgbackrest_restore": pgbackrest_restore,
}


# --- numbers -------------------------------------------------------------------------------

def until_ready(s: Sample) -> float | None:
    return s.wall + s.extra["recovery_s"] if "recovery_s" in s.extra else None


def stored(s: Sample) -> float | None:
    return float(s.stored_bytes) if s.stored_bytes else None


def summarize(samples: dict[str, list[Sample]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for mode, runs in samples.items():
        ok = [s for s in runs if s.ok]
        recovery = [s.extra["recovery_s"] for s in ok if "recovery_s" in s.extra]
        out[mode] = {
            "runs": len(runs), "failed": len(runs) - len(ok), "wall_s": median([s.wall for s in ok]),
            "cpu_s": median([s.cpu for s in ok]), "tree_rss_mb": max((s.tree_rss_peak_kb / 1024 for s in ok),
                                                                     default=None),
            "stored_mb": median([s.stored_bytes / MB for s in ok if s.stored_bytes]),
            "recovery_s": median(recovery),
        }
    return out


def targets(samples: dict[str, list[Sample]], summary: dict[str, dict[str, Any]]) -> list[Target]:
    physical = ("tool", "tool_small", "tool_workers2", "tool_pgzstd", "tool_restore")
    rss = [summary[m]["tree_rss_mb"] for m in physical if summary.get(m, {}).get("tree_rss_mb") is not None]
    big, small = summary.get("tool", {}).get("tree_rss_mb"), summary.get("tool_small", {}).get("tree_rss_mb")
    goals = [
        Target("backup wall, tool / pgBackRest", "<= 1.0x", paired(samples, "tool", "pgbackrest", wall), 1.0),
        Target("stored size, tool / pgBackRest", "<= 1.0x", paired(samples, "tool", "pgbackrest", stored), 1.0),
        Target("restore wall, tool / pgBackRest", "<= 1.1x",
               paired(samples, "tool_restore", "pgbackrest_restore", wall), 1.1),
        Target("peak RSS of the tool's tree (every physical mode)", "<= 150 MB", max(rss) if rss else None, 150.0),
        Target("backup wall, tool with COMPRESSION_THREADS=2 / pgBackRest", "<= 1.0x",
               paired(samples, "tool_workers2", "pgbackrest", wall), 1.0),
        Target("backup wall, tool with PHYSICAL_ZSTD_BY_PG_BASEBACKUP=true / pgBackRest", "<= 1.0x",
               paired(samples, "tool_pgzstd", "pgbackrest", wall), 1.0),
        Target("peak RSS, big / small cluster (flat with size)", "<= 1.2x",
               big / small if big and small else None, 1.2),
    ]
    if "before" in samples:
        goals.append(Target("backup wall, this tree / --before-src", "<= 1.0x",
                            paired(samples, "tool", "before", wall), 1.0))
        goals.append(Target("restore wall, this tree / --before-src", "<= 1.0x",
                            paired(samples, "tool_restore", "before_restore", wall), 1.0))
    return goals


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(summary: dict[str, dict[str, Any]], goals: list[Target], samples: dict[str, list[Sample]],
             meta: dict[str, Any]) -> str:
    lines = [f"PostgreSQL {meta['postgres']}, cluster {meta['cluster_mb']:.0f} MB (small: {meta['small_mb']:.0f} MB),"
             f" scale {meta['scale']}, {meta['repeat']} interleaved rounds, {meta['cpus']} CPUs ({meta['cpu_model']}),"
             f" load average {meta['load_before']} before, {meta['load_after']} after, {meta['date']}", "",
             "| mode | wall s | CPU s (tree) | peak RSS tree MB | stored MB | start until promoted s"
             " | wall x pgBackRest |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    anchors = {"tool": "pgbackrest", "before": "pgbackrest", "tool_workers2": "pgbackrest", "tool_pgzstd": "pgbackrest",
               "tool_restore": "pgbackrest_restore", "before_restore": "pgbackrest_restore"}
    for mode, row in summary.items():
        ratio = paired(samples, mode, anchors[mode], wall) if mode in anchors else None
        lines.append(f"| {TITLES[mode]} | {fmt(row['wall_s'])} | {fmt(row['cpu_s'])} | {fmt(row['tree_rss_mb'], '.0f')}"
                     f" | {fmt(row['stored_mb'], '.0f')} | {fmt(row['recovery_s'])} | {fmt(ratio, '.2f')} |")
    total = paired(samples, "tool_restore", "pgbackrest_restore", until_ready)
    lines += ["", f"restore + start until promoted, tool / pgBackRest: {fmt(total, '.2f')}x", "",
              "| target | goal | value | verdict |", "|---|---|---:|---|"]
    lines += [f"| {g.name} | {g.goal} | {fmt(g.value, '.2f')} | {g.verdict} |" for g in goals]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------

@contextlib.contextmanager
def bench_environment(args: argparse.Namespace) -> Iterator[Bench]:
    base = Path(args.workdir) if args.workdir else None
    work = Path(tempfile.mkdtemp(prefix="sentinel-physbench-", dir=base))
    os.chmod(work, 0o755)
    (work / "tmp").mkdir()
    (work / "out").mkdir(mode=0o755)
    big = TempCluster(bin_dir=PG_BIN, base=base, settings=dict(SETTINGS))
    small = TempCluster(bin_dir=PG_BIN, base=base, settings=dict(SETTINGS))
    b = Bench(work, work / "bench.log", big, small, None,
              before_src=str(Path(args.before_src).resolve()) if args.before_src else "")
    try:
        big.start()
        small.start()
        yield b
    finally:
        big.stop()
        small.stop()
        if args.keep_log:
            shutil.copy(b.log, args.keep_log)
        shutil.rmtree(work, ignore_errors=True)


def cluster_mb(cluster: TempCluster) -> float:
    return int(cluster.psql("SELECT sum(pg_database_size(oid)) FROM pg_database")) / MB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE, help=f"bench/dataset.py scale (default"
                        f" {DEFAULT_SCALE}: >= 1 GB); the small cluster is scale // {SMALL_DIVISOR}")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--json", help="write samples, summary and verdicts to this JSON file")
    parser.add_argument("--workdir", help="parent folder of the clusters and repositories (default: TMPDIR)")
    parser.add_argument("--keep-log", help="copy the commands' log here before cleaning up")
    parser.add_argument("--before-src", help="the src/ folder of an older tree (git archive main src | tar -x): adds"
                        " its backup and restore as modes of the same rounds, for before/after in one run")
    parser.add_argument("--before-restore", action="store_true", help="with --before-src: its restore too")
    args = parser.parse_args(argv)
    small_scale = max(1, args.scale // SMALL_DIVISOR)
    started = time.monotonic()
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(), "cpu_model": cpu_model(),
        "kernel": platform.release(), "python": platform.python_version(), "scale": args.scale,
        "small_scale": small_scale, "repeat": args.repeat, "load_before": _load(),
    }
    samples: dict[str, list[Sample]] = {}
    with bench_environment(args) as b:
        b.pgbackrest = ensure_pgbackrest()
        meta["pgbackrest"] = subprocess.run([b.pgbackrest, "version"], capture_output=True, text=True,
                                            check=False).stdout.strip() if b.pgbackrest else "skipped"
        meta["postgres"] = b.big.psql("SHOW server_version")
        env = {"PATH": f"{PG_BIN}:/usr/bin:/bin", "PGPASSWORD": b.big.password, "LANG": "C.UTF-8"}
        for cluster, scale in ((b.big, args.scale), (b.small, small_scale)):
            say(f"building scale {scale} on port {cluster.port} ...", started)
            conn = ["-h", str(cluster.socket_dir), "-p", str(cluster.port), "-U", cluster.user]
            build([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *conn], [str(PG_BIN / "pgbench"), *conn],
                  env, "bench", scale, b.log)
            cluster.psql("CHECKPOINT")
        meta["cluster_mb"], meta["small_mb"] = cluster_mb(b.big), cluster_mb(b.small)
        if b.pgbackrest:
            b.setup_pgbackrest()
        backups = [m for m in BACKUPS if (m != "pgbackrest" or b.pgbackrest) and (m != "before" or b.before_src)]
        restores = [m for m in RESTORES if (m != "pgbackrest_restore" or b.pgbackrest)
                    and (m != "before_restore" or (b.before_src and args.before_restore))]
        say(f"cluster {meta['cluster_mb']:.0f} MB, small {meta['small_mb']:.0f} MB; modes {backups + restores}",
             started)
        for group in (backups, restores):
            for rnd in range(args.repeat):
                shift = rnd % len(group)
                for mode in group[shift:] + group[:shift]:
                    if mode in RESTORES and mode != "pgbackrest_restore" and b.keep is None:
                        continue
                    for cluster in (b.big, b.small):
                        cluster.psql("CHECKPOINT")
                    sample = RUNNERS[mode](b, mode, rnd)
                    samples.setdefault(mode, []).append(sample)
                    status = "ok" if sample.ok else f"FAILED: {sample.error}"
                    recovery = f", start {sample.extra['recovery_s']:.1f} s" if "recovery_s" in sample.extra else ""
                    say(f"round {rnd + 1}/{args.repeat} {mode}: {sample.wall:.1f} s, cpu {sample.cpu:.1f} s, tree "
                         f"{sample.tree_rss_peak_kb / 1024:.0f} MB{recovery}, {status}", started)
    meta["load_after"] = _load()
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    summary = summarize(samples)
    goals = targets(samples, summary)
    print(markdown(summary, goals, samples, meta))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "meta": meta, "summary": summary,
            "targets": [{"name": g.name, "goal": g.goal, "value": g.value, "verdict": g.verdict} for g in goals],
            "samples": {k: [s.to_json() for s in v] for k, v in samples.items()},
        }, indent=2))
    return 1 if any(not s.ok for v in samples.values() for s in v) else 0


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
