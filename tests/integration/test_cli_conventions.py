"""Command-line conventions, on the real program: --version/-V, -h, global options after the
command, --quiet for cron, shell completion, usage errors (exit 2) for unknown ids and
destinations, tables and prune summaries a person can read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sentinel_backup import __version__
from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import cli

USAGE = 2


def test_version_and_short_help(tmp_path: Path) -> None:
    for flag in ("--version", "-V"):
        result = cli({"CWD": str(tmp_path)}, flag)
        assert result.code == 0, result.output
        assert result.stdout.startswith(f"sentinel-backup {__version__} (Python ")
    root = cli({"CWD": str(tmp_path)}, "-h")
    assert root.code == 0 and "Commands:" in root.stdout and "--install-completion" in root.stdout
    sub = cli({"CWD": str(tmp_path)}, "list", "-h")
    assert sub.code == 0 and "--env-file" in sub.stdout and "--quiet" in sub.stdout


def test_shell_completion_completes_commands_and_options(tmp_path: Path) -> None:
    env = {**os.environ, "_SENTINEL_BACKUP_COMPLETE": "complete_bash", "COMP_WORDS": "sentinel-backup li",
           "COMP_CWORD": "1"}
    program = str(Path(sys.executable).parent / "sentinel-backup")
    out = subprocess.run([program], env=env, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert out.stdout.split() == ["list"], out
    env.update(COMP_WORDS="sentinel-backup restore --target-d", COMP_CWORD="2")  # --target-time etc. exist too
    out = subprocess.run([program], env=env, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert out.stdout.split() == ["--target-db"], out


def _backup(pg: TempCluster, db: str, env: dict[str, str]) -> None:
    pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", db)
    result = cli(env, "backup")
    assert result.code == 0, result.output


def test_global_options_after_the_command(pg: TempCluster, new_db: str, base_env: dict[str, str],
                                          tmp_path: Path) -> None:
    env = {**base_env, "POSTGRES_DB": new_db}
    _backup(pg, new_db, env)
    env_file = tmp_path / "other.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    bare = {"CWD": str(tmp_path)}  # no settings in the environment: only the file has them
    for args in (["--env-file", str(env_file), "list"], ["list", "--env-file", str(env_file)]):
        result = cli(bare, *args)
        assert result.code == 0, result.output
        assert f"{new_db}_" in result.stdout
    assert cli(bare, "list").code == USAGE  # and without it, nothing is configured


def test_quiet_prints_nothing_on_success_but_the_log_file_has_it(pg: TempCluster, new_db: str,
                                                                 base_env: dict[str, str], tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    env = {**base_env, "POSTGRES_DB": new_db, "LOG_FILE": str(log_file)}
    pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", new_db)
    for args in (["--quiet", "backup"], ["backup", "-q"]):
        result = cli(env, *args)
        assert result.code == 0, result.output
        assert result.stdout == "" and result.stderr == ""  # cron mails nothing
    assert log_file.read_text().count("Backup process completed") == 2
    loud = cli(env, "backup", "--no-progress")
    assert loud.code == 0 and "Backup process completed" in loud.stdout
    # a warning still shows: BACKUP_DIR readable by others
    Path(env["BACKUP_DIR"]).chmod(0o755)
    warned = cli(env, "backup", "--quiet")
    assert warned.code == 0 and "[WARN] BACKUP_DIR" in warned.stderr, warned.output
    assert "Backup process completed" not in warned.output
    Path(env["BACKUP_DIR"]).chmod(0o700)

    # a command's result lines show only when it fails
    verified = cli(env, "verify", "latest", "--quiet")
    assert verified.code == 0 and verified.output == "", verified.output
    assert "local: sha256" in cli(env, "verify", "latest").stdout
    [artifact] = [p for p in sorted(Path(env["BACKUP_DIR"]).glob("*.sql.gz"))][-1:]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    broken = cli(env, "verify", "latest", "-q")
    assert broken.code == 1 and "FAILED" in broken.stdout, broken.output


def test_unknown_ids_and_destinations_are_usage_errors(pg: TempCluster, new_db: str,
                                                       base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": new_db}
    _backup(pg, new_db, env)
    for args in (["verify", "nosuch_20260101T000000Z"], ["restore", "nosuch", "--target-db", "x", "--create"],
                 ["list", "--destination", "tape"], ["verify", "latest", "--destination", "tape"],
                 ["restore", "latest", "--target-db", "x", "--create", "--from", "tape"],
                 ["list", "--destination", "s3"]):  # s3 is not configured
        result = cli(env, *args)
        assert result.code == USAGE, (args, result.output)
        assert result.stderr.startswith("ERROR: "), result.output
    assert cli(env, "verify", "latest", "--destination", "LOCAL").code == 0


def test_list_is_a_table_that_keeps_long_names_whole(pg: TempCluster, base_env: dict[str, str]) -> None:
    long_name = "a_database_with_a_rather_long_name_for_the_table_" + "x" * 10
    pg.psql(f"CREATE DATABASE {long_name}")
    try:
        env = {**base_env, "POSTGRES_DB": long_name}
        _backup(pg, long_name, env)
        result = cli(env, "list")
        assert result.code == 0, result.output
        lines = result.stdout.splitlines()
        header = next(line for line in lines if line.startswith("ID"))
        row = next(line for line in lines if long_name in line)
        for column in ("CREATED (UTC)", "SIZE", "RAW", "ENC", "DRILL", "DESTINATIONS"):
            assert column in header
        assert row.index("local") == header.index("DESTINATIONS")  # aligned, however long the id
    finally:
        pg.psql(f"DROP DATABASE IF EXISTS {long_name} WITH (FORCE)", check=False)


def test_prune_prints_words_not_a_dict(pg: TempCluster, new_db: str, base_env: dict[str, str]) -> None:
    env = {**base_env, "POSTGRES_DB": new_db, "RETENTION_DAYS": "0", "RETENTION_KEEP_LAST": "1",
           "RETENTION_AFTER_BACKUP": "false"}
    _backup(pg, new_db, env)
    time.sleep(1.1)  # ids are stamped to the second
    assert cli(env, "backup").code == 0
    dry = cli(env, "prune", "--dry-run")
    assert dry.code == 0, dry.output
    assert "{" not in dry.stdout and "=> keep 1, would remove 1" in dry.stdout
    lines = dry.stdout.splitlines()
    header = next(line for line in lines if "ACTION" in line)
    rows = [line for line in lines if line.lstrip().startswith(("keep ", "REMOVE "))]
    assert len(rows) == 2 and all(row.index(new_db) == header.index("ID") for row in rows), dry.stdout
    real = cli(env, "prune")
    assert "=> keep 1, removed 1, locked 0, errors 0" in real.stdout, real.output
