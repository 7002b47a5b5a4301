"""Start-up of the lean commands, before/after: `wal-push` of a .history file (start-up, one
listing, one tiny object), `check` of a local-only configuration, `--help`.

Each command runs ``--runs`` times per tree, interleaved (before, after, before, ...), with
the median and minimum of the wall time and of the CPU time (user + system of the child, less
sensitive than wall to a shared machine). A tree is a ``src`` folder put first on PYTHONPATH:

    git -C /work/main archive main src | tar -x -C /tmp/before
    .venv/bin/python bench/wal_startup.py --before /tmp/before/src --after src [--runs 9]

Not a test: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):  # check exits 1: no server on port 1 (critical), every check still runs
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr[-1500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sentinel-startup-"))
    (work / "backups").mkdir(mode=0o700)
    (work / "pg_wal").mkdir()
    history = work / "pg_wal" / "00000002.history"
    history.write_text("1\t0/3000000\tno recovery target specified\n")
    values = {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "1", "POSTGRES_USER": "u", "POSTGRES_DB": "app",
              "BACKUP_DIR": str(work / "backups"), "LOG_LEVEL": "ERROR", "COMPRESSION": "zstd"}
    (work / "bench.env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work),
            "SENTINEL_ENV_FILE": str(work / "bench.env")}
    commands = {
        "wal-push (.history)": ["wal-push", str(history), "--system-id", "7714987486134324860"],
        "check (local-only)": ["check", "--no-progress"],
        "--help": ["--help"],
    }
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.runs):
        for name, command in commands.items():
            for tree, src in trees.items():
                env = {**base, "PYTHONPATH": src}
                samples.setdefault((name, tree), []).append(
                    run_once([sys.executable, "-m", "sentinel_backup", *command], env, work))
    print(f"{args.runs} runs each, interleaved; load average {os.getloadavg()[0]:.1f}\n")
    print("| command | before: wall median (min) | after: wall median (min) | before: CPU median | after: CPU median |")
    print("|---|---:|---:|---:|---:|")
    for name in commands:
        cells = []
        for tree in trees:
            walls = [w for w, _ in samples[(name, tree)]]
            cells.append(f"{statistics.median(walls) * 1000:.0f} ms ({min(walls) * 1000:.0f})")
        for tree in trees:
            cpus = [c for _, c in samples[(name, tree)]]
            cells.append(f"{statistics.median(cpus) * 1000:.0f} ms")
        print(f"| `{name}` | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
