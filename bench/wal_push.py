"""wal-push per 16 MB segment: synchronous and asynchronous, against `pgbackrest archive-push`.

Real WAL: a throwaway PostgreSQL 15 cluster (16 MB segments) runs `pgbench -i` and a short
`pgbench` load; the closed segments are copied out of pg_wal. Each mode then archives every
copy once per round into a fresh local repository (zstd), one call per segment as
PostgreSQL's archive_command does; the rounds are interleaved and the median wall time per
call is reported, with the ratio to pgbackrest's (when `pgbackrest` is installed). For the
asynchronous modes the call time is what PostgreSQL waits for; the time until the spool is
empty is reported too (per segment), since that is what decides whether archiving keeps up.
Keep-up mode (``--keep-up``): does archiving keep pace with a server writing as fast as it
can? A fresh PostgreSQL 15 cluster (16 MB segments) per mode, `pgbench -i -s 10` with
archiving off, then archive_command set to the mode (the tool synchronous or asynchronous,
run as the postgres OS user from a world-readable copy as tests/plugins/archive.py does, or
`pgbackrest archive-push` sync/async) and `pgbench -c 2 -j 2 -T SECONDS`. Every second the
.ready files in pg_wal/archive_status are counted (segments PostgreSQL still waits to hand
over), and for the tool's asynchronous mode the files waiting in its spool. Reported: the
maximum and final backlog, the time to drain after pgbench, tps, segments archived, failures.

Not a test: nothing here asserts a timing.

    .venv/bin/python bench/wal_push.py [--segments 12] [--repeat 3] [--before /tmp/before/src] [--json FILE]
    .venv/bin/python bench/wal_push.py --keep-up [--seconds 60] [--writer tpcb|bulk] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sentinel_backup.demo.cluster import TempCluster

PYTHON = sys.executable


def make_segments(cluster: TempCluster, work: Path, count: int) -> list[Path]:
    bindir = cluster.bin_dir
    env = {**os.environ, "PGPASSWORD": cluster.password}
    conn = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", cluster.user]
    subprocess.run([str(bindir / "pgbench"), "-i", "-s", "10", "-q", *conn, "postgres"], env=env, check=True,
                   capture_output=True)
    while True:
        current = cluster.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        closed = sorted(p for p in (cluster.data / "pg_wal").iterdir() if len(p.name) == 24 and p.name < current)
        if len(closed) >= count:
            break
        subprocess.run([str(bindir / "pgbench"), "-T", "5", "-c", "2", *conn, "postgres"], env=env, check=True,
                       capture_output=True)
    # a copy of the data directory's identity (pgbackrest reads pg_control and wants the segments in
    # pg_wal/ with their archive_status/*.ready, as PostgreSQL leaves them)
    data = work / "pgdata"
    (data / "global").mkdir(parents=True)
    (data / "pg_wal" / "archive_status").mkdir(parents=True)
    shutil.copy2(cluster.data / "global" / "pg_control", data / "global" / "pg_control")
    shutil.copy2(cluster.data / "PG_VERSION", data / "PG_VERSION")
    for path in closed[-count:]:
        shutil.copy2(path, data / "pg_wal" / path.name)
        (data / "pg_wal" / "archive_status" / f"{path.name}.ready").touch()
    return sorted(p for p in (data / "pg_wal").iterdir() if p.is_file())


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr[-2000:]}")
    return elapsed


def tool_round(segments: list[Path], work: Path, *, asynchronous: bool,
               src: str | None = None) -> tuple[list[float], float]:
    repo = Path(tempfile.mkdtemp(dir=work))
    values = {"POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres", "BACKUP_DIR": str(repo / "backups"),
              "COMPRESSION": "zstd", "LOG_LEVEL": "WARN"}
    if asynchronous:
        values |= {"WAL_PUSH_ASYNC": "true", "WAL_SPOOL_DIR": str(repo / "spool")}
    env_file = repo / "bench.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "S3_", "MINIO_", "WAL_"))}
    if src is not None:  # another tree of the tool (--before)
        env["PYTHONPATH"] = src
    argv = [PYTHON, "-m", "sentinel_backup", "--env-file", str(env_file), "wal-push"]
    start = time.perf_counter()
    calls = [timed([*argv, str(segment)], env, segments[0].parent.parent) for segment in segments]
    if asynchronous:
        while any((repo / "spool" / "push").rglob("0*")):
            time.sleep(0.05)
    drained = time.perf_counter() - start
    shutil.rmtree(repo, ignore_errors=True)
    return calls, drained / len(segments)


def pgbackrest_round(segments: list[Path], work: Path, *, asynchronous: bool) -> tuple[list[float], float]:
    repo = Path(tempfile.mkdtemp(dir=work))
    conf = repo / "pgbackrest.conf"
    lines = ["[global]", f"repo1-path={repo / 'repo'}", "compress-type=zst", "process-max=2",
             f"lock-path={repo / 'lock'}", f"log-path={repo / 'log'}", "log-level-console=warn",
             f"spool-path={repo / 'spool'}", f"archive-async={'y' if asynchronous else 'n'}",
             "[bench]", f"pg1-path={segments[0].parent.parent}"]
    conf.write_text("\n".join(lines) + "\n")
    base = ["pgbackrest", f"--config={conf}", "--stanza=bench"]
    subprocess.run([*base, "--no-online", "stanza-create"], check=True, capture_output=True)
    start = time.perf_counter()
    calls = [timed([*base, "archive-push", str(segment)], dict(os.environ), segments[0].parent.parent)
             for segment in segments]
    if asynchronous:  # the async process reports each segment in spool/archive/bench/out
        out = repo / "spool" / "archive" / "bench" / "out"
        while len(list(out.glob("*.ok"))) < len(segments):
            time.sleep(0.05)
    drained = time.perf_counter() - start
    shutil.rmtree(repo, ignore_errors=True)
    return calls, drained / len(segments)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep-up", action="store_true", help="pgbench against archive_command (see above)")
    parser.add_argument("--seconds", type=int, default=60, help="pgbench duration in keep-up mode")
    parser.add_argument("--modes", default="tool_sync,tool_async,pgbackrest_sync,pgbackrest_async")
    parser.add_argument("--writer", choices=["tpcb", "bulk"], default="tpcb", help="keep-up mode: pgbench's load")
    parser.add_argument("--before", help="also run the tool from this src folder (interleaved, modes *_before)")
    parser.add_argument("--json", help="write the samples here")
    args = parser.parse_args(argv)
    if args.keep_up:
        from wal_keepup import keep_up  # beside this script (bench/ is on sys.path when it runs)

        return keep_up(args.seconds, args.modes.split(","), args.json, args.writer)
    work = Path(tempfile.mkdtemp(prefix="sentinel-walbench-"))
    cluster = TempCluster(settings={"wal_level": "replica", "max_wal_size": "4GB"})
    cluster.start()
    try:
        segments = make_segments(cluster, work, args.segments)
        cluster.stop()  # the copies are all that is needed now; the CPU is for the runs
        modes = {"tool_sync": lambda: tool_round(segments, work, asynchronous=False),
                 "tool_async": lambda: tool_round(segments, work, asynchronous=True)}
        if args.before:
            before = str(Path(args.before).resolve())
            modes["tool_sync_before"] = lambda: tool_round(segments, work, asynchronous=False, src=before)
            modes["tool_async_before"] = lambda: tool_round(segments, work, asynchronous=True, src=before)
        if shutil.which("pgbackrest"):
            modes["pgbackrest_sync"] = lambda: pgbackrest_round(segments, work, asynchronous=False)
            modes["pgbackrest_async"] = lambda: pgbackrest_round(segments, work, asynchronous=True)
        samples: dict[str, dict[str, list[float]]] = {m: {"call": [], "drained": []} for m in modes}
        for round_no in range(args.repeat):
            order = list(modes)[round_no % len(modes):] + list(modes)[:round_no % len(modes)]
            for mode in order:
                calls, drained = modes[mode]()
                samples[mode]["call"] += calls
                samples[mode]["drained"].append(drained)
        size = segments[0].stat().st_size
        print(f"{len(segments)} segments of {size // 1048576} MB, {args.repeat} rounds (median per segment)\n")
        print("| mode | call (what PostgreSQL waits) | until stored (per segment) | call x pgbackrest |")
        print("|---|---:|---:|---:|")
        for mode, got in samples.items():
            call, drained = statistics.median(got["call"]), statistics.median(got["drained"])
            anchor = samples.get("pgbackrest_" + mode.split("_")[1])  # tool_sync[_before] -> pgbackrest_sync
            ratio = f"{call / statistics.median(anchor['call']):.2f}" if anchor and mode.startswith("tool") else ""
            print(f"| {mode} | {call * 1000:.0f} ms | {drained * 1000:.0f} ms | {ratio} |")
        if args.json:
            Path(args.json).write_text(json.dumps(samples, indent=2))
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
