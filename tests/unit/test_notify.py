"""Notifications without a network: payload shapes and limits, format detection, levels, secrets."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from sentinel_backup import __version__
from sentinel_backup.config import Settings
from sentinel_backup.notify import (
    SCHEMA,
    DeliveryResult,
    EventKind,
    Notifier,
    RunEvent,
    Transport,
    detect_format,
    discord_payload,
    human_duration,
    human_size,
    json_payload,
    public_url,
    redact,
    send_test,
    slack_payload,
    split_target,
)

T = datetime(2026, 11, 29, 3, 0, 5, tzinfo=UTC)


def event(kind: EventKind = EventKind.BACKUP_SUCCEEDED, **more: object) -> RunEvent:
    base: dict[str, object] = {"host": "db1", "databases": ["app", "crm"], "sizes": {"app": 3 * 1024**2, "crm": 2048},
                               "duration_seconds": 75.0, "destinations": ["local", "s3"], "time": T}
    return RunEvent(kind, **{**base, **more})  # type: ignore[arg-type]


def _settings(**env: object) -> Settings:
    base = {"POSTGRES_USER": "u", "POSTGRES_DB": "app", "BACKUP_DIR": "/tmp/x", "_env_file": None}
    return Settings(**{**base, **env})  # type: ignore[arg-type]


# --- formats -------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "fmt"), [
    ("https://hooks.slack.com/services/T000/B000/XXXX", "slack"),
    ("https://discord.com/api/webhooks/123/abc", "discord"),
    ("https://discordapp.com/api/webhooks/123/abc", "discord"),
    ("https://ptb.discord.com/api/webhooks/123/abc", "discord"),
    ("https://discord.com/channels/1/2", "json"),
    ("https://example.com/hooks.slack.com", "json"),
    ("http://127.0.0.1:8080/hook", "json"),
])
def test_detect_format(url: str, fmt: str) -> None:
    assert detect_format(url) == fmt


def test_json_payload_is_the_documented_v1_object() -> None:
    payload = json_payload(event(EventKind.BACKUP_FAILED, error="pg_dump exited 1", counts={"failed": 1}))
    assert payload == {
        "schema": SCHEMA, "event": "backup_failed", "severity": "error",
        "summary": "Backup FAILED on db1 \u00b7 app, crm \u00b7 3.0 MiB \u00b7 1m15s \u00b7 to local, s3",
        "text": "Backup FAILED on db1 \u00b7 app, crm \u00b7 3.0 MiB \u00b7 1m15s \u00b7 to local, s3"
                "\npg_dump exited 1",
        "host": "db1", "server": "", "time": "2026-11-29T03:00:05Z", "tool_version": __version__,
        "databases": ["app", "crm"], "sizes_bytes": {"app": 3145728, "crm": 2048}, "globals": None,
        "total_size_bytes": 3147776,
        "duration_seconds": 75.0, "destinations": ["local", "s3"], "error": "pg_dump exited 1",
        "counts": {"failed": 1},
    }
    assert SCHEMA == "sentinel-backup.event/v1"
    json.dumps(payload)


def test_the_server_and_the_roles_are_named_apart_from_the_databases() -> None:
    """A database named `globals` and the roles and tablespaces are two parts of a run; a named
    server is in the summary, the fields and the JSON."""
    base = event(EventKind.BACKUP_SUCCEEDED)
    named = replace(base, server="pg-eu.prod", databases=["globals"], sizes={"globals": 1024}, globals=True,
                    globals_size=2048)
    payload = json_payload(named)
    assert payload["server"] == "pg-eu.prod" and payload["databases"] == ["globals"]
    assert payload["sizes_bytes"] == {"globals": 1024} and payload["globals"] == {"size_bytes": 2048}
    assert payload["total_size_bytes"] == 3072
    assert named.summary().startswith("Backup succeeded on db1 (server pg-eu.prod) \u00b7 globals, roles and"
                                      " tablespaces \u00b7 3.0 KiB")
    fields = {f["text"].split("\n")[0]: f["text"] for f in slack_payload(named)["blocks"][1]["fields"]}
    assert fields["*Server*"] == "*Server*\npg-eu.prod"
    assert fields["*Size*"] == "*Size*\nglobals: 1.0 KiB, roles and tablespaces: 2.0 KiB"


def test_json_text_without_error_is_the_summary() -> None:
    payload = json_payload(event(EventKind.BACKUP_SUCCEEDED))
    assert payload["text"] == payload["summary"]


@pytest.mark.parametrize(("item", "expected"), [
    ("https://hooks.slack.com/services/T/B/x", ("auto", "https://hooks.slack.com/services/T/B/x")),
    (" slack:https://chat.example/hooks/abc ", ("slack", "https://chat.example/hooks/abc")),
    ("JSON:http://127.0.0.1:8080/x", ("json", "http://127.0.0.1:8080/x")),
    ("discord:https://discord.com/api/webhooks/1/t", ("discord", "https://discord.com/api/webhooks/1/t")),
    ("auto:https://hooks.slack.com/services/x", ("auto", "https://hooks.slack.com/services/x")),
    ("ftp://host/x", ("auto", "ftp://host/x")),  # a URL, refused at delivery as before
    ("not a url", ("auto", "not a url")),
])
def test_split_target(item: str, expected: tuple[str, str]) -> None:
    assert split_target(item) == expected


def test_split_target_refuses_an_unknown_format_without_repeating_the_url() -> None:
    with pytest.raises(ValueError, match="unknown format 'teams'") as info:
        split_target("teams:https://example.com/secret-token")
    assert "secret-token" not in str(info.value)


def test_slack_payload_blocks() -> None:
    payload = slack_payload(event(EventKind.BACKUP_PARTIAL, error="s3: <AccessDenied> & more"))
    assert payload["text"].startswith("\u26a0\ufe0f Backup partially failed: Backup partially failed on db1")
    header, fields, error, context = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "\u26a0\ufe0f Backup partially failed",
                                                  "emoji": True}}
    assert fields["type"] == "section"
    assert [f["text"] for f in fields["fields"]] == [
        "*Host*\ndb1", "*Databases*\napp, crm", "*Size*\napp: 3.0 MiB, crm: 2.0 KiB", "*Duration*\n1m15s",
        "*Destinations*\nlocal, s3"]
    assert all(f["type"] == "mrkdwn" for f in fields["fields"])
    assert error == {"type": "section", "text": {"type": "mrkdwn",
                                                  "text": "*Error*\n```s3: &lt;AccessDenied&gt; &amp; more```"}}
    assert context["type"] == "context" and "2026-11-29 03:00:05 UTC" in context["elements"][0]["text"]


def test_slack_limits() -> None:
    counts = {f"count_{i}": i for i in range(20)}
    payload = slack_payload(event(error="x" * 10_000, counts=counts))
    assert len(payload["blocks"][1]["fields"]) == 10
    assert len(payload["blocks"][2]["text"]["text"]) <= 3000
    assert len(payload["text"]) <= 3000


def test_discord_payload_embed() -> None:
    payload = discord_payload(event(EventKind.VERIFY_FAILED, error="sha256 mismatch"))
    assert payload["content"] == ("Verification FAILED on db1 \u00b7 app, crm \u00b7 3.0 MiB \u00b7 1m15s"
                                  " \u00b7 to local, s3")
    assert payload["allowed_mentions"] == {"parse": []}
    assert payload["username"] == "Sentinel Backup"
    (embed,) = payload["embeds"]
    assert embed["title"] == "\u274c Verification FAILED"
    assert embed["color"] == 0xA30200
    assert embed["description"] == "```\nsha256 mismatch\n```"
    assert embed["timestamp"] == "2026-11-29T03:00:05+00:00"
    assert embed["fields"][0] == {"name": "Host", "value": "db1", "inline": True}
    assert [f["name"] for f in embed["fields"]] == ["Host", "Databases", "Size", "Duration", "Destinations"]


def test_discord_limits() -> None:
    dbs = [f"database_{i:03d}" for i in range(300)]
    counts = {f"c{i}": i for i in range(40)}
    payload = discord_payload(event(databases=dbs, counts=counts, host="h" * 300, error="e" * 9000))
    (embed,) = payload["embeds"]
    assert len(embed["fields"]) == 25
    assert all(len(f["value"]) <= 1024 and len(f["name"]) <= 256 for f in embed["fields"])
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096
    total = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"]) + sum(
        len(f["name"]) + len(f["value"]) for f in embed["fields"])
    assert total <= 6000
    assert len(payload["content"]) <= 2000


def test_colours_and_titles_per_kind() -> None:
    assert discord_payload(event())["embeds"][0]["color"] == 0x2EB886
    assert discord_payload(event(EventKind.BACKUP_PARTIAL))["embeds"][0]["color"] == 0xDAA038
    prune = event(EventKind.PRUNE_REMOVED, counts={"removed": 4, "kept": 30})
    assert prune.title == "Retention removed 4 backup(s)" and prune.severity == "info"
    assert RunEvent(EventKind.TEST, host="h").summary() == "Test notification on h"


def test_human_units() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 5 * 1024**3, 3 * 1024**5)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 GiB", "3072.0 TiB"]
    assert [human_duration(s) for s in (0.25, 59.9, 60, 3725)] == ["0.2 s", "59.9 s", "1m00s", "1h02m05s"]


# --- secrets -------------------------------------------------------------------------------
def test_redact_removes_credentials_tokens_and_known_secrets() -> None:
    text = ("could not connect to postgresql://backup:hunter22@db:5432/app; "
            "PUT https://bucket.s3.amazonaws.com/k?X-Amz-Signature=abc123&x=1 failed; "
            "posting to https://hooks.slack.com/services/T0/B0/SECRETTOKEN; password is s3cr3t-pw")
    clean = redact(text, ["s3cr3t-pw"])
    for secret in ("hunter22", "abc123", "SECRETTOKEN", "s3cr3t-pw"):
        assert secret not in clean
    assert "postgresql://***@db:5432/app" in clean and "https://hooks.slack.com/\u2026" in clean


def test_public_url_shows_no_path_or_token() -> None:
    assert public_url("https://discord.com/api/webhooks/1/tok") == "https://discord.com/\u2026"
    assert public_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert public_url("https://x.example?token=1") == "https://x.example/\u2026"


def test_event_error_is_scrubbed_before_sending() -> None:
    sent: list[bytes] = []

    class Recorder(Transport):
        def send(self, url: str, body: bytes | None, **kw: object) -> DeliveryResult:
            sent.append(body or b"")
            return DeliveryResult(public_url(url), "json", True, 200, 1)

    notifier = Notifier(urls=["http://receiver/hook"], secrets=["pa55word"], transport=Recorder())
    notifier.notify(event(EventKind.BACKUP_FAILED, error="auth failed for pa55word at http://u:p@h/"))
    body = json.loads(sent[0])
    assert "pa55word" not in body["error"] and ":p@" not in body["error"]


# --- levels and settings -------------------------------------------------------------------
@pytest.mark.parametrize(("level", "kind", "sent"), [
    ("all", EventKind.BACKUP_SUCCEEDED, True), ("all", EventKind.PRUNE_REMOVED, True),
    ("error", EventKind.BACKUP_SUCCEEDED, False), ("error", EventKind.PRUNE_REMOVED, False),
    ("error", EventKind.BACKUP_FAILED, True), ("error", EventKind.BACKUP_PARTIAL, True),
    ("error", EventKind.VERIFY_FAILED, True), ("none", EventKind.BACKUP_FAILED, False),
])
def test_level_filter(level: str, kind: EventKind, sent: bool) -> None:
    assert Notifier(urls=["http://x/"], level=level).wants(event(kind)) is sent


def test_disabled_or_without_urls_sends_nothing() -> None:
    assert not Notifier(urls=["http://x/"], enabled=False).wants(event(EventKind.BACKUP_FAILED))
    assert Notifier(urls=[]).notify(event()) == []


def test_from_settings() -> None:
    s = _settings(WEBHOOK_ENABLED="true", WEBHOOK_URL=" https://a.example/h , https://hooks.slack.com/services/x ,",
                  NOTIFICATION_LEVEL="ERROR", WEBHOOK_FORMAT="discord", POSTGRES_PASSWORD="pw-secret")
    n = Notifier.from_settings(s)
    assert list(n.urls) == ["https://a.example/h", "https://hooks.slack.com/services/x"]
    assert (n.enabled, n.level, n.format) == (True, "error", "discord")
    assert "pw-secret" in n.secrets
    assert Notifier.from_settings(_settings(WEBHOOK_URLS="https://b.example/h")).urls == ["https://b.example/h"]


def test_send_test_without_url_is_false(caplog: pytest.LogCaptureFixture) -> None:
    assert send_test(_settings()) is False
    assert "WEBHOOK_URL is not set" in caplog.text


def test_retry_after_parsing() -> None:
    t = Transport(retry_after_cap=15)
    assert t._retry_after("3", 1.0) == 3.0
    assert t._retry_after("3600", 1.0) == 15.0
    assert t._retry_after("-5", 1.0) == 0.0
    assert t._retry_after(None, 2.0) == 2.0
    assert t._retry_after("soon", 2.0) == 2.0
    assert t._retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 2.0) == 0.0  # in the past
