"""Many servers, one storage (SERVER_NAME, --env-dir): two real PostgreSQL servers, each with a
`postgres` database of its own, backed up into one SeaweedFS bucket and one local folder.
They are listed apart, retention of one never touches the other's backups, a backup of
either is restored (shown, verified) by its id from the other's configuration and brings back
its own server's rows; metrics carry the server label and pass promtool. --env-dir runs every
server's file, and a broken one does not stop the others."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import Result, cli, promtool_check
from tests.integration.test_schedule_e2e import SHIFTED
from tests.plugins.s3 import WeedServer

ROWS = {"db1": 3, "db2": 5}  # each server's postgres database: this many marker rows naming it
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+Z \[(DEBUG|INFO|WARN|ERROR)\] ")


@pytest.fixture(scope="module")
def clusters() -> Iterator[dict[str, TempCluster]]:
    with TempCluster() as one, TempCluster() as two:
        for name, cluster in (("db1", one), ("db2", two)):
            cluster.psql(f"CREATE TABLE marker (server text, n int); INSERT INTO marker SELECT '{name}', g"
                         f" FROM generate_series(1, {ROWS[name]}) g")
        yield {"db1": one, "db2": two}


@pytest.fixture
def envs(clusters: dict[str, TempCluster], base_env: dict[str, str], s3_server: WeedServer, s3_bucket: str,
         tmp_path: Path) -> dict[str, dict[str, str]]:
    """Both servers' settings: one BACKUP_DIR, one bucket, one METRICS_FILE; no retention rule."""
    shared = {k: v for k, v in base_env.items() if not k.startswith(("POSTGRES_", "PG_BIN"))}
    shared.update(s3_server.s3_env(s3_bucket), POSTGRES_DB="postgres", MIN_BACKUP_SIZE="0",
                  METRICS_FILE=str(tmp_path / "sentinel.prom"), AWS_CONFIG_FILE=str(tmp_path / "none"),
                  AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                  AWS_EC2_METADATA_DISABLED="true")
    return {name: {**shared, **cluster.env(), "SERVER_NAME": name} for name, cluster in clusters.items()}


def ok(result: Result) -> Result:
    assert result.code == 0, result.output
    return result


def listed(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    result = ok(cli(env, "list", "--json", *args))
    doc: list[dict[str, Any]] = json.loads("\n".join(line for line in result.stdout.splitlines()
                                                     if not _LOG_LINE.match(line)))
    return doc


def bucket_keys(server: WeedServer, bucket: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def markers(cluster: TempCluster, database: str) -> str:
    return cluster.psql("SELECT server || ':' || count(*) FROM marker GROUP BY server", database)


def test_two_servers_share_a_bucket_and_a_folder_without_mixing(
        clusters: dict[str, TempCluster], envs: dict[str, dict[str, str]], s3_server: WeedServer,
        s3_bucket: str) -> None:
    one, two = envs["db1"], envs["db2"]
    for env in (one, one, two, two):
        ok(cli(env, "backup"))
    mine, theirs = listed(one), listed(two)
    assert [b["server"] for b in mine] == ["db1", "db1"] and [b["server"] for b in theirs] == ["db2", "db2"]
    assert all(b["id"].startswith("db1/postgres_") and b["database"] == "postgres" for b in mine)
    assert {b["id"] for b in listed(one, "--server", "all")} == {b["id"] for b in mine + theirs}
    assert [b["id"] for b in listed(one, "--server", "db2")] == [b["id"] for b in theirs]
    assert listed(one, "--server", "-") == []  # nothing written without SERVER_NAME
    table = ok(cli(one, "list", "--server", "all")).stdout
    assert "SERVER" in table and "db2/postgres_" in table
    keys = bucket_keys(s3_server, s3_bucket)
    assert keys and all(k.startswith(("servers/db1/sentinel_backup_postgres_", "servers/db2/sentinel_backup_postgres_"))
                        for k in keys)
    folder = Path(one["BACKUP_DIR"])
    assert len(list((folder / "servers" / "db1").glob("*.sql.gz"))) == 2
    assert len(list((folder / "servers" / "db2").glob("*.sql.gz"))) == 2
    manifest = json.loads((folder / (mine[0]["artifact"] + ".manifest.json")).read_text())
    assert manifest["server"] == "db1" and manifest["id"] == mine[0]["id"]

    # `latest` is this server's own, though the other server's backups are newer
    shown = json.loads(ok(cli(one, "show", "latest", "--json")).stdout)
    assert shown["id"] == mine[0]["id"]
    # retention of db1 (keep the newest 1) never touches db2's two backups, in the bucket or the folder
    pruned = ok(cli({**one, "RETENTION_KEEP_LAST": "1"}, "prune"))
    assert mine[1]["id"] in pruned.stdout and theirs[1]["id"] not in pruned.stdout
    assert [b["id"] for b in listed(one)] == [mine[0]["id"]]
    assert [b["id"] for b in listed(two)] == [b["id"] for b in theirs]
    assert sorted(b["destinations"] == ["local", "s3"] for b in listed(two)) == [True, True]

    # each restore brings back its own server's rows; the other server's backup by its id, from the bucket
    ok(cli(one, "restore", "latest", "--target-db", "mine", "--create"))
    assert markers(clusters["db1"], "mine") == "db1:3"
    ok(cli(one, "verify", theirs[0]["id"]))
    assert re.search(r"server name\s+db2\b", ok(cli(one, "show", theirs[0]["id"])).stdout)
    ok(cli(one, "restore", theirs[0]["id"], "--target-db", "theirs", "--create", "--from", "s3"))
    assert markers(clusters["db1"], "theirs") == "db2:5"
    ok(cli(two, "restore", "latest", "--target-db", "own", "--create"))
    assert markers(clusters["db2"], "own") == "db2:5"

    # one metrics file, both servers' series apart, accepted by Prometheus' own lint
    text = Path(one["METRICS_FILE"]).read_bytes()
    for name in ("db1", "db2"):
        assert (f'sentinel_backup_last_success_timestamp_seconds{{database="postgres",kind="database",'
                f'server="{name}"}}').encode() in text
        assert f'sentinel_backup_destination_backups{{destination="s3",server="{name}"}}'.encode() in text
    promtool_check(text)


def test_unnamed_and_named_backups_side_by_side(envs: dict[str, dict[str, str]], clusters: dict[str, TempCluster]
                                                ) -> None:
    """Backups written without SERVER_NAME stay at the root, listed, restorable and pruned by
    the unnamed configuration only."""
    unnamed = {k: v for k, v in envs["db2"].items() if k != "SERVER_NAME"}
    for env in (unnamed, unnamed, envs["db2"]):
        ok(cli(env, "backup"))
    old = listed(unnamed)
    assert [b["server"] for b in old] == ["", ""] and all("/" not in b["id"] for b in old)
    assert [b["server"] or "-" for b in listed(envs["db2"], "--server", "all")] == ["db2", "-", "-"]
    ok(cli({**envs["db2"], "RETENTION_KEEP_LAST": "1"}, "prune"))
    assert [b["id"] for b in listed(unnamed)] == [b["id"] for b in old]  # the named server left them alone
    plan = ok(cli({**envs["db2"], "RETENTION_KEEP_LAST": "1"}, "prune", "--server", "-", "--dry-run"))
    assert f"Would remove {old[1]['id']} from local" in plan.stdout  # this configuration's rules, the unnamed backups
    ok(cli({**unnamed, "RETENTION_KEEP_LAST": "1"}, "prune"))
    assert [b["id"] for b in listed(unnamed)] == [old[0]["id"]]
    assert len(listed(envs["db2"])) == 1
    ok(cli(envs["db1"], "restore", old[0]["id"], "--target-db", "from_root", "--create"))
    assert markers(clusters["db1"], "from_root") == "db2:5"


def write_env(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def test_env_dir_runs_every_server_and_a_broken_one_does_not_stop_the_others(
        envs: dict[str, dict[str, str]], tmp_path: Path) -> None:
    folder = tmp_path / "servers.d"
    folder.mkdir()
    per_server = ("POSTGRES_", "PG_BIN", "SERVER_NAME", "BACKUP_DIR", "S3_", "AWS_", "METRICS_FILE")
    process = {k: v for k, v in envs["db1"].items() if not k.startswith(per_server)}
    for name, env in envs.items():  # each file: its server's own settings; SERVER_NAME from the file name
        write_env(folder / f"{name}.env", {k: v for k, v in env.items() if k.startswith(per_server)
                                           and k != "SERVER_NAME"})
    write_env(folder / "a-broken.env", {**{k: v for k, v in envs["db1"].items() if k.startswith(per_server)
                                           and k != "SERVER_NAME"}, "POSTGRES_PORT": "not-a-port"})
    (folder / "notes.txt").write_text("not a server")

    result = cli(process, "backup", "--env-dir", str(folder))
    assert result.code == 2, result.output  # the worst: a configuration error
    assert re.search(r"=== server a-broken \(a-broken.env\) ===", result.stdout)
    assert "POSTGRES_PORT" in result.stderr and "Traceback" not in result.output
    assert "=== 3 server(s): a-broken exit 2, db1 exit 0, db2 exit 0" in result.stdout
    for name in ("db1", "db2"):  # every log line names its server (one LOG_FILE may hold them all)
        assert re.search(rf"\[INFO\] Backup process completed .* server={name}$", result.stdout, re.MULTILINE)
    for name in ("db1", "db2"):
        [backup] = listed(envs[name])
        assert backup["server"] == name  # the file's name
    grouped = json.loads(cli(process, "list", "--json", "--env-dir", str(folder)).stdout)
    assert grouped["a-broken"]["exit_code"] == 2 and grouped["a-broken"]["result"] is None
    assert [b["server"] for b in grouped["db2"]["result"]] == ["db2"]
    assert cli(process, "list", "--env-dir", str(folder / "missing")).code == 2
    (folder / "a-broken.env").unlink()
    drilled = ok(cli(process, "drill", "--env-dir", str(folder)))  # each server's newest backup, restored and counted
    for name in ("db1", "db2"):
        heading = rf"=== server {name} \({name}.env\) ===\n"
        assert re.search(heading + rf"(.*\n)*?Drill of {name}/postgres_\S+ from \S+: PASSED", drilled.stdout), \
            drilled.stdout
    checked = cli({**process, "SENTINEL_ENV_DIR": str(folder)}, "check")  # the variable does what --env-dir does
    assert checked.code in (0, 4), checked.output  # ok, or a warning (no drill yet, say): never critical
    assert "=== server db1 (db1.env) ===" in checked.stdout and "=== server db2 (db2.env) ===" in checked.stdout

    refused = cli(process, "restore", "latest", "--target-db", "x", "--env-dir", str(folder))
    assert refused.code == 2 and "--env-file" in refused.stderr and "Traceback" not in refused.output
    write_env(folder / "copy.env", {"SERVER_NAME": "db1", "POSTGRES_USER": "u", "POSTGRES_DB": "x",
                                    "BACKUP_DIR": str(tmp_path)})
    clash = cli(process, "list", "--env-dir", str(folder))
    assert clash.code == 2 and "both server 'db1'" in clash.stderr


def test_one_scheduler_runs_every_servers_jobs(envs: dict[str, dict[str, str]], tmp_path: Path) -> None:
    """`schedule --env-dir`: one real scheduler process backs up both servers, each under its own
    name and settings (its clock shifted so the first minute boundary is a second away); a broken
    file stops it from starting, naming the file."""
    folder = tmp_path / "servers.d"
    folder.mkdir()
    per_server = ("POSTGRES_", "PG_BIN", "SERVER_NAME", "BACKUP_DIR", "S3_", "AWS_", "METRICS_FILE")
    process = {k: v for k, v in envs["db1"].items() if not k.startswith(per_server)}
    for name, env in envs.items():
        write_env(folder / f"{name}.env", {**{k: v for k, v in env.items() if k.startswith(per_server)},
                                           "BACKUP_SCHEDULE": "* * * * *"})
    child = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "PG", "SERVER_NAME"))}
    child.update(process)
    script = SHIFTED.replace('sys.argv = ["sentinel-backup", "schedule"]',
                             f'sys.argv = ["sentinel-backup", "schedule", "--env-dir", {str(folder)!r}]')
    scheduler = subprocess.Popen([sys.executable, "-c", script], env=child, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300  # a safety net against a hang, not a timing check
        while time.monotonic() < deadline and not all(listed(envs[name]) for name in envs):
            assert scheduler.poll() is None, scheduler.communicate()[0]
            time.sleep(0.5)
    finally:
        scheduler.send_signal(signal.SIGTERM)
        output = scheduler.communicate(timeout=120)[0]
    assert scheduler.returncode == 0, output
    for name in envs:
        [backup] = listed(envs[name])
        assert backup["server"] == name and backup["id"].startswith(f"{name}/postgres_"), backup
        assert f"{name} backup started" in output, output
    assert re.search(r"db1 backup ok; next run .* server=db1$", output, re.MULTILINE), output

    write_env(folder / "db3.env", {"POSTGRES_PORT": "not-a-port"})
    refused = cli(process, "schedule", "--env-dir", str(folder))
    assert refused.code == 2 and "server db3" in refused.stderr and "POSTGRES_PORT" in refused.stderr, refused.output
    assert "Traceback" not in refused.output


def test_check_warns_when_two_unnamed_servers_share_the_storage(envs: dict[str, dict[str, str]],
                                                                clusters: dict[str, TempCluster],
                                                                tmp_path: Path) -> None:
    """Without SERVER_NAME two servers' `postgres` backups would mix: `check` names the other one
    (a warning with the fix) until each has its own name."""
    unnamed = {name: {k: v for k, v in env.items() if not k.startswith(("SERVER_NAME", "S3_"))}
               | {"BACKUP_DIR": str(tmp_path / "shared")} for name, env in envs.items()}
    ok(cli(unnamed["db1"], "backup"))
    alone = cli(unnamed["db1"], "check", "--json")
    assert "shared storage" not in alone.stdout, alone.output  # only its own backups so far
    ok(cli(unnamed["db2"], "backup"))
    warned = cli(unnamed["db1"], "check", "--json")
    [found] = [c for c in json.loads(warned.stdout)["checks"] if c["name"] == "shared storage"]
    assert found["status"] == "warning" and f":{clusters['db2'].port}" in found["detail"], found
    assert "SERVER_NAME" in found["hint"] and warned.code == 4, warned.output
    named = {**unnamed["db1"], "SERVER_NAME": "db1"}
    assert "shared storage" not in cli(named, "check", "--json").stdout
