"""Settings end to end with the real program: secret files readable by others are refused, AWS
credentials work from the .env (the environment still wins), misspelled variables are warned
about with the nearest known name, empty values mean the default, files and folders the tool
creates are private, and a good run's last log line is `Backup process completed`."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import Result, cli
from tests.plugins.s3 import WeedServer

AWS_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION",
             "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@pytest.fixture
def db(pg: TempCluster, new_db: str) -> str:
    pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", new_db)
    return new_db


@pytest.fixture
def env(base_env: dict[str, str], db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The session cluster, and no AWS credentials, profile or instance role from this machine."""
    for name in AWS_NAMES:
        monkeypatch.delenv(name, raising=False)
    return {**base_env, "POSTGRES_DB": db, "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"), "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """The child inherits umask 0: only the tool's own modes keep its files private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_json(result: Result) -> dict[str, dict[str, Any]]:
    doc = json.loads(result.stdout)
    assert doc["status"] == {0: "ok", 4: "warning", 1: "critical"}[result.code], result.output
    return {item["name"]: item for item in doc["checks"]}


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return path


# --- item 6: secret files readable by others -------------------------------------------------------
@pytest.mark.parametrize("variable", ["POSTGRES_PASSWORD_FILE", "MINIO_SECRET_KEY_FILE"])
def test_secret_files_readable_by_others_are_refused(env: dict[str, str], tmp_path: Path, variable: str) -> None:
    secret = tmp_path / "secret.txt"
    password = env.pop("POSTGRES_PASSWORD")  # the cluster's password: from the file only
    secret.write_text(f"{password}\n" if variable == "POSTGRES_PASSWORD_FILE" else "hunter2-secret\n")
    secret.chmod(0o644)
    env = {**env, variable: str(secret)} if variable == "POSTGRES_PASSWORD_FILE" else \
        {**env, "POSTGRES_PASSWORD": password, variable: str(secret)}
    if variable == "MINIO_SECRET_KEY_FILE":
        env.update(MINIO_ENABLED="true", MINIO_ENDPOINT="http://127.0.0.1:9", MINIO_BUCKET="backups",
                   MINIO_ACCESS_KEY="sentinel")
    result = cli(env, "backup")
    assert result.code == 2, result.output
    assert f"{variable}: {secret} is readable by group or others (mode 644)" in result.stderr
    assert f"HINT: run: chmod 600 {secret}" in result.stderr
    assert "Traceback" not in result.output and "hunter2-secret" not in result.output and password not in result.output
    assert not list(Path(env["BACKUP_DIR"]).glob("sentinel_backup_*"))

    secret.chmod(0o600)
    if variable == "POSTGRES_PASSWORD_FILE":  # the same file, private, is accepted and used
        assert cli(env, "backup").code == 0


# --- item 7: AWS credentials in the .env -----------------------------------------------------------
def s3_keys(server: WeedServer, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_aws_credentials_from_the_env_file(env: dict[str, str], tmp_path: Path, s3_server: WeedServer,
                                           s3_bucket: str) -> None:
    s3 = s3_server.s3_env(s3_bucket, "pg")
    dotenv = write_env_file(tmp_path / "aws.env", {
        "S3_ENABLED": "true", "S3_BUCKET": s3["S3_BUCKET"],
        "AWS_ENDPOINT_URL": s3_server.endpoint,  # the SDK's own variables only: no S3_ENDPOINT_URL/S3_REGION
        "AWS_DEFAULT_REGION": s3_server.region,
        "AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key})
    result = cli(env, "--env-file", str(dotenv), "backup")
    assert result.code == 0, result.output
    assert "no credentials" not in result.output and s3_server.secret_key not in result.output
    artifacts = [k for k in s3_keys(s3_server, s3_bucket) if k.endswith(".sql.gz")]
    assert len(artifacts) == 1 and artifacts[0].startswith("pg/sentinel_backup_")
    assert {artifacts[0] + ".sha256", artifacts[0] + ".manifest.json"} <= set(s3_keys(s3_server, s3_bucket))
    listed = cli(env, "--env-file", str(dotenv), "list", "--json", "--destination", "s3")
    assert listed.code == 0 and len(json.loads(listed.stdout)) == 1, listed.output

    # the process environment wins over the .env: a wrong secret there breaks the s3 copy ...
    wrong = cli({**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}, "--env-file", str(dotenv), "backup")
    assert wrong.code == 3, wrong.output
    assert "s3" in wrong.output and "not-the-secret" not in wrong.output
    # ... and the right keys there repair a wrong .env
    dotenv.write_text(dotenv.read_text().replace(s3_server.secret_key, "stale-secret-in-dotenv"))
    assert cli(env, "--env-file", str(dotenv), "backup").code == 3
    right = cli({**env, "AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key},
                "--env-file", str(dotenv), "backup")
    assert right.code == 0, right.output
    # the first and the last run stored a copy; the two refused ones left nothing
    assert len([k for k in s3_keys(s3_server, s3_bucket) if k.endswith(".sql.gz")]) == 2


# --- item 9: misspelled variables, empty values ----------------------------------------------------
def test_misspelled_variables_are_warned_about_and_empty_means_default(env: dict[str, str], tmp_path: Path) -> None:
    dotenv = write_env_file(tmp_path / "typos.env", {
        "RETENTON_DAYS": "3", "BACKUP_FROMAT": "custom", "POSTGRES_PASWORD": "x", "LOG_LEVEL": "", "TZ": "UTC",
        "PGAPPNAME": "x"})
    env = {**env, "LOG_LEVEL": "", "RETENTION_KEEP_LASST": "2"}  # empty in the environment too
    result = cli(env, "--env-file", str(dotenv), "backup")
    assert result.code == 0, result.output  # LOG_LEVEL= is the default (INFO), not an error
    warns = [line for line in result.stdout.splitlines() if "[WARN]" in line]
    text = "\n".join(warns)
    assert "unknown variable RETENTON_DAYS in the .env file (did you mean RETENTION_DAYS?)" in text
    assert "unknown variable BACKUP_FROMAT in the .env file (did you mean BACKUP_FORMAT?)" in text
    assert "unknown variable POSTGRES_PASWORD in the .env file (did you mean POSTGRES_PASSWORD?)" in text
    assert "unknown variable RETENTION_KEEP_LASST in the environment (did you mean RETENTION_KEEP_LAST?)" in text
    assert "TZ" not in text and "unknown variable PGAPPNAME" not in text
    assert "[INFO] Backup process completed" in result.stdout  # INFO lines: the default level

    checked = cli(env, "--env-file", str(dotenv), "check", "--json")
    assert checked.code == 4, checked.output
    configuration = check_json(checked)["configuration"]
    assert configuration["status"] == "warning"
    assert "did you mean RETENTION_DAYS?" in configuration["detail"]
    assert "did you mean BACKUP_FORMAT?" in configuration["detail"]


# --- item 10: private files, BACKUP_DIR, last-run record, the last log line ------------------------
def test_created_files_are_private_and_existing_modes_kept(env: dict[str, str], tmp_path: Path,
                                                           umask_zero: None) -> None:
    log_file = tmp_path / "logs" / "deep" / "sentinel.log"
    metrics = tmp_path / "metrics.prom"
    env = {**env, "LOG_FILE": str(log_file), "METRICS_FILE": str(metrics)}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    record = Path(env["BACKUP_DIR"]) / ".sentinel-last-run.json"
    assert [mode(p) for p in (log_file, metrics, record)] == [0o600, 0o600, 0o600]
    assert mode(log_file.parent) == 0o700 and mode(log_file.parent.parent) == 0o700
    assert mode(Path(env["BACKUP_DIR"])) == 0o700

    metrics.chmod(0o644)  # made readable for node_exporter: the user's choice stays
    record.chmod(0o640)
    assert cli(env, "backup").code == 0
    assert mode(metrics) == 0o644 and mode(record) == 0o640 and mode(log_file) == 0o600


def test_backup_dir_readable_by_others_is_warned_about(env: dict[str, str]) -> None:
    folder = Path(env["BACKUP_DIR"])
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    result = cli(env, "backup")
    assert result.code == 0, result.output
    assert f"BACKUP_DIR {folder} is readable by group or others (mode 755)" in result.stdout
    assert f"chmod 700 {folder}" in result.stdout
    checked = cli(env, "check", "--json")
    assert checked.code == 4, checked.output
    local = check_json(checked)["destination local"]
    assert local["status"] == "warning" and "mode 755" in local["detail"]


@pytest.mark.parametrize(("damage", "said"), [("empty", "last-run record is empty"),
                                              ("unreadable", "last-run record is unreadable"),
                                              ("no status", "last-run record has no status or finish time")])
def test_check_names_an_empty_or_unreadable_last_run_record(env: dict[str, str], damage: str, said: str) -> None:
    assert cli(env, "backup").code == 0
    record = Path(env["BACKUP_DIR"]) / ".sentinel-last-run.json"
    if damage == "empty":
        record.write_text("")
    elif damage == "unreadable":
        record.unlink()
        record.mkdir()  # reading fails even as root
    else:
        record.write_text("{}")
    result = cli(env, "check")
    assert result.code == 4, result.output
    [line] = [line for line in result.stdout.splitlines() if "last run" in line]
    assert line.startswith("WARNING") and "None" not in line
    assert said in line and str(record) in line


def test_backup_process_completed_is_the_last_line_of_a_good_run(env: dict[str, str], tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    env = {**env, "LOG_FILE": str(log_file), "RETENTION_KEEP_LAST": "1"}
    assert cli(env, "backup").code == 0
    result = cli(env, "backup")  # retention removes the first backup after this one
    assert result.code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert any("[INFO] Removed " in line for line in lines), result.stdout
    assert "[INFO] Backup process completed status=ok" in lines[-1]
    assert "Backup process completed" in log_file.read_text().splitlines()[-1]
