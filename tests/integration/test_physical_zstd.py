"""Base backups that pg_basebackup compresses itself (COMPRESSION=zstd, PostgreSQL 15 here).

The tool stores pg_basebackup's zstd stream as it comes (encrypted after it), and the in-stream
check decodes it once for the raw SHA-256 and the tar walk. What must hold: the stored stream is
a zstd frame that ``zstd -d`` reads to the tar whose SHA-256 and size the manifest records; AES
and age apply on top; a killed pg_basebackup, a stream cut short (the producer still exiting 0)
and a stream that is not zstd are refused with nothing committed; container mode passes the
option through ``docker exec``; a pg_basebackup built without zstd (the PostgreSQL 16 wheel)
falls back to the tool's own compressor.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_backup.demo.cluster import TempCluster, free_port
from tests.helpers import DATA, cli
from tests.integration.test_physical_base import _pg_basebackup_pid, env_for, slow_bin, socket_count, stop

REAL = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def cluster() -> Iterator[TempCluster]:
    with TempCluster() as pg:
        pg.psql("CREATE TABLE items(id int primary key, note text);"
                " INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 4000) g")
        yield pg


def zstd_env(pg: TempCluster, tmp_path: Path, **extra: str) -> dict[str, str]:
    return env_for(pg, tmp_path, **{"COMPRESSION": "zstd", "PHYSICAL_ZSTD_BY_PG_BASEBACKUP": "true", **extra})


def no_base_backup(env: dict[str, str], tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    left = [p for p in backups.rglob("*") if p.is_file() and "sentinel_base" in p.name] if backups.exists() else []
    assert left == []
    assert cli(env, "list", "--json").json() == []


def wrapped_bin(tmp_path: Path, pipe: str) -> Path:
    """PG_BIN_DIR whose pg_basebackup's stdout goes through ``pipe`` (the pipeline's status is the pipe's;
    the tool's probe of the option, which connects nowhere, runs unwrapped)."""
    folder = tmp_path / "wrapped"
    folder.mkdir()
    for tool in ("pg_dump", "pg_dumpall", "pg_restore", "psql"):
        (folder / tool).symlink_to(REAL / tool)
    (folder / "pg_basebackup").write_text(f'#!/bin/sh\ncase "$*" in *sentinel-probe*) exec {REAL}/pg_basebackup "$@";;'
                                          f' esac\n{REAL}/pg_basebackup "$@" | {pipe}\n')
    (folder / "pg_basebackup").chmod(0o755)
    return folder


def test_stored_stream_is_pg_basebackups_zstd_and_decodes_to_the_recorded_tar(cluster: TempCluster,
                                                                                tmp_path: Path) -> None:
    env = zstd_env(cluster, tmp_path)
    done = cli(env, "backup", "--physical")
    assert done.code == 0, done.output
    assert "compressed_by=pg_basebackup" in done.output
    (entry,) = cli(env, "list", "--json").json()
    artifact = tmp_path / "backups" / entry["artifact"]
    assert artifact.name.endswith(".tar.zst")
    manifest = json.loads((artifact.parent / (artifact.name + ".manifest.json")).read_text())
    assert manifest["compression"] == {"algorithm": "zstd", "level": 3}
    tar = subprocess.run(["zstd", "-dc", str(artifact)], capture_output=True, check=True).stdout
    assert hashlib.sha256(tar).hexdigest() == manifest["raw_sha256"] and len(tar) == manifest["raw_size_bytes"]
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == manifest["sha256"]
    names = subprocess.run(["tar", "-t"], input=tar, capture_output=True, check=True).stdout.decode().split()
    assert "backup_label" in names and names[-1] == "backup_manifest"
    sidecar = tmp_path / "backups" / manifest["physical"]["backup_manifest_key"]
    pg_manifest = subprocess.run(["zstd", "-dc", str(sidecar)], capture_output=True, check=True).stdout
    assert hashlib.sha256(pg_manifest).hexdigest() == manifest["physical"]["backup_manifest_sha256"]
    assert json.loads(pg_manifest)["WAL-Ranges"][0]["End-LSN"] == manifest["physical"]["stop_lsn"]
    verified = cli(env, "verify", entry["id"])
    assert verified.code == 0 and "tar end-of-archive present" in verified.output, verified.output


@pytest.mark.parametrize("method", ["aes", "age"])
def test_encrypted_after_pg_basebackups_compression_restores(method: str, cluster: TempCluster, tmp_path: Path,
                                                            work: Path) -> None:
    if method == "aes":
        key = tmp_path / "backup.key"
        key.write_text(subprocess.run(["openssl", "rand", "-base64", "32"], capture_output=True, text=True,
                                      check=True).stdout)
        key.chmod(0o600)
        secret = {"ENCRYPT_ENABLED": "true", "ENCRYPTION_KEY_PATH": str(key)}
    else:
        identity = tmp_path / "identity.txt"
        subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
        identity.chmod(0o600)
        recipient = subprocess.run(["age-keygen", "-y", str(identity)], capture_output=True, text=True,
                                   check=True).stdout.strip()
        secret = {"ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "age", "AGE_RECIPIENTS": recipient,
                  "AGE_IDENTITY_FILE": str(identity)}
    env = zstd_env(cluster, tmp_path, **secret)
    done = cli(env, "backup", "--physical")
    assert done.code == 0, done.output
    assert "compressed_by=pg_basebackup" in done.output
    (entry,) = cli(env, "list", "--json").json()
    assert entry["artifact"].endswith(".tar.zst.enc" if method == "aes" else ".tar.zst.age")
    artifact = tmp_path / "backups" / entry["artifact"]
    if method == "age":  # the real age CLI reads it: a zstd stream of the recorded tar
        plain = subprocess.run(["age", "-d", "-i", secret["AGE_IDENTITY_FILE"], str(artifact)], capture_output=True,
                               check=True).stdout
        tar = subprocess.run(["zstd", "-dc"], input=plain, capture_output=True, check=True).stdout
        manifest = json.loads((artifact.parent / (artifact.name + ".manifest.json")).read_text())
        assert hashlib.sha256(tar).hexdigest() == manifest["raw_sha256"]
    pgdata, port = work / "restored", free_port()
    restored = cli(env, "restore", "--physical", "latest", "--pgdata", str(pgdata), "--start", str(port),
                   "--keep-running", "--tool-command", "/bin/false")
    assert restored.code == 0, restored.output
    try:
        assert socket_count(pgdata, port, "SELECT count(*) FROM items") == "4000"
    finally:
        stop(pgdata)


def _streamed(pg: TempCluster) -> int:
    """Bytes the server has sent to the running base backup (its stdout may still be empty:
    zstd holds whole blocks)."""
    out = pg.psql("SELECT coalesce(max(backup_streamed), 0) FROM pg_stat_progress_basebackup", check=False)
    return int(out) if out.isdigit() else 0


def test_pg_basebackup_killed_mid_stream_is_its_failure(cluster: TempCluster, tmp_path: Path) -> None:
    """The compressed stream is cut short when pg_basebackup dies: the failure named is pg_basebackup's."""
    env = zstd_env(cluster, tmp_path, PG_BIN_DIR=str(slow_bin(tmp_path)))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "PG"))}
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_backup", "backup", "--physical"],
                            env={**child_env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = None
    while proc.poll() is None:
        pid = _pg_basebackup_pid(cluster.port)
        if pid is not None and _streamed(cluster) > 300_000:
            break
        time.sleep(0.05)
    assert pid is not None and proc.poll() is None
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate()
    said = out + err
    assert proc.returncode == 1, said
    assert "pg_basebackup failed" in said and "killed by signal 9" in said and "Traceback" not in said
    no_base_backup(env, tmp_path)


@pytest.mark.parametrize(("pipe", "expected"), [
    ("head -c 300000", "zstd data is truncated"),  # cut short, and the pipeline still exits 0
    ("gzip -1", "zstd data is corrupt"),  # a stream that is not zstd at all
], ids=["truncated", "not-zstd"])
def test_a_stream_that_does_not_decode_commits_nothing(pipe: str, expected: str, cluster: TempCluster,
                                                      tmp_path: Path) -> None:
    env = zstd_env(cluster, tmp_path, PG_BIN_DIR=str(wrapped_bin(tmp_path, pipe)))
    done = cli(env, "backup", "--physical")
    assert done.code != 0, done.output
    assert "does not decode" in done.output and expected in done.output, done.output
    assert "Traceback" not in done.output
    no_base_backup(env, tmp_path)


def test_container_mode_passes_the_compression_to_pg_basebackup(cluster: TempCluster, tmp_path: Path) -> None:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    shutil.copy(DATA / "fake-docker", bin_dir / "docker")
    log = tmp_path / "docker-calls.jsonl"
    env = {k: v for k, v in zstd_env(cluster, tmp_path, COMPRESSION_THREADS="2").items() if k != "PG_BIN_DIR"}
    env.update({"POSTGRES_CONTAINER": "db", "FAKE_DOCKER_LOG": str(log), "FAKE_DOCKER_PG_BIN": str(cluster.bin_dir),
                "FAKE_DOCKER_CONTAINER": "db"})
    done = cli(env, "backup", "--physical", path_prefix=str(bin_dir))
    assert done.code == 0, done.output
    argvs = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(env["POSTGRES_PASSWORD"] not in " ".join(a) for a in argvs)
    (base,) = [a for a in argvs if "pg_basebackup" in a and "--checkpoint=fast" in a]
    assert base[:2] == ["exec", "-i"] and "--compress=client-zstd:level=3,workers=2" in base
    (entry,) = cli(env, "list", "--json").json()
    assert entry["artifact"].endswith(".tar.zst")
    assert cli(env, "verify", entry["id"]).code == 0


def test_a_pg_basebackup_without_zstd_falls_back_to_the_tools_compressor(pg16: TempCluster, tmp_path: Path) -> None:
    """The PostgreSQL 16 wheel is built without zstd: the tool compresses, as before."""
    env = zstd_env(pg16, tmp_path)
    done = cli(env, "backup", "--physical")
    assert done.code == 0, done.output
    assert "compressed_by=sentinel" in done.output
    (entry,) = cli(env, "list", "--json").json()
    assert entry["artifact"].endswith(".tar.zst")
    assert cli(env, "verify", entry["id"]).code == 0


def test_by_default_the_tool_compresses_and_compares_byte_for_byte(cluster: TempCluster, tmp_path: Path) -> None:
    env = {k: v for k, v in zstd_env(cluster, tmp_path, LOG_LEVEL="DEBUG").items()
           if k != "PHYSICAL_ZSTD_BY_PG_BASEBACKUP"}  # the default: off (it would give up that comparison)
    done = cli(env, "backup", "--physical")
    assert done.code == 0, done.output
    assert "compressed_by=sentinel" in done.output and "--compress" not in done.output
    assert "In-stream verification passed" in done.output and "raw_kept_peak_bytes=0" not in done.output


def test_sigterm_mid_stream_stops_pg_basebackup_and_commits_nothing(cluster: TempCluster, tmp_path: Path) -> None:
    env = zstd_env(cluster, tmp_path, PG_BIN_DIR=str(slow_bin(tmp_path)))
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "PG"))}
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_backup", "backup", "--physical"],
                            env={**child_env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (_pg_basebackup_pid(cluster.port) and _streamed(cluster) > 100_000):
        time.sleep(0.05)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate()
    assert proc.returncode == 130, out + err
    assert _pg_basebackup_pid(cluster.port) is None and "Traceback" not in out + err
    no_base_backup(env, tmp_path)
