"""Notifications against a real HTTP receiver on 127.0.0.1 (pytest-httpserver)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from sentinel_backup.config import Settings
from sentinel_backup.notify import (
    EventKind,
    Notifier,
    RunEvent,
    Transport,
    discord_payload,
    healthcheck_ping,
    json_payload,
    send_test,
    slack_payload,
)

T = datetime(2026, 11, 29, 3, 0, 5, tzinfo=UTC)


def event(kind: EventKind = EventKind.BACKUP_SUCCEEDED, **more: object) -> RunEvent:
    base: dict[str, object] = {"host": "db1", "databases": ["app"], "sizes": {"app": 123456},
                               "duration_seconds": 12.5, "destinations": ["local", "s3"], "time": T}
    return RunEvent(kind, **{**base, **more})  # type: ignore[arg-type]


def _settings(**env: object) -> Settings:
    base = {"POSTGRES_USER": "u", "POSTGRES_DB": "app", "BACKUP_DIR": "/tmp/x", "_env_file": None}
    return Settings(**{**base, **env})  # type: ignore[arg-type]


def bodies(server: HTTPServer, path: str) -> list[object]:
    return [json.loads(req.get_data()) for req, _ in server.log if req.path == path]


def counting(statuses: list[int], headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """A handler answering statuses in turn, then 200."""
    calls = iter(statuses)

    def handle(request: Request) -> Response:
        status = next(calls, 200)
        return Response("busy" if status >= 400 else "ok", status=status,
                        headers=headers if status >= 400 else None)
    return handle


# --- payloads as received ------------------------------------------------------------------
@pytest.mark.parametrize(("fmt", "builder", "status"), [
    ("json", json_payload, 200), ("slack", slack_payload, 200), ("discord", discord_payload, 204)])
def test_each_format_arrives_exactly(webhook_server: HTTPServer, fast_transport: Transport, fmt: str,
                                     builder: object, status: int) -> None:
    webhook_server.expect_request("/hook", method="POST").respond_with_data("", status=status)
    notifier = Notifier(urls=[webhook_server.url_for("/hook")], format=fmt, transport=fast_transport)
    ev = event(EventKind.BACKUP_FAILED, error="pg_dump: connection refused")
    (result,) = notifier.notify(ev)
    assert result.ok and result.status == status and result.attempts == 1 and result.format == fmt
    (request, _), = webhook_server.log
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("sentinel-backup/")
    assert json.loads(request.get_data()) == builder(ev)  # type: ignore[operator]


def test_slack_and_discord_structure_on_the_wire(webhook_server: HTTPServer, fast_transport: Transport) -> None:
    webhook_server.expect_request("/slack").respond_with_data("ok")
    webhook_server.expect_request("/discord").respond_with_data("", status=204)
    ev = event(EventKind.BACKUP_PARTIAL, error="s3: AccessDenied")
    Notifier(urls=[webhook_server.url_for("/slack")], format="slack", transport=fast_transport).notify(ev)
    Notifier(urls=[webhook_server.url_for("/discord")], format="discord", transport=fast_transport).notify(ev)
    (slack,) = bodies(webhook_server, "/slack")
    assert isinstance(slack, dict) and set(slack) == {"text", "blocks"}
    assert [b["type"] for b in slack["blocks"]] == ["header", "section", "section", "context"]
    (discord,) = bodies(webhook_server, "/discord")
    assert isinstance(discord, dict) and set(discord) == {"content", "username", "allowed_mentions", "embeds"}
    (embed,) = discord["embeds"]
    assert set(embed) == {"title", "color", "fields", "timestamp", "footer", "description"}
    assert isinstance(embed["color"], int) and all(set(f) == {"name", "value", "inline"} for f in embed["fields"])


def test_auto_format_sends_json_to_a_generic_endpoint_and_every_url(webhook_server: HTTPServer,
                                                                    fast_transport: Transport) -> None:
    webhook_server.expect_request("/a").respond_with_data("ok")
    webhook_server.expect_request("/b").respond_with_data("ok")
    urls = f"{webhook_server.url_for('/a')},{webhook_server.url_for('/b')}"
    notifier = Notifier.from_settings(_settings(WEBHOOK_ENABLED="true", WEBHOOK_URL=urls), fast_transport)
    results = notifier.notify(event())
    assert [r.ok for r in results] == [True, True]
    assert [b["schema"] for b in bodies(webhook_server, "/a") + bodies(webhook_server, "/b")] == [  # type: ignore[index]
        "sentinel-backup.event/v1"] * 2


# --- levels --------------------------------------------------------------------------------
@pytest.mark.parametrize(("level", "sent_kinds"), [
    ("all", ["backup_succeeded", "backup_failed", "backup_partial", "verify_failed", "prune_removed"]),
    ("error", ["backup_failed", "backup_partial", "verify_failed"]),
    ("none", []),
])
def test_level_filtering(webhook_server: HTTPServer, fast_transport: Transport, level: str,
                         sent_kinds: list[str]) -> None:
    webhook_server.expect_request("/hook").respond_with_data("ok")
    settings = _settings(WEBHOOK_ENABLED="true", WEBHOOK_URL=webhook_server.url_for("/hook"),
                         NOTIFICATION_LEVEL=level)
    notifier = Notifier.from_settings(settings, fast_transport)
    for kind in (EventKind.BACKUP_SUCCEEDED, EventKind.BACKUP_FAILED, EventKind.BACKUP_PARTIAL,
                 EventKind.VERIFY_FAILED, EventKind.PRUNE_REMOVED):
        notifier.notify(event(kind))
    assert [b["event"] for b in bodies(webhook_server, "/hook")] == sent_kinds  # type: ignore[index]


def test_disabled_webhook_sends_nothing(webhook_server: HTTPServer, fast_transport: Transport) -> None:
    settings = _settings(WEBHOOK_ENABLED="false", WEBHOOK_URL=webhook_server.url_for("/hook"))
    assert Notifier.from_settings(settings, fast_transport).notify(event(EventKind.BACKUP_FAILED)) == []
    assert webhook_server.log == []


# --- retries -------------------------------------------------------------------------------
def test_retries_on_500_with_backoff(webhook_server: HTTPServer, fast_transport: Transport,
                                     sleeps: list[float]) -> None:
    webhook_server.expect_request("/hook").respond_with_handler(counting([500, 503]))
    (result,) = Notifier(urls=[webhook_server.url_for("/hook")], transport=fast_transport).notify(event())
    assert result.ok and result.attempts == 3 and result.status == 200
    assert sleeps == [1.0, 2.0]
    assert len(webhook_server.log) == 3


def test_429_honours_retry_after_with_a_cap(webhook_server: HTTPServer, fast_transport: Transport,
                                            sleeps: list[float]) -> None:
    webhook_server.expect_request("/a").respond_with_handler(counting([429], {"Retry-After": "7"}))
    webhook_server.expect_request("/b").respond_with_handler(counting([429], {"Retry-After": "3600"}))
    notifier = Notifier(urls=[webhook_server.url_for("/a"), webhook_server.url_for("/b")], transport=fast_transport)
    assert [r.ok for r in notifier.notify(event())] == [True, True]
    assert sleeps == [7.0, 15.0]


def test_persistent_500_fails_after_the_attempts_without_raising(
        webhook_server: HTTPServer, fast_transport: Transport, sleeps: list[float],
        caplog: pytest.LogCaptureFixture) -> None:
    webhook_server.expect_request("/services/T0/B0/SECRET").respond_with_data("down", status=500)
    url = webhook_server.url_for("/services/T0/B0/SECRET")
    with caplog.at_level(logging.WARNING, logger="sentinel_backup.notify"):
        (result,) = Notifier(urls=[url], transport=fast_transport).notify(event(EventKind.BACKUP_FAILED))
    assert not result.ok and result.status == 500 and result.attempts == 3
    assert result.error == "HTTP 500 INTERNAL SERVER ERROR"
    assert sleeps == [1.0, 2.0]
    (record,) = [r for r in caplog.records if r.name == "sentinel_backup.notify"]
    assert record.levelno == logging.WARNING and "not delivered after 3 attempt(s)" in record.getMessage()
    assert "SECRET" not in caplog.text and "SECRET" not in result.url


def test_4xx_is_not_retried(webhook_server: HTTPServer, fast_transport: Transport, sleeps: list[float]) -> None:
    webhook_server.expect_request("/hook").respond_with_data("invalid_token", status=403)
    (result,) = Notifier(urls=[webhook_server.url_for("/hook")], transport=fast_transport).notify(event())
    assert not result.ok and result.status == 403 and result.attempts == 1 and sleeps == []


def test_redirect_is_not_followed(webhook_server: HTTPServer, fast_transport: Transport) -> None:
    webhook_server.expect_request("/old").respond_with_data("", status=302, headers={"Location": "/new"})
    webhook_server.expect_request("/new").respond_with_data("ok")
    (result,) = Notifier(urls=[webhook_server.url_for("/old")], transport=fast_transport).notify(event())
    assert not result.ok and result.status == 302
    assert [req.path for req, _ in webhook_server.log] == ["/old"]


def test_deadline_stops_retrying(webhook_server: HTTPServer, sleeps: list[float]) -> None:
    webhook_server.expect_request("/hook").respond_with_data("down", status=500)
    ticks = iter(range(0, 1000, 50))  # every clock read jumps 50 s
    transport = Transport(timeout=0.5, sleep=sleeps.append, deadline=60, clock=lambda: float(next(ticks)))
    (result,) = Notifier(urls=[webhook_server.url_for("/hook")], transport=transport).notify(event())
    assert not result.ok and result.attempts == 2 and sleeps == [1.0]


# --- receivers that are down or hang -------------------------------------------------------
def test_receiver_down_returns_failure(closed_url: str, fast_transport: Transport, sleeps: list[float]) -> None:
    (result,) = Notifier(urls=[closed_url], transport=fast_transport).notify(event(EventKind.BACKUP_FAILED))
    assert not result.ok and result.status is None and result.attempts == 3
    assert result.error is not None and "cannot connect" in result.error
    assert sleeps == [1.0, 2.0]


def test_receiver_that_hangs_times_out_once(hanging_url: str, fast_transport: Transport,
                                            sleeps: list[float]) -> None:
    (result,) = Notifier(urls=[hanging_url], transport=fast_transport).notify(event())
    assert not result.ok and result.attempts == 1 and result.error == "no answer within 0.5 s"
    assert sleeps == []


def test_a_bad_url_never_raises(fast_transport: Transport) -> None:
    results = Notifier(urls=["not a url", "ftp://127.0.0.1/x"], transport=fast_transport).notify(event())
    assert [r.ok for r in results] == [False, False]
    assert all(r.attempts == 1 for r in results)
    assert all(r.error and r.error.startswith("invalid URL") for r in results)
    assert results[0].url == "(invalid URL)"


def test_one_dead_url_does_not_stop_the_others(webhook_server: HTTPServer, closed_url: str,
                                               fast_transport: Transport) -> None:
    webhook_server.expect_request("/hook").respond_with_data("ok")
    results = Notifier(urls=[closed_url, webhook_server.url_for("/hook")], transport=fast_transport).notify(event())
    assert [r.ok for r in results] == [False, True]


# --- notify-test ---------------------------------------------------------------------------
def test_send_test_ignores_level_and_reports_acceptance(webhook_server: HTTPServer,
                                                        fast_transport: Transport) -> None:
    webhook_server.expect_request("/hook").respond_with_data("ok")
    settings = _settings(WEBHOOK_ENABLED="true", WEBHOOK_URL=webhook_server.url_for("/hook"),
                         NOTIFICATION_LEVEL="none")
    assert send_test(settings, fast_transport) is True
    (body,) = bodies(webhook_server, "/hook")
    assert body["event"] == "test"  # type: ignore[index]


def test_send_test_false_when_any_url_refuses(webhook_server: HTTPServer, fast_transport: Transport) -> None:
    webhook_server.expect_request("/ok").respond_with_data("ok")
    webhook_server.expect_request("/bad").respond_with_data("no", status=404)
    urls = f"{webhook_server.url_for('/ok')},{webhook_server.url_for('/bad')}"
    assert send_test(_settings(WEBHOOK_URL=urls), fast_transport) is False


# --- health check pings --------------------------------------------------------------------
def test_healthcheck_pings(webhook_server: HTTPServer, fast_transport: Transport) -> None:
    for path in ("/ping/uuid", "/ping/uuid/start", "/ping/uuid/fail"):
        webhook_server.expect_request(path).respond_with_data("OK")
    url = webhook_server.url_for("/ping/uuid")
    assert healthcheck_ping(url, "start", transport=fast_transport)
    assert healthcheck_ping(url + "/", "success", "backup of app: 1.2 MiB", transport=fast_transport)
    assert healthcheck_ping(url, "fail", "x" * 20_000 + "the end", transport=fast_transport)
    seen = [(req.method, req.path, len(req.get_data())) for req, _ in webhook_server.log]
    assert seen == [("GET", "/ping/uuid/start", 0), ("POST", "/ping/uuid", 22), ("POST", "/ping/uuid/fail", 10_000)]
    assert webhook_server.log[2][0].get_data().endswith(b"the end")


def test_healthcheck_ping_never_raises(closed_url: str, hanging_url: str, fast_transport: Transport) -> None:
    assert healthcheck_ping(closed_url, "success", transport=fast_transport) is False
    assert healthcheck_ping(hanging_url, "start", transport=fast_transport) is False
    assert healthcheck_ping("http://127.0.0.1:1/x", "bogus", transport=fast_transport) is False


def test_notifier_ping_uses_healthcheck_url(webhook_server: HTTPServer, fast_transport: Transport) -> None:
    webhook_server.expect_request("/ping/abc/fail").respond_with_data("OK")
    settings = _settings(HEALTHCHECK_URL=webhook_server.url_for("/ping/abc"))
    assert Notifier.from_settings(settings, fast_transport).ping("fail", "pg_dump failed") is True
    assert Notifier.from_settings(_settings(), fast_transport).ping("start") is None
    (request, _), = webhook_server.log
    assert request.get_data() == b"pg_dump failed"


# --- per-URL formats and the top-level text ------------------------------------------------
def test_each_url_gets_its_own_format(webhook_server: HTTPServer, fast_transport: Transport) -> None:
    for path in ("/a", "/b", "/c"):
        webhook_server.expect_request(path, method="POST").respond_with_data("ok")
    urls = [f"slack:{webhook_server.url_for('/a')}", f"json:{webhook_server.url_for('/b')}",
            webhook_server.url_for("/c")]  # a plain URL: the WEBHOOK_FORMAT default
    results = Notifier(urls=urls, format="discord", transport=fast_transport).notify(event())
    assert [(r.ok, r.format) for r in results] == [(True, "slack"), (True, "json"), (True, "discord")]
    [slack] = bodies(webhook_server, "/a")
    [as_json] = bodies(webhook_server, "/b")
    [discord] = bodies(webhook_server, "/c")
    assert slack == slack_payload(event())  # type: ignore[comparison-overlap]
    assert as_json["schema"] == "sentinel-backup.event/v1"  # type: ignore[index]
    assert as_json["text"] == as_json["summary"]  # type: ignore[index]  # Mattermost, Rocket.Chat, Google Chat
    assert "embeds" in discord  # type: ignore[operator]


def test_prefixed_urls_from_settings_and_an_unknown_prefix(webhook_server: HTTPServer,
                                                           fast_transport: Transport) -> None:
    webhook_server.expect_request("/s", method="POST").respond_with_data("ok")
    webhook_server.expect_request("/j", method="POST").respond_with_data("ok")
    settings = _settings(WEBHOOK_ENABLED="true", WEBHOOK_FORMAT="json",
                         WEBHOOK_URL=f"slack:{webhook_server.url_for('/s')}, {webhook_server.url_for('/j')}")
    Notifier.from_settings(settings, fast_transport).notify(event(EventKind.BACKUP_FAILED, error="boom"))
    [slack] = bodies(webhook_server, "/s")
    [as_json] = bodies(webhook_server, "/j")
    assert "blocks" in slack  # type: ignore[operator]
    assert as_json["text"].endswith("\nboom")  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown format 'teams'"):  # the CLI shows it without the URL
        _settings(WEBHOOK_URL="teams:https://example.com/hook-token")
