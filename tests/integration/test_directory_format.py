"""BACKUP_FORMAT=directory with PG_DUMP_JOBS: pg_dump -Fd -j N stored as one tar, against the real
PostgreSQL 15 (the 16 and 18 legs are in test_versions.py), real tar and age."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import assert_same_data, big_database, cli, load
from tests.plugins.s3 import WeedServer


def directory_env(base_env: dict[str, str], database: str, jobs: int = 2) -> dict[str, str]:
    return {**base_env, "POSTGRES_DB": database, "BACKUP_FORMAT": "directory", "PG_DUMP_JOBS": str(jobs)}


def leftovers(folder: Path) -> list[str]:
    """Temporary folders of directory dumps and restores, and partial files."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".sentinel-dump-", ".sentinel-restore-"))
                  or p.name.endswith(".partial"))


def only_backup(env: dict[str, str]) -> dict[str, Any]:
    [item] = cli(env, "list", "--json").json()
    assert isinstance(item, dict)
    return item


def test_directory_backup_roundtrip_with_two_jobs(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    load(pg, new_db, "complex.sql")
    env = directory_env(base_env, new_db)
    result = cli(env, "backup")
    assert result.code == 0, result.output
    folder = Path(env["BACKUP_DIR"])
    item = only_backup(env)
    artifact = folder / item["artifact"]
    assert artifact.name.endswith(".dir.tar") and artifact.name.startswith(f"sentinel_backup_{new_db}_")
    manifest = json.loads((folder / f"{item['artifact']}.manifest.json").read_text())
    assert manifest["format"] == "directory"
    assert manifest["compression"]["algorithm"] == "none"  # pg_dump compressed each file itself
    assert manifest["tables"]["app.everything"] == 1500
    assert leftovers(folder) == []
    # the real tar reads it: toc.dat first, then pg_dump's per-table files
    listing = subprocess.run(["tar", "-tf", str(artifact)], capture_output=True, text=True, check=True).stdout.split()
    assert listing[0] == "toc.dat" and any(name.endswith(".dat.gz") for name in listing)
    subprocess.run(["sha256sum", "-c", f"{artifact.name}.sha256"], cwd=folder, check=True, capture_output=True)
    # and so does pg_restore, from the folder tar extracts
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    subprocess.run(["tar", "-xf", str(artifact), "-C", str(extracted)], check=True)
    toc = subprocess.run([str(pg.bin_dir / "pg_restore"), "-l", str(extracted)], capture_output=True, text=True,
                         check=True).stdout
    assert "TABLE DATA app everything" in toc

    verified = cli(env, "verify", "latest")
    assert verified.code == 0, verified.output
    assert "tar end-of-archive present" in verified.stdout and "with toc.dat" in verified.stdout
    target = f"{new_db}_back"
    restored = cli(env, "restore", "latest", "--target-db", target, "--create", "--jobs", "2")
    assert restored.code == 0, restored.output
    try:
        assert_same_data(pg, new_db, target)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}", check=False)
    assert leftovers(folder) == []


def test_directory_backup_drill(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    load(pg, new_db, "complex.sql")
    env = directory_env(base_env, new_db)
    assert cli(env, "backup").code == 0
    item = only_backup(env)
    drill = cli(env, "verify", "latest", "--restore")
    assert drill.code == 0, drill.output
    record = json.loads((Path(env["BACKUP_DIR"]) / f"{item['artifact']}.drill.json").read_text())
    assert record["passed"] is True and record["tables_checked"] == 8 and record["differences"] == {}
    # a damaged manifest count makes the drill fail: it really compared
    path = Path(env["BACKUP_DIR"]) / f"{item['artifact']}.manifest.json"
    doc = json.loads(path.read_text())
    doc["tables"]["app.everything"] = 1499
    path.write_text(json.dumps(doc))
    assert cli(env, "verify", "latest", "--restore").code == 1
    assert leftovers(Path(env["BACKUP_DIR"])) == []


def test_truncated_directory_artifact_fails_verify(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    """verify decodes the tar: a copy cut at a member boundary (size and hash in the manifest
    rewritten to match) lacks the end-of-archive and is refused."""
    load(pg, new_db, "complex.sql")
    env = directory_env(base_env, new_db)
    assert cli(env, "backup").code == 0
    item = only_backup(env)
    folder = Path(env["BACKUP_DIR"])
    artifact = folder / item["artifact"]
    data = artifact.read_bytes()
    with tarfile.open(artifact) as archive:
        last = archive.getmembers()[-1]
    cut = data[:last.offset]  # everything before the last member's header
    artifact.write_bytes(cut)
    import hashlib

    path = folder / f"{item['artifact']}.manifest.json"
    doc = json.loads(path.read_text())
    digest = hashlib.sha256(cut).hexdigest()
    doc.update(size_bytes=len(cut), sha256=digest, raw_size_bytes=len(cut), raw_sha256=digest)
    path.write_text(json.dumps(doc))
    (folder / f"{item['artifact']}.sha256").unlink()
    result = cli(env, "verify", "latest")
    assert result.code == 1, result.output
    assert "end-of-archive missing" in result.stdout
    restored = cli(env, "restore", "latest", "--target-db", f"{new_db}_cut", "--create")
    assert restored.code == 1 and "end-of-archive" in restored.output
    assert leftovers(folder) == []


def test_age_encrypted_directory_backup_is_read_by_age_and_tar(pg: TempCluster, new_db: str,
                                                               base_env: dict[str, str], tmp_path: Path) -> None:
    load(pg, new_db, "complex.sql")
    identity = tmp_path / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, check=True)
    public = subprocess.run(["age-keygen", "-y", str(identity)], capture_output=True, text=True,
                            check=True).stdout.strip()
    env = {**directory_env(base_env, new_db), "ENCRYPT_ENABLED": "true", "ENCRYPTION_METHOD": "age",
           "AGE_RECIPIENTS": public, "AGE_IDENTITY_FILE": str(identity)}
    assert cli(env, "backup").code == 0
    item = only_backup(env)
    artifact = Path(env["BACKUP_DIR"]) / item["artifact"]
    assert artifact.name.endswith(".dir.tar.age")
    age = subprocess.Popen(["age", "-d", "-i", str(identity), str(artifact)], stdout=subprocess.PIPE)
    listing = subprocess.run(["tar", "-t"], stdin=age.stdout, capture_output=True, text=True, check=True).stdout
    assert age.wait() == 0
    names = listing.split()
    assert names[0] == "toc.dat" and len(names) > 3
    target = f"{new_db}_age"
    restored = cli(env, "restore", "latest", "--target-db", target, "--create", "--jobs", "2")
    assert restored.code == 0, restored.output
    try:
        assert_same_data(pg, new_db, target)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}", check=False)


def test_directory_backup_to_local_and_s3_in_one_pass_restored_from_s3(
        pg: TempCluster, new_db: str, base_env: dict[str, str], s3_server: WeedServer, s3_bucket: str,
        tmp_path: Path) -> None:
    load(pg, new_db, "complex.sql")
    env = {**directory_env(base_env, new_db), **s3_server.s3_env(s3_bucket, "dir"),
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"), "AWS_EC2_METADATA_DISABLED": "true"}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    item = only_backup(env)
    assert item["destinations"] == ["local", "s3"]
    local = (Path(env["BACKUP_DIR"]) / item["artifact"]).read_bytes()
    remote = s3_server.client().get_object(Bucket=s3_bucket, Key=f"dir/{item['artifact']}")["Body"].read()
    assert remote == local  # one tar stream, the same bytes on every destination
    assert cli(env, "verify", "latest", "--destination", "s3").code == 0
    target = f"{new_db}_s3"
    restored = cli(env, "restore", "latest", "--from", "s3", "--target-db", target, "--create", "--jobs", "2")
    assert restored.code == 0, restored.output
    try:
        assert_same_data(pg, new_db, target)
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}", check=False)
    assert leftovers(Path(env["BACKUP_DIR"])) == []


def _children(parent: int, name: str = "pg_dump") -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent), "-x", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill-worker", "sigterm"])
def test_killed_pg_dump_worker_commits_nothing_and_leaves_no_temp_folder(pg: TempCluster, new_db: str,
                                                                          base_env: dict[str, str], how: str) -> None:
    """SIGKILL of one pg_dump -j worker: exit 1; SIGTERM to the run while the workers copy: exit 130.
    Either way nothing is committed and the temporary folder is gone."""
    for table in ("big1", "big2"):
        pg.psql(f"CREATE TABLE {table} AS SELECT g AS id, md5(g::text) || repeat('x', 200) AS v"
                " FROM generate_series(1, 800000) g", new_db)
    env = directory_env(base_env, new_db)
    proc = subprocess.Popen([sys.executable, "-m", "sentinel_backup", "backup"], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = Path(env["BACKUP_DIR"])
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 120
        while not workers:  # wait until the -j workers are copying table data
            assert proc.poll() is None, f"the backup ended before a worker was seen: {proc.communicate()}"
            assert time.monotonic() < deadline, "no pg_dump worker was ever seen copying"
            copying = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sentinel-backup'"
                              " AND query ILIKE 'COPY%'")
            leaders = _children(proc.pid)
            if copying != "0" and leaders:
                workers = _children(leaders[0])
            time.sleep(0.02)
        assert leftovers(folder), "pg_dump writes into a temporary folder in BACKUP_DIR"
        if how == "kill-worker":
            os.kill(workers[0], 9)
        else:
            proc.send_signal(15)
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if how == "kill-worker":
        assert proc.returncode == 1, output
        assert "pg_dump failed" in output
    else:
        assert proc.returncode == 130, output
        assert "nothing of it was committed" in output
    assert leftovers(folder) == []
    assert [p.name for p in folder.iterdir() if p.name.startswith("sentinel_")] == []
    assert cli(env, "list", "--json").json() == []


def test_directory_settings_are_checked(base_env: dict[str, str]) -> None:
    jobs = cli({**base_env, "POSTGRES_DB": "x", "PG_DUMP_JOBS": "2"}, "backup")
    assert jobs.code == 2 and "PG_DUMP_JOBS=2 needs BACKUP_FORMAT=directory" in jobs.stderr
    assert "Traceback" not in jobs.output
    container = cli({**base_env, "POSTGRES_DB": "x", "BACKUP_FORMAT": "directory", "POSTGRES_CONTAINER": "db"},
                    "backup")
    assert container.code == 2 and "POSTGRES_CONTAINER" in container.stderr


def test_a_full_temp_dir_is_reported_as_such(pg: TempCluster, base_env: dict[str, str], tmp_path: Path) -> None:
    """TEMP_DIR on a real 1 MiB tmpfs: pg_dump's folder does not fit; the message names TEMP_DIR and
    its free space, nothing is committed, no folder is left."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    database = big_database(pg, "t_dir_full", 100_000)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(small)], check=True)
    try:
        env = {**directory_env(base_env, database), "TEMP_DIR": str(small)}
        result = cli(env, "backup")
        assert result.code == 1, result.output
        assert "No space left on device" in result.output and f"TEMP_DIR {small}" in result.output
        assert "bytes free" in result.output and "Traceback" not in result.output
        assert leftovers(small) == [] and list(small.iterdir()) == []
        assert cli(env, "list", "--json").json() == []
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
        pg.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)", check=False)


def test_the_directory_dump_runs_in_the_snapshot_the_facts_were_read_in(pg: TempCluster, new_db: str,
                                                                         base_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    """Rows committed after the snapshot was exported, just before pg_dump -Fd -j 2 starts (a pg_dump
    wrapper inserts them), are neither counted nor dumped: the drill and the restore agree with the
    manifest. Without --snapshot the jobs would dump them and the drill would fail."""
    pg.psql("CREATE TABLE a AS SELECT g AS id FROM generate_series(1, 1000) g;"
            " CREATE TABLE b AS SELECT g AS id FROM generate_series(1, 500) g", new_db)
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("psql", "pg_restore", "pg_dumpall"):
        (tools / name).symlink_to(pg.bin_dir / name)
    (tools / "pg_dump").write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" -j "*) "{pg.bin_dir}/psql" -X -q -h 127.0.0.1 -p {pg.port} -U {pg.user}'
        f' -d {new_db} -c "INSERT INTO a SELECT g FROM generate_series(1001, 1300) g;'
        ' INSERT INTO b SELECT g FROM generate_series(501, 600) g" ;; esac\n'
        f'exec "{pg.bin_dir}/pg_dump" "$@"\n')
    (tools / "pg_dump").chmod(0o755)
    env = {**directory_env(base_env, new_db), "PG_BIN_DIR": str(tools)}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    assert pg.psql("SELECT count(*) FROM a", new_db) == "1300"  # the wrapper did insert, after the snapshot
    item = only_backup(env)
    manifest = json.loads((Path(env["BACKUP_DIR"]) / f"{item['artifact']}.manifest.json").read_text())
    assert manifest["tables"] == {"public.a": 1000, "public.b": 500}
    drill = cli(env, "verify", "latest", "--restore")
    assert drill.code == 0, drill.output
    target = f"{new_db}_snap"
    restored = cli(env, "restore", "latest", "--target-db", target, "--create", "--jobs", "2")
    assert restored.code == 0, restored.output
    try:
        assert pg.psql("SELECT (SELECT count(*) FROM a) || ',' || (SELECT count(*) FROM b)", target) == "1000,500"
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {target}", check=False)
