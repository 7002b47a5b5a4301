"""Keep-up mode of bench/wal_push.py: pgbench writing as fast as it can against archive_command.

Per mode a fresh PostgreSQL 15 cluster (16 MB segments, full_page_writes on, a checkpoint every
30 s as a production server writes WAL): `pgbench -i -s 10` with archiving
off (archive_command = /bin/true), then archive_command switched to the mode and
`pgbench -c 2 -j 2 -T SECONDS` (``tpcb``: pgbench's own transactions; ``bulk``: each
transaction inserts 2000 rows, ~150 kB of WAL, to push archiving harder). A sampler counts
every second the .ready files in pg_wal/archive_status (what PostgreSQL still waits to hand over) and, for the tool's
asynchronous mode, the files waiting in its spool (acknowledged, not yet on the
destination). After pgbench it waits for both to drain (at most DRAIN_LIMIT seconds).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sentinel_backup.demo.cluster import TempCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.plugins.archive import WalTool, give_to_postgres  # a world-readable copy of the tool

DRAIN_LIMIT = 300.0  # a safety net: a mode that cannot drain in 5 minutes is reported as not keeping up
SCALE = 10


def _as_postgres(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*run_as, *argv], capture_output=True, text=True, check=True, **kwargs)


def _archive_command(mode: str, tool: WalTool, folder: Path, cluster: TempCluster) -> str:
    if mode.startswith("tool"):
        values = {"POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres", "BACKUP_DIR": str(folder / "backups"),
                  "COMPRESSION": "zstd", "LOG_LEVEL": "WARN"}
        if mode == "tool_async":
            values |= {"WAL_PUSH_ASYNC": "true", "WAL_SPOOL_DIR": str(folder / "spool")}
        env_file = tool.env_file(folder, values)
        return tool.shell_command(env_file) + " wal-push %p"
    conf = folder / "pgbackrest.conf"
    lines = ["[global]", f"repo1-path={folder / 'repo'}", "compress-type=zst", "process-max=2",
             f"lock-path={folder / 'lock'}", f"log-path={folder / 'log'}", "log-level-console=warn",
             "log-level-file=off", f"spool-path={folder / 'pgbr-spool'}",
             f"archive-async={'y' if mode == 'pgbackrest_async' else 'n'}",
             "[bench]", f"pg1-path={cluster.data}", f"pg1-port={cluster.port}", f"pg1-socket-path={cluster.socket_dir}"]
    conf.write_text("\n".join(lines) + "\n")
    give_to_postgres(conf, 0o600)
    _as_postgres(["pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create"])
    return f"pgbackrest --config={conf} --stanza=bench archive-push %p"


class Sampler(threading.Thread):
    """Once a second: (seconds since start, .ready files, files in the tool's spool)."""

    def __init__(self, status: Path, spool: Path) -> None:
        super().__init__(daemon=True)
        self.status, self.spool = status, spool
        self.samples: list[tuple[float, int, int]] = []
        self.stop = threading.Event()
        self.start_time = time.monotonic()

    def count(self) -> tuple[int, int]:
        ready = sum(1 for p in self.status.iterdir() if p.name.endswith(".ready"))
        spooled = sum(1 for p in self.spool.rglob("0*") if p.is_file()) if self.spool.is_dir() else 0
        return ready, spooled

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.samples.append((time.monotonic() - self.start_time, *self.count()))


BULK = "INSERT INTO sentinel_bulk SELECT g, md5(g::text) FROM generate_series(1, 2000) g;\n"


def keep_up_round(mode: str, seconds: int, tool: WalTool, writer: str = "tpcb") -> dict[str, Any]:
    folder = tool.folder(f"keepup-{mode}")
    cluster = TempCluster(settings={"wal_level": "replica", "archive_mode": "on", "archive_command": "'/bin/true'",
                                    "max_wal_size": "4GB", "full_page_writes": "on", "checkpoint_timeout": "30s"})
    cluster.start()
    try:
        bindir = cluster.bin_dir
        env = {**os.environ, "PGPASSWORD": cluster.password}
        conn = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", cluster.user]
        subprocess.run([str(bindir / "pgbench"), "-i", "-s", str(SCALE), "-q", *conn, "postgres"], env=env,
                       check=True, capture_output=True)
        command = _archive_command(mode, tool, folder, cluster)
        cluster.psql("ALTER SYSTEM SET archive_command = " + "'" + command.replace("'", "''") + "'")
        cluster.psql("SELECT pg_reload_conf()")
        cluster.psql("SELECT pg_switch_wal()")
        time.sleep(2.0)  # the setup's last segments go through /bin/true or the new command
        before = cluster.psql("SELECT archived_count || '|' || failed_count FROM pg_stat_archiver").split("|")
        start_lsn = cluster.psql("SELECT pg_current_wal_lsn()")
        sampler = Sampler(cluster.data / "pg_wal" / "archive_status", folder / "spool" / "push")
        sampler.start()
        load = os.getloadavg()[0]
        script: list[str] = []
        if writer == "bulk":  # ~150 kB of WAL per transaction: a bulk load, not OLTP
            cluster.psql("CREATE TABLE sentinel_bulk (i int, t text)")
            (folder / "bulk.sql").write_text(BULK)
            script = ["-f", str(folder / "bulk.sql")]
        bench = subprocess.run([str(bindir / "pgbench"), "-c", "2", "-j", "2", "-T", str(seconds), "-n", *script,
                                *conn, "postgres"], env=env, check=True, capture_output=True, text=True)
        ended = time.monotonic() - sampler.start_time
        end_lsn = cluster.psql("SELECT pg_current_wal_lsn()")
        at_end = sampler.count()
        cluster.psql("SELECT pg_switch_wal()")
        deadline = time.monotonic() + DRAIN_LIMIT
        while time.monotonic() < deadline and any(sampler.count()):
            time.sleep(0.5)
        drained = time.monotonic() - sampler.start_time - ended
        sampler.stop.set()
        sampler.join()
        after = cluster.psql("SELECT archived_count || '|' || failed_count FROM pg_stat_archiver").split("|")
        wal_bytes = int(cluster.psql(f"SELECT pg_wal_lsn_diff('{end_lsn}', '{start_lsn}')::bigint"))
        tps = re.search(r"tps = ([\d.]+)", bench.stdout)
        during = [s for s in sampler.samples if s[0] <= ended]
        return {
            "mode": mode, "writer": writer, "seconds": seconds, "tps": float(tps.group(1)) if tps else None,
            "wal_mb": round(wal_bytes / 1048576), "archived": int(after[0]) - int(before[0]),
            "failed": int(after[1]) - int(before[1]), "load_at_start": load,
            "max_ready": max((s[1] for s in during), default=0), "final_ready": at_end[0],
            "max_spooled": max((s[2] for s in during), default=0), "final_spooled": at_end[1],
            "drain_seconds": round(drained, 1), "drained": not any(sampler.count()), "samples": sampler.samples,
        }
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def keep_up(seconds: int, modes: list[str], json_path: str | None, writer: str = "tpcb") -> int:
    root = Path(tempfile.mkdtemp(prefix="sentinel-keepup-"))
    os.chmod(root, 0o755)
    try:
        tool = WalTool(root).build()
        results = []
        for mode in modes:
            if mode.startswith("pgbackrest") and not shutil.which("pgbackrest"):
                continue
            result = keep_up_round(mode, seconds, tool, writer)
            results.append(result)
            print(f"{mode}: {json.dumps({k: v for k, v in result.items() if k != 'samples'})}", flush=True)
        print(f"\npgbench -c 2 -j 2 -T {seconds} ({writer}, scale {SCALE}), 16 MB segments, zstd\n")
        print("| mode | tps | WAL | archived | max .ready | .ready at end | max spooled | spooled at end |"
              " drained after |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['mode']} | {r['tps']:.0f} | {r['wal_mb']} MB | {r['archived']} | {r['max_ready']} |"
                  f" {r['final_ready']} | {r['max_spooled']} | {r['final_spooled']} |"
                  f" {r['drain_seconds']} s{'' if r['drained'] else ' (not drained)'} |")
        if json_path:
            Path(json_path).write_text(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0
