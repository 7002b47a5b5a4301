"""Sentinel Backup benchmarks: the tool against raw pg_dump and the shell pipeline, side by side.

Not a test: it prints a Markdown table and PASS/MISS per target, and writes JSON.

    .venv/bin/python bench/run.py                 # full run, default scale (>= 1 GB of dump text)
    .venv/bin/python bench/run.py --quick         # smoke run, a few minutes
    .venv/bin/python bench/run.py --scale 40 --repeat 3 --modes floor,tool_gzip --json out.json

It creates its own throwaway PostgreSQL cluster (and a SeaweedFS server for the S3
mode), builds the database, runs every mode interleaved (round 1: A B C ..., round
2: A B C ..., rotated start) and removes everything afterwards. Ratios are computed pair
by pair within a round, then the median is taken, so a noisy neighbour slows both sides.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from dataset import build  # noqa: E402
from procwatch import Sample, Target, cpu_model, measure, median, paired, say, wall  # noqa: E402
from sentinel_backup.demo.cluster import TempCluster  # noqa: E402

DEFAULT_SCALE = 90  # ~1.1 GiB of dump text (12.3 MiB per scale unit with the docs table)
QUICK_SCALE = 6
SMALL_DIVISOR = 5  # the memory check's small database is scale // 5 (>= 4x smaller)
DIR_JOBS = 2  # PG_DUMP_JOBS of the directory-format modes (= the cores of the reference machine)
MB = 1024 * 1024
DB = "bench"
DB_SMALL = "bench_small"
TOOL = str(Path(sys.executable).parent / "sentinel-backup")


# --- modes ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mode:
    name: str
    kind: str  # "backup" or "restore"
    title: str
    baseline: str | None = None  # the shell pipeline this mode is compared with (x shell)
    needs: tuple[str, ...] = ()  # modes that must run too (baselines, artifacts for restores)
    tool: bool = False


MODES: list[Mode] = [
    Mode("floor", "backup", "pg_dump -Fp > /dev/null (floor)"),
    Mode("shell_gzip9", "backup", "pg_dump | gzip -9 > f; sha256sum"),
    Mode("shell_gzip9_aes", "backup", "pg_dump | gzip -9 | openssl enc -aes-256-cbc -pbkdf2 > f; sha256sum"),
    Mode("shell_zstd", "backup", "pg_dump | zstd -3 -T0 > f; sha256sum"),
    Mode("shell_custom", "backup", "pg_dump -Fc > f; sha256sum"),
    Mode("tool_gzip", "backup", "sentinel-backup: gzip (default)", "shell_gzip9", ("shell_gzip9",), True),
    Mode("tool_gzip_noverify", "backup", "sentinel-backup: gzip, VERIFY_AFTER_BACKUP=none", "shell_gzip9",
         ("shell_gzip9", "tool_gzip"), True),
    Mode("tool_gzip_reread", "backup", "sentinel-backup: gzip, VERIFY_AFTER_BACKUP=reread", "shell_gzip9",
         ("shell_gzip9", "tool_gzip"), True),
    Mode("tool_zstd", "backup", "sentinel-backup: zstd", "shell_zstd", ("shell_zstd", "shell_gzip9"), True),
    Mode("tool_gzip_aes", "backup", "sentinel-backup: gzip + AES-256-CBC", "shell_gzip9_aes",
         ("shell_gzip9_aes", "tool_gzip", "shell_gzip9"), True),
    Mode("tool_zstd_workers0", "backup", "sentinel-backup: zstd, COMPRESSION_THREADS=0", "shell_zstd",
         ("shell_zstd", "tool_zstd"), True),
    Mode("before_gzip", "backup", "the tool of --before-src: gzip (default)", "shell_gzip9", ("shell_gzip9",), True),
    Mode("before_zstd", "backup", "the tool of --before-src: zstd", "shell_zstd", ("shell_zstd",), True),
    Mode("tool_zstd_age", "backup", "sentinel-backup: zstd + age", "shell_zstd", ("shell_zstd", "tool_zstd"), True),
    Mode("tool_custom", "backup", "sentinel-backup: custom format", "shell_custom", ("shell_custom",), True),
    Mode("shell_directory", "backup", f"pg_dump -Fd -j {DIR_JOBS} -f dir (raw, no tar, no hash)"),
    Mode("tool_directory", "backup", f"sentinel-backup: directory format, PG_DUMP_JOBS={DIR_JOBS}", "shell_directory",
         ("shell_directory", "tool_gzip", "tool_custom"), True),
    Mode("tool_gzip_s3", "backup", "sentinel-backup: gzip, local + S3 (SeaweedFS)", "shell_gzip9",
         ("tool_gzip", "shell_gzip9"), True),
    Mode("tool_gzip_small", "backup", f"sentinel-backup: gzip, small db (1/{SMALL_DIVISOR} scale)", None,
         ("tool_gzip",), True),
    Mode("tool_zstd_small", "backup", f"sentinel-backup: zstd, small db (1/{SMALL_DIVISOR} scale)", None,
         ("tool_zstd",), True),
    Mode("shell_restore_plain", "restore", "createdb; gunzip -c f | psql", None, ("tool_gzip",)),
    Mode("tool_restore_plain", "restore", "sentinel-backup restore (plain, gzip)", "shell_restore_plain",
         ("shell_restore_plain", "tool_gzip"), True),
    Mode("shell_restore_custom", "restore", "createdb; pg_restore -j2 f", None, ("tool_custom",)),
    Mode("tool_restore_custom", "restore", "sentinel-backup restore --jobs 2 (custom)", "shell_restore_custom",
         ("shell_restore_custom", "tool_custom"), True),
    Mode("tool_restore_directory", "restore", "sentinel-backup restore --jobs 2 (directory)", "shell_restore_custom",
         ("shell_restore_custom", "tool_directory"), True),
]
BY_NAME = {m.name: m for m in MODES}


def select_modes(names: list[str] | None) -> list[Mode]:
    if not names:
        return list(MODES)
    wanted: set[str] = {"floor"}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in BY_NAME:
            raise SystemExit(f"unknown mode {name!r}; known: {', '.join(BY_NAME)}")
        if name not in wanted:
            wanted.add(name)
            todo.extend(BY_NAME[name].needs)
    return [m for m in MODES if m.name in wanted]


# --- the environment: cluster, keys, S3 ------------------------------------------------------

@dataclass
class Bench:
    work: Path
    cluster: TempCluster
    log: Path
    s3: Any = None  # tests/plugins/s3.py WeedServer, when it started
    s3_bucket: str | None = None
    keep: dict[str, Path] = field(default_factory=dict)  # mode -> backup dir kept for the restores
    before_src: str = ""  # --before-src: the src/ folder of the code the before_* modes run
    counter: int = 0

    @property
    def bin(self) -> Path:
        return self.cluster.bin_dir

    def pg_env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.work), "LANG": "C.UTF-8",
            "PGHOST": "127.0.0.1", "PGPORT": str(self.cluster.port), "PGUSER": self.cluster.user,
            "PGPASSWORD": self.cluster.password, "TMPDIR": str(self.work / "tmp"),
        }

    def tool_env(self, **extra: str) -> dict[str, str]:
        env = self.pg_env()
        for name in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD"):
            env.pop(name)
        env.update(self.cluster.env())
        env.update({"POSTGRES_DB": DB, "LOG_LEVEL": "INFO", "SENTINEL_ENV_FILE": str(self.work / "no.env"),
                    "PYTHONPATH": str(ROOT / "src")})  # the code of this checkout, whatever the venv points at
        env.update(extra)
        return env

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run([str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db,
                              "-c", sql], env=self.pg_env(), capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def fresh_dir(self, label: str) -> Path:
        self.counter += 1
        path = self.work / "out" / f"{self.counter:03d}-{label}"
        path.mkdir(parents=True)
        return path


def load_weed_server() -> Any:
    """The WeedServer class of tests/plugins/s3.py (another engineer's startup code), if importable."""
    path = ROOT / "tests" / "plugins" / "s3.py"
    spec = importlib.util.spec_from_file_location("sentinel_bench_s3", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.WeedServer


# --- one measured run per mode ---------------------------------------------------------------

def shell(script: str) -> list[str]:
    return ["bash", "-o", "pipefail", "-c", script]


def artifact_in(folder: Path) -> Path:
    found = [p for p in folder.iterdir() if p.is_file() and p.name.startswith("sentinel_backup_")
             and not p.name.endswith((".json", ".sha256")) and not p.name.startswith(".")]
    if len(found) != 1:
        raise RuntimeError(f"expected one artifact in {folder}, found {[p.name for p in found]}")
    return found[0]


def run_backup(b: Bench, mode: Mode, rnd: int) -> Sample:
    out = b.fresh_dir(mode.name)
    dump = f"pg_dump -Fp -d {DB}"
    key = b.work / "keys" / "aes.key"
    scripts = {
        "floor": f"{dump} > /dev/null",
        "shell_gzip9": f"{dump} | gzip -9 > {out}/f.sql.gz && sha256sum {out}/f.sql.gz > {out}/f.sql.gz.sha256",
        "shell_gzip9_aes": f"{dump} | gzip -9 | openssl enc -aes-256-cbc -pbkdf2 -salt -pass file:{key} "
                           f"> {out}/f.sql.gz.enc && sha256sum {out}/f.sql.gz.enc > {out}/f.sha256",
        "shell_zstd": f"{dump} | zstd -3 -T0 -q > {out}/f.sql.zst && sha256sum {out}/f.sql.zst > {out}/f.sha256",
        "shell_custom": f"pg_dump -Fc -d {DB} > {out}/f.dump && sha256sum {out}/f.dump > {out}/f.sha256",
        "shell_directory": f"pg_dump -Fd -j {DIR_JOBS} -d {DB} -f {out}/f.dir",
    }
    keys = b.work / "keys"
    age_pub = (keys / "age.pub").read_text().strip() if (keys / "age.pub").exists() else ""
    tool_envs: dict[str, dict[str, str]] = {
        "tool_gzip": {},
        "tool_gzip_noverify": {"VERIFY_AFTER_BACKUP": "none"},
        "tool_gzip_reread": {"VERIFY_AFTER_BACKUP": "reread"},
        "tool_zstd": {"COMPRESSION": "zstd"},
        "tool_zstd_workers0": {"COMPRESSION": "zstd", "COMPRESSION_THREADS": "0"},
        "before_gzip": {"PYTHONPATH": b.before_src},
        "before_zstd": {"COMPRESSION": "zstd", "PYTHONPATH": b.before_src},
        "tool_gzip_aes": {"ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "aes-256-cbc",
                          "ENCRYPTION_KEY_PATH": str(key)},
        "tool_zstd_age": {"COMPRESSION": "zstd", "ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "age",
                          "AGE_RECIPIENTS": age_pub, "AGE_IDENTITY_FILE": str(keys / "age.key")},
        "tool_custom": {"BACKUP_FORMAT": "custom"},
        "tool_directory": {"BACKUP_FORMAT": "directory", "PG_DUMP_JOBS": str(DIR_JOBS)},
        "tool_gzip_small": {"POSTGRES_DB": DB_SMALL},
        "tool_zstd_small": {"POSTGRES_DB": DB_SMALL, "COMPRESSION": "zstd"},
    }
    if mode.name in scripts:
        sample = measure(mode.name, rnd, shell(scripts[mode.name]), env=b.pg_env(), cwd=out, log=b.log)
        files = [p for p in out.iterdir() if p.name.startswith("f.") and not p.name.endswith("sha256")]
        sample.stored_bytes = (sum(f.stat().st_size for f in files[0].iterdir()) if files and files[0].is_dir()
                               else files[0].stat().st_size if files else None)
    else:
        if mode.name == "tool_gzip_s3":
            assert b.s3 is not None and b.s3_bucket is not None
            env = b.tool_env(BACKUP_DIR=str(out), **b.s3.s3_env(b.s3_bucket, f"r{rnd}-{b.counter}"))
        else:
            env = b.tool_env(BACKUP_DIR=str(out), **tool_envs[mode.name])
        sample = measure(mode.name, rnd, [TOOL, "backup"], env=env, cwd=b.work, log=b.log)
        if sample.ok:
            artifact = artifact_in(out)
            sample.stored_bytes = artifact.stat().st_size
            manifest = json.loads((out / (artifact.name + ".json")).read_text()) if (
                out / (artifact.name + ".json")).exists() else None
            if manifest is None:
                manifests = [p for p in out.glob("*.json")]
                manifest = json.loads(manifests[0].read_text()) if manifests else {}
            sample.extra["raw_bytes"] = manifest.get("raw_size_bytes")
    if mode.name in ("tool_gzip", "tool_custom", "tool_directory") and sample.ok and mode.name not in b.keep:
        b.keep[mode.name] = out  # the first good artifact feeds the restore modes
    else:
        shutil.rmtree(out, ignore_errors=True)
    return sample


def run_restore(b: Bench, mode: Mode, rnd: int) -> Sample:
    target = f"restored_{mode.name}_{rnd}"
    source = b.keep["tool_gzip" if "plain" in mode.name else
                    "tool_directory" if "directory" in mode.name else "tool_custom"]
    artifact = artifact_in(source)
    create = f"psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE {target}'"
    try:
        if mode.name == "shell_restore_plain":
            argv = shell(f"{create} && gunzip -c {artifact} | psql -X -q -v ON_ERROR_STOP=1 -d {target} > /dev/null")
            sample = measure(mode.name, rnd, argv, env=b.pg_env(), cwd=b.work, log=b.log)
        elif mode.name == "shell_restore_custom":
            argv = shell(f"{create} && pg_restore -j 2 --exit-on-error -d {target} {artifact}")
            sample = measure(mode.name, rnd, argv, env=b.pg_env(), cwd=b.work, log=b.log)
        else:
            jobs = ["--jobs", "2"] if "plain" not in mode.name else []
            env = b.tool_env(BACKUP_DIR=str(source))
            argv = [TOOL, "restore", "latest", "--database", DB, "--target-db", target, "--create", *jobs]
            sample = measure(mode.name, rnd, argv, env=env, cwd=b.work, log=b.log)
    finally:
        b.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")
    return sample


def run_one(b: Bench, mode: Mode, rnd: int) -> Sample:
    b.psql("CHECKPOINT")  # start every run from the same state: no checkpoint debt from the previous one
    try:
        return run_backup(b, mode, rnd) if mode.kind == "backup" else run_restore(b, mode, rnd)
    except Exception as exc:  # a broken mode must not stop the others
        return Sample(mode.name, rnd, error=f"{type(exc).__name__}: {exc}", returncode=-1)


# --- statistics, targets, output -------------------------------------------------------------

def summarize(samples: dict[str, list[Sample]], modes: list[Mode]) -> dict[str, dict[str, Any]]:
    gzip9 = median([float(s.stored_bytes) for s in samples.get("shell_gzip9", []) if s.ok and s.stored_bytes])
    out: dict[str, dict[str, Any]] = {}
    for mode in modes:
        good = [s for s in samples.get(mode.name, []) if s.ok]
        sizes = [float(s.stored_bytes) for s in good if s.stored_bytes]
        size = median(sizes)
        out[mode.name] = {
            "title": mode.title, "kind": mode.kind, "runs": len(good),
            "failed": len(samples.get(mode.name, [])) - len(good),
            "wall_s": median([s.wall for s in good]),
            "x_floor": paired(samples, mode.name, "floor", wall) if mode.kind == "backup" else None,
            "baseline": mode.baseline,
            "x_shell": paired(samples, mode.name, mode.baseline, wall) if mode.baseline else None,
            "stored_bytes": size,
            "x_gzip9_size": size / gzip9 if size and gzip9 else None,
            "peak_rss_tree_mb": max([s.tree_rss_peak_kb for s in good], default=0) / 1024,
            "peak_rss_root_mb": max([s.root_hwm_kb for s in good], default=0) / 1024,
            "max_proc_rss_mb": max([s.max_proc_rss_kb for s in good], default=0) / 1024,
            "cpu_s": median([s.cpu for s in good]),
            "raw_bytes": median([float(s.extra["raw_bytes"]) for s in good if s.extra.get("raw_bytes")]),
        }
    return out


def targets(samples: dict[str, list[Sample]], summary: dict[str, dict[str, Any]]) -> list[Target]:
    def get(mode: str, key: str) -> float | None:
        value = summary.get(mode, {}).get(key)
        return float(value) if value is not None else None

    result = [
        Target("gzip: wall vs floor", "<= 1.3x", get("tool_gzip", "x_floor"), 1.3),
        Target("gzip: faster than pg_dump | gzip -9", ">= 4x",
               paired(samples, "shell_gzip9", "tool_gzip", wall), 4.0, higher_is_better=True),
        Target("gzip: size vs gzip -9", "<= 1.25x", get("tool_gzip", "x_gzip9_size"), 1.25),
        Target("gzip: this tree vs --before-src", "<= 1.0x", paired(samples, "tool_gzip", "before_gzip", wall), 1.0),
        Target("zstd: wall vs floor", "<= 1.3x", get("tool_zstd", "x_floor"), 1.3),
        Target("zstd: this tree vs --before-src", "<= 1.0x", paired(samples, "tool_zstd", "before_zstd", wall), 1.0),
        Target("zstd: size vs gzip -9", "<= 1.0x", get("tool_zstd", "x_gzip9_size"), 1.0),
        Target("AES adds to gzip", "<= 1.10x", paired(samples, "tool_gzip_aes", "tool_gzip", wall), 1.10),
        Target("age adds to zstd", "<= 1.10x", paired(samples, "tool_zstd_age", "tool_zstd", wall), 1.10),
        Target("local + S3 vs local", "<= 1.15x", paired(samples, "tool_gzip_s3", "tool_gzip", wall), 1.15),
    ]
    tool_rss = [v["peak_rss_tree_mb"] for k, v in summary.items() if k.startswith("tool_") and v["runs"]]
    result.append(Target("peak RSS, every tool mode (tree)", "<= 150 MB", max(tool_rss) if tool_rss else None, 150))
    for algo in ("gzip", "zstd"):
        big, small = get(f"tool_{algo}", "peak_rss_tree_mb"), get(f"tool_{algo}_small", "peak_rss_tree_mb")
        growth = big / small if big and small else None
        result.append(Target(f"RSS flat with size ({algo}, {SMALL_DIVISOR}x data)", "<= 1.15x", growth, 1.15,
                             shown=f"{small or 0:.0f} -> {big or 0:.0f} MB"))
    result += [
        Target("restore plain vs gunzip | psql", "<= 1.05x", get("tool_restore_plain", "x_shell"), 1.05),
        Target("restore custom vs pg_restore -j2", "<= 1.0x", get("tool_restore_custom", "x_shell"), 1.0),
    ]
    return result


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def markdown(summary: dict[str, dict[str, Any]], goals: list[Target], meta: dict[str, Any]) -> str:
    lines = [
        f"Sentinel Backup benchmark, {meta['date']}, {meta['cpus']} cores ({meta['cpu_model']}), "
        f"pgbench scale {meta['scale']} + docs, dump text {meta['raw_dump_mb']:.0f} MB, "
        f"{meta['repeat']} interleaved rounds, medians",
        "",
        "| mode | wall s | x floor | x shell | stored MB | x gzip-9 size | peak RSS tree MB | tool proc MB "
        "| CPU s | runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in summary.items():
        base = f" ({row['baseline']})" if row["baseline"] and row["x_shell"] is not None else ""
        stored = row["stored_bytes"] / MB if row["stored_bytes"] else None
        label = name.replace("|", "\\|")
        lines.append(
            f"| {label} | {fmt(row['wall_s'], '.1f')} | {fmt(row['x_floor'])} | {fmt(row['x_shell'])}{base} "
            f"| {fmt(stored, '.1f')} | {fmt(row['x_gzip9_size'])} | {row['peak_rss_tree_mb']:.0f} "
            f"| {fmt(row['peak_rss_root_mb'] if name.startswith('tool_') else None, '.0f')} "
            f"| {fmt(row['cpu_s'], '.1f')} "
            f"| {row['runs']}{'' if not row['failed'] else ' (' + str(row['failed']) + ' failed)'} |")
    lines += ["", "| target | goal | measured | verdict |", "|---|---|---:|---|"]
    for t in goals:
        measured = fmt(t.value, ".2f", "x") if "MB" not in t.goal else fmt(t.value, ".0f", " MB")
        if t.shown:
            measured += f" ({t.shown})"
        name = t.name.replace("|", "\\|")
        lines.append(f"| {name} | {t.goal} | {measured} | **{t.verdict}** |")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------

@contextlib.contextmanager
def bench_environment(args: argparse.Namespace, modes: list[Mode]) -> Iterator[Bench]:
    base = Path(args.workdir) if args.workdir else None
    work = Path(tempfile.mkdtemp(prefix="sentinel-bench-", dir=base))
    log = work / "bench.log"
    cluster = TempCluster(base=base, settings={
        "max_wal_size": "8GB", "checkpoint_timeout": "30min", "maintenance_work_mem": "256MB",
        "autovacuum": "off", "max_parallel_maintenance_workers": "1"})
    b = Bench(work, cluster, log, before_src=str(Path(args.before_src).resolve()) if args.before_src else "")
    try:
        (work / "tmp").mkdir()
        keys = work / "keys"
        keys.mkdir(mode=0o700)
        (keys / "aes.key").write_text(subprocess.run(["openssl", "rand", "-base64", "32"], capture_output=True,
                                                     text=True, check=True).stdout)
        (keys / "aes.key").chmod(0o600)
        subprocess.run(["age-keygen", "-o", str(keys / "age.key")], capture_output=True, check=True)
        (keys / "age.pub").write_text(subprocess.run(["age-keygen", "-y", str(keys / "age.key")], capture_output=True,
                                                     text=True, check=True).stdout)
        cluster.start()
        if any(m.name == "tool_gzip_s3" for m in modes) and not args.no_s3:
            try:
                weed = load_weed_server()(work / "seaweedfs")
                weed.start()
                b.s3 = weed
                b.s3_bucket = weed.create_bucket("sentinel-bench")
            except Exception as exc:
                print(f"# S3 mode skipped: SeaweedFS did not start ({exc})", file=sys.stderr)
                b.s3 = None
        yield b
    finally:
        if b.s3 is not None:
            with contextlib.suppress(Exception):
                b.s3.stop()
        cluster.stop()
        if args.keep_log:
            shutil.copy(log, args.keep_log)
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, help=f"pgbench scale (default {DEFAULT_SCALE}; --quick: {QUICK_SCALE})")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (>= 3 for medians; default 3)")
    parser.add_argument("--modes", help="comma-separated modes (baselines are added); default: all. Known: "
                        + ", ".join(BY_NAME))
    parser.add_argument("--json", help="write samples, summary and verdicts to this JSON file")
    parser.add_argument("--quick", action="store_true", help=f"small database (scale {QUICK_SCALE}): a smoke run")
    parser.add_argument("--no-s3", action="store_true", help="skip the local + S3 mode")
    parser.add_argument("--workdir", help="parent folder of the cluster and the artifacts (default: TMPDIR)")
    parser.add_argument("--keep-log", help="copy the commands' log here before cleaning up")
    parser.add_argument("--before-src", help="the src/ folder of an older tree (e.g. a `git archive` of main): "
                        "adds the modes before_gzip and before_zstd, run with that code, for before/after in one run")
    parser.add_argument("--skip", help="comma-separated modes not to run, baselines included (e.g. shell_gzip9)")
    args = parser.parse_args(argv)
    scale = args.scale or (QUICK_SCALE if args.quick else DEFAULT_SCALE)
    small = max(1, scale // SMALL_DIVISOR)
    modes = select_modes(args.modes.split(",") if args.modes else None)
    if not args.before_src:
        modes = [m for m in modes if not m.name.startswith("before_")]
    if args.skip:
        modes = [m for m in modes if m.name not in args.skip.split(",")]
    if args.no_s3:
        modes = [m for m in modes if m.name != "tool_gzip_s3"]
    samples: dict[str, list[Sample]] = {m.name: [] for m in modes}
    started = time.monotonic()
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
        "cpu_model": cpu_model(), "kernel": platform.release(), "python": platform.python_version(),
        "scale": scale, "small_scale": small, "repeat": args.repeat, "quick": args.quick,
    }
    with bench_environment(args, modes) as b:
        if b.s3 is None:
            modes = [m for m in modes if m.name != "tool_gzip_s3"]
        meta["postgres"] = b.psql("SHOW server_version")
        meta["s3"] = "SeaweedFS (weed mini, 127.0.0.1)" if b.s3 is not None else "skipped"
        pg = {"psql": [str(b.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"], "pgbench": [str(b.bin / "pgbench")]}
        say(f"building {DB} (scale {scale}) ...", started)
        build(pg["psql"], pg["pgbench"], b.pg_env(), DB, scale, b.log)
        if any(m.name.endswith("_small") for m in modes):
            say(f"building {DB_SMALL} (scale {small}) ...", started)
            build(pg["psql"], pg["pgbench"], b.pg_env(), DB_SMALL, small, b.log)
        raw = subprocess.run(shell(f"pg_dump -Fp -d {DB} | wc -c"), env=b.pg_env(), capture_output=True, text=True,
                             check=True)  # warm-up (cache, hint bits) and the dump size
        meta["raw_dump_mb"] = int(raw.stdout.strip()) / MB
        meta["db_size_mb"] = int(b.psql(f"SELECT pg_database_size('{DB}')")) / MB
        if any(m.name.endswith("_small") for m in modes):
            raw_small = subprocess.run(shell(f"pg_dump -Fp -d {DB_SMALL} | wc -c"), env=b.pg_env(),
                                       capture_output=True, text=True, check=True)
            meta["raw_dump_small_mb"] = int(raw_small.stdout.strip()) / MB
        say(f"dump text: {meta['raw_dump_mb']:.0f} MB; running {len(modes)} modes x {args.repeat}", started)
        for kind in ("backup", "restore"):
            group = [m for m in modes if m.kind == kind]
            for rnd in range(args.repeat):
                shift = rnd % max(1, len(group))
                for mode in group[shift:] + group[:shift]:  # interleaved, rotated start each round
                    if kind == "restore" and not _restore_ready(b, mode):
                        continue
                    sample = run_one(b, mode, rnd)
                    samples[mode.name].append(sample)
                    status = "ok" if sample.ok else f"FAILED: {sample.error}"
                    say(f"round {rnd + 1}/{args.repeat} {mode.name}: {sample.wall:.1f} s, "
                         f"tree {sample.tree_rss_peak_kb / 1024:.0f} MB, {status}", started)
    summary = summarize(samples, modes)
    goals = targets(samples, summary)
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    print(markdown(summary, goals, meta))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "meta": meta, "summary": summary,
            "targets": [{"name": t.name, "goal": t.goal, "value": t.value, "verdict": t.verdict, "note": t.shown}
                        for t in goals],
            "samples": {k: [s.to_json() for s in v] for k, v in samples.items()},
        }, indent=2))
    failed = any(not s.ok for v in samples.values() for s in v)
    return 1 if failed else 0


def _restore_ready(b: Bench, mode: Mode) -> bool:
    needed = "tool_gzip" if "plain" in mode.name else "tool_custom"
    return needed in b.keep


if __name__ == "__main__":
    sys.exit(main())
