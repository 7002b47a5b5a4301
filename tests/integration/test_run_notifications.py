"""Notifications from real runs: `backup` against PostgreSQL, webhooks to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from sentinel_backup.demo.cluster import TempCluster
from tests.helpers import cli


@pytest.fixture
def db(pg: TempCluster, new_db: str) -> str:
    pg.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", new_db)
    return new_db


def posted(server: HTTPServer, path: str) -> list[dict[str, Any]]:
    return [json.loads(req.get_data()) for req, _ in server.log if req.path == path]


def paths(server: HTTPServer) -> list[tuple[str, str]]:
    return [(req.method, req.path) for req, _ in server.log]


def test_json_webhook_after_a_successful_backup(pg: TempCluster, db: str, base_env: dict[str, str],
                                                webhook_server: HTTPServer) -> None:
    webhook_server.expect_request("/hook", method="POST").respond_with_data("ok")
    env = {**base_env, "POSTGRES_DB": db, "WEBHOOK_ENABLED": "true", "WEBHOOK_URL": webhook_server.url_for("/hook"),
           "WEBHOOK_FORMAT": "json"}
    result = cli(env, "backup")
    assert result.code == 0, result.output

    [payload] = posted(webhook_server, "/hook")
    item = cli(env, "list", "--json").json()[0]
    assert payload["schema"] == "sentinel-backup.event/v1"
    assert payload["event"] == "backup_succeeded" and payload["severity"] == "info"
    assert payload["databases"] == [db]
    assert payload["sizes_bytes"] == {db: item["size_bytes"]} and payload["total_size_bytes"] == item["size_bytes"]
    assert payload["destinations"] == ["local"]
    assert payload["error"] is None
    assert payload["counts"] == {"succeeded": 1, "failed": 0}
    assert isinstance(payload["duration_seconds"], float)
    assert payload["host"] and payload["time"].endswith("Z") and payload["tool_version"]
    assert db in payload["summary"]
    [(request, _)] = [entry for entry in webhook_server.log if entry[0].path == "/hook"]
    assert request.headers["Content-Type"] == "application/json"
    assert pg.password not in request.get_data(as_text=True)


def test_slack_format_from_a_real_run(db: str, base_env: dict[str, str], webhook_server: HTTPServer) -> None:
    webhook_server.expect_request("/slack", method="POST").respond_with_data("ok")
    env = {**base_env, "POSTGRES_DB": db, "WEBHOOK_ENABLED": "true", "WEBHOOK_URL": webhook_server.url_for("/slack"),
           "WEBHOOK_FORMAT": "slack"}
    assert cli(env, "backup").code == 0
    [payload] = posted(webhook_server, "/slack")
    assert set(payload) == {"text", "blocks"} and "Backup succeeded" in payload["text"] and db in payload["text"]
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in payload["blocks"][1]["fields"]}
    assert fields["*Databases*"] == db and fields["*Destinations*"] == "local"


def test_level_error_is_quiet_on_success_and_speaks_on_failure(db: str, base_env: dict[str, str],
                                                                webhook_server: HTTPServer) -> None:
    webhook_server.expect_request("/hook", method="POST").respond_with_data("ok")
    env = {**base_env, "POSTGRES_DB": db, "WEBHOOK_ENABLED": "true", "WEBHOOK_URL": webhook_server.url_for("/hook"),
           "WEBHOOK_FORMAT": "json", "NOTIFICATION_LEVEL": "error"}
    assert cli(env, "backup").code == 0
    assert posted(webhook_server, "/hook") == []

    failed = cli({**env, "POSTGRES_DB": "no_such_database_here"}, "backup")
    assert failed.code == 1, failed.output
    [payload] = posted(webhook_server, "/hook")
    assert payload["event"] == "backup_failed" and payload["severity"] == "error"
    assert payload["databases"] == ["no_such_database_here"]
    assert "no_such_database_here" in payload["error"] and "does not exist" in payload["error"]
    assert payload["counts"] == {"succeeded": 0, "failed": 1}


def test_level_none_and_disabled_send_nothing(db: str, base_env: dict[str, str], webhook_server: HTTPServer) -> None:
    webhook_server.expect_request("/hook", method="POST").respond_with_data("ok")
    env = {**base_env, "POSTGRES_DB": "no_such_database_here", "WEBHOOK_URL": webhook_server.url_for("/hook")}
    assert cli({**env, "WEBHOOK_ENABLED": "true", "NOTIFICATION_LEVEL": "none"}, "backup").code == 1
    assert cli({**env, "WEBHOOK_ENABLED": "false"}, "backup").code == 1
    assert webhook_server.log == []


@pytest.mark.parametrize("receiver", ["closed", "500"])
def test_a_dead_webhook_does_not_change_the_outcome(db: str, base_env: dict[str, str], webhook_server: HTTPServer,
                                                    closed_url: str, receiver: str) -> None:
    if receiver == "500":
        webhook_server.expect_request("/broken", method="POST").respond_with_data("down", status=500)
        url = webhook_server.url_for("/broken")
    else:
        url = closed_url
    env = {**base_env, "POSTGRES_DB": db, "WEBHOOK_ENABLED": "true", "WEBHOOK_URL": url}
    result = cli(env, "backup")
    assert result.code == 0, result.output
    assert "Backup process completed" in result.output
    warnings = [line for line in result.output.splitlines() if "[WARN]" in line and "webhook" in line]
    assert warnings, result.output
    assert ("HTTP 500" if receiver == "500" else "cannot connect") in warnings[0]
    assert "after 3 attempt(s)" in warnings[0]
    if receiver == "500":
        assert len(posted(webhook_server, "/broken")) == 3  # retried on 5xx
    assert len(cli(env, "list", "--json").json()) == 1


def test_healthcheck_pings_on_success_and_failure(db: str, base_env: dict[str, str],
                                                   webhook_server: HTTPServer) -> None:
    for path in ("/ping/abc", "/ping/abc/start", "/ping/abc/fail"):
        webhook_server.expect_request(path).respond_with_data("OK")
    env = {**base_env, "POSTGRES_DB": db, "HEALTHCHECK_URL": webhook_server.url_for("/ping/abc")}
    assert cli(env, "backup").code == 0
    assert paths(webhook_server) == [("GET", "/ping/abc/start"), ("GET", "/ping/abc")]

    webhook_server.clear_log()
    failed = cli({**env, "POSTGRES_DB": "no_such_database_here"}, "backup")
    assert failed.code == 1
    assert paths(webhook_server) == [("GET", "/ping/abc/start"), ("POST", "/ping/abc/fail")]
    body = webhook_server.log[1][0].get_data(as_text=True)
    assert "no_such_database_here" in body


def test_healthcheck_ping_on_a_run_that_cannot_start(base_env: dict[str, str], webhook_server: HTTPServer,
                                                     closed_url: str) -> None:
    """A source that is down still pings /start then /fail (the dead-man's switch learns of it)."""
    for path in ("/ping/x/start", "/ping/x/fail"):
        webhook_server.expect_request(path).respond_with_data("OK")
    port = closed_url.split(":")[2].split("/")[0]
    env = {**base_env, "POSTGRES_DB": "all", "POSTGRES_PORT": port,
           "HEALTHCHECK_URL": webhook_server.url_for("/ping/x")}
    result = cli(env, "backup")
    assert result.code != 0
    assert [p for _, p in paths(webhook_server)] == ["/ping/x/start", "/ping/x/fail"]


def report(stdout: str) -> list[str]:
    """notify-test's result lines (the log lines aside)."""
    return [line for line in stdout.splitlines() if line.startswith(("OK ", "FAIL "))]


def test_notify_test_command(base_env: dict[str, str], webhook_server: HTTPServer) -> None:
    webhook_server.expect_request("/good", method="POST").respond_with_data("", status=204)
    webhook_server.expect_request("/bad", method="POST").respond_with_data("no", status=500)
    env = {**base_env, "POSTGRES_DB": "whatever", "WEBHOOK_FORMAT": "json"}

    good = cli({**env, "WEBHOOK_URL": webhook_server.url_for("/good")}, "notify-test")
    assert good.code == 0, good.output
    [line] = report(good.stdout)
    assert line.startswith("OK") and "status=204" in line
    [payload] = posted(webhook_server, "/good")
    assert payload["event"] == "test" and payload["schema"] == "sentinel-backup.event/v1"

    bad = cli({**env, "WEBHOOK_URL": webhook_server.url_for("/bad")}, "notify-test")
    assert bad.code == 1, bad.output
    [line] = report(bad.stdout)
    assert line.startswith("FAIL") and "status=500" in line and "attempts=3" in line

    both = cli({**env, "WEBHOOK_URL": f"{webhook_server.url_for('/good')},{webhook_server.url_for('/bad')}"},
               "notify-test")
    assert both.code == 1 and [line[:4] for line in report(both.stdout)] == ["OK  ", "FAIL"]

    none = cli(env, "notify-test")
    assert none.code == 1 and "WEBHOOK_URL" in none.output


def test_notify_test_names_each_url(base_env: dict[str, str], webhook_server: HTTPServer) -> None:
    webhook_server.expect_request("/one", method="POST").respond_with_data("", status=204)
    webhook_server.expect_request("/two", method="POST").respond_with_data("no", status=404)
    webhook_server.expect_request("/three", method="POST").respond_with_data("ok")
    env = {**base_env, "POSTGRES_DB": "whatever",
           "WEBHOOK_URL": f"json:{webhook_server.url_for('/one')},{webhook_server.url_for('/two')},"
                          f"slack:{webhook_server.url_for('/three')}"}
    result = cli(env, "notify-test")
    assert result.code == 1, result.output
    lines = report(result.stdout)
    assert [line.split()[:3] for line in lines] == [["OK", "#1", "json"], ["FAIL", "#2", "json"],
                                                   ["OK", "#3", "slack"]]
    assert "status=404" in lines[1] and "attempts=1" in lines[1]
    assert "2 of 3 webhook URL(s) accepted the test notification; failed: #2" in result.stdout
    assert "/one" not in result.output and "/two" not in result.output  # paths (tokens) never shown
    assert [p for _, p in paths(webhook_server)] == ["/one", "/two", "/three"]

    bad = cli({**env, "WEBHOOK_URL": "teams:https://example.com/the-token"}, "notify-test")
    assert bad.code == 2 and "WEBHOOK_URL" in bad.stderr and "the-token" not in bad.output, bad.output
