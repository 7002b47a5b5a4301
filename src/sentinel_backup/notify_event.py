"""A run's event, as told to people: the event (:class:`RunEvent`), the webhook formats and
their payloads (Slack, Discord, a JSON document), and secrets kept out of them. Delivery is
``notify``'s."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from sentinel_backup import __version__

SCHEMA = "sentinel-backup.event/v1"
GLOBALS_TEXT = "roles and tablespaces"  # the globals part of a run, never a database's name in a list


class EventKind(StrEnum):
    BACKUP_SUCCEEDED = "backup_succeeded"
    BACKUP_FAILED = "backup_failed"
    BACKUP_PARTIAL = "backup_partial"
    VERIFY_FAILED = "verify_failed"
    PRUNE_REMOVED = "prune_removed"
    ARCHIVE_FAILED = "archive_failed"  # wal-push cannot archive WAL (PostgreSQL retries; pg_wal grows)
    ARCHIVE_RECOVERED = "archive_recovered"
    TEST = "test"


_SEVERITY = {EventKind.BACKUP_FAILED: "error", EventKind.VERIFY_FAILED: "error", EventKind.BACKUP_PARTIAL: "warning",
             EventKind.ARCHIVE_FAILED: "error"}
_TITLE = {
    EventKind.BACKUP_SUCCEEDED: "Backup succeeded", EventKind.BACKUP_FAILED: "Backup FAILED",
    EventKind.BACKUP_PARTIAL: "Backup partially failed", EventKind.VERIFY_FAILED: "Verification FAILED",
    EventKind.PRUNE_REMOVED: "Retention removed backups", EventKind.TEST: "Test notification",
    EventKind.ARCHIVE_FAILED: "WAL archiving FAILING", EventKind.ARCHIVE_RECOVERED: "WAL archiving recovered",
}
_EMOJI = {"info": "\u2705", "warning": "\u26a0\ufe0f", "error": "\u274c"}
_COLOR = {"info": 0x2EB886, "warning": 0xDAA038, "error": 0xA30200}


@dataclass(frozen=True)
class RunEvent:
    """What happened in one run, as told to people. Holds no secret by construction."""

    kind: EventKind
    host: str = field(default_factory=socket.gethostname)
    databases: Sequence[str] = ()  # database names (the roles and tablespaces are ``globals_size``)
    sizes: Mapping[str, int] = field(default_factory=dict)  # database -> stored bytes
    duration_seconds: float | None = None
    destinations: Sequence[str] = ()
    error: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)  # e.g. removed, kept, failed
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    server: str = ""  # SERVER_NAME ("": unnamed)
    globals: bool = False  # the run included the roles and tablespaces (pg_dumpall --globals-only)
    globals_size: int | None = None  # their stored bytes, when backed up

    @property
    def where(self) -> str:
        """The host, and the server when it has a name: ``host (server db1)``."""
        return f"{self.host} (server {self.server})" if self.server else self.host

    @property
    def parts(self) -> list[str]:
        """What the run covered, for people: the databases, then the roles and tablespaces."""
        return [*self.databases, *([GLOBALS_TEXT] if self.globals else [])]

    @property
    def total_size(self) -> int:
        return sum(self.sizes.values()) + (self.globals_size or 0)

    @property
    def severity(self) -> str:
        return _SEVERITY.get(self.kind, "info")

    @property
    def title(self) -> str:
        if self.kind is EventKind.PRUNE_REMOVED:
            return f"Retention removed {self.counts.get('removed', 0)} backup(s)"
        return _TITLE[self.kind]

    def summary(self) -> str:
        parts = [f"{self.title} on {self.where}"]
        if self.parts:
            parts.append(", ".join(self.parts))
        if self.sizes or self.globals_size:
            parts.append(human_size(self.total_size))
        if self.duration_seconds is not None:
            parts.append(human_duration(self.duration_seconds))
        if self.destinations:
            parts.append("to " + ", ".join(self.destinations))
        return " \u00b7 ".join(parts)


def human_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def human_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# --- secrets ------------------------------------------------------------------------------
_URL_CREDS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@")
_QUERY_SECRET = re.compile(r"(?i)\b(?P<k>[a-z_-]*(?:token|key|secret|signature|password|sig))=[^&\s]+")
_SECRET_PATH = re.compile(r"(?i)https?://\S*(?:hooks\.slack\.com|/webhooks?/|/api/)\S*")


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """The text without credentials in URLs, secret query values or any known secret."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_CREDS.sub(lambda m: m.group("scheme") + "***@", text)
    text = _QUERY_SECRET.sub(lambda m: m.group("k") + "=***", text)
    return _SECRET_PATH.sub(lambda m: public_url(m.group()), text)


def public_url(url: str) -> str:
    """What may be logged of a webhook URL: scheme and host, never path or token."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return "(invalid URL)"
    host = parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/\u2026" if parts.path.strip("/") or parts.query else \
        f"{parts.scheme}://{host}{port}"


# --- payloads -----------------------------------------------------------------------------
def detect_format(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host == "hooks.slack.com":
        return "slack"
    if host in ("discordapp.com", "www.discordapp.com") or (
            host in ("discord.com", "www.discord.com", "ptb.discord.com", "canary.discord.com")
            and parts.path.startswith("/api/webhooks")):
        return "discord"
    return "json"


FORMATS = ("auto", "slack", "discord", "json")


def split_target(item: str, default: str = "auto") -> tuple[str, str]:
    """One WEBHOOK_URL item -> (format, URL): ``slack:https://...`` names its format, a plain
    URL (anything ``scheme://...``) takes ``default``. ValueError for an unknown prefix; the
    message never repeats the URL (it holds the token)."""
    item = item.strip()
    prefix, colon, rest = item.partition(":")
    if not colon or rest.startswith("//") or " " in prefix:
        return default, item
    if prefix.lower() in FORMATS:
        return prefix.lower(), rest.strip()
    raise ValueError(f"a URL starts with the unknown format {prefix[:20]!r}: write FORMAT:URL with FORMAT one of "
                     f"{', '.join(FORMATS)}, or a plain URL")


def _fields(event: RunEvent) -> list[tuple[str, str]]:
    """(name, value) pairs shown by Slack and Discord, error excluded."""
    rows = [("Host", event.host)]
    if event.server:
        rows.append(("Server", event.server))
    if event.parts:
        rows.append(("Databases", ", ".join(event.parts)))
    sizes = [*event.sizes.items(), *([(GLOBALS_TEXT, event.globals_size)] if event.globals_size is not None else [])]
    if sizes:
        rows.append(("Size", ", ".join(f"{db}: {human_size(n)}" for db, n in sizes)))
    if event.duration_seconds is not None:
        rows.append(("Duration", human_duration(event.duration_seconds)))
    if event.destinations:
        rows.append(("Destinations", ", ".join(event.destinations)))
    rows.extend((name.replace("_", " ").capitalize(), str(n)) for name, n in event.counts.items())
    return rows


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def json_payload(event: RunEvent) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "event": event.kind.value, "severity": event.severity, "summary": event.summary(),
        "text": event.summary() + (f"\n{event.error}" if event.error else ""),
        "host": event.host, "server": event.server,
        "time": event.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "tool_version": __version__, "databases": list(event.databases), "sizes_bytes": dict(event.sizes),
        "globals": {"size_bytes": event.globals_size} if event.globals else None,
        "total_size_bytes": event.total_size, "duration_seconds": event.duration_seconds,
        "destinations": list(event.destinations), "error": event.error, "counts": dict(event.counts),
    }


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(event: RunEvent) -> dict[str, Any]:
    """Incoming-webhook message: fallback ``text`` plus Block Kit blocks (limits: header
    150 chars, 10 fields of 2000, section text 3000)."""
    title = f"{_EMOJI[event.severity]} {event.title}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, 150), "emoji": True}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f"*{name}*\n{_mrkdwn(value)}", 2000)}
                                       for name, value in _fields(event)[:10]]},
    ]
    if event.error:
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn", "text": "*Error*\n```" + _cut(_mrkdwn(event.error), 2900) + "```"}})
    stamp = event.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"sentinel-backup {__version__} \u00b7 {stamp}"}]})
    return {"text": _cut(f"{title}: {event.summary()}", 3000), "blocks": blocks}


def discord_payload(event: RunEvent) -> dict[str, Any]:
    """Webhook message: ``content`` plus one embed (limits: content 2000, title 256,
    description 4096, 25 fields, field name 256 / value 1024, 6000 chars per embed)."""
    title = _cut(f"{_EMOJI[event.severity]} {event.title}", 256)
    fields: list[dict[str, Any]] = [
        {"name": _cut(name, 256), "value": _cut(value, 1024) or "-", "inline": len(value) <= 40}
        for name, value in _fields(event)[:25]]
    embed: dict[str, Any] = {"title": title, "color": _COLOR[event.severity], "fields": fields,
                             "timestamp": event.time.astimezone(UTC).isoformat(),
                             "footer": {"text": f"sentinel-backup {__version__}"}}
    if event.error:
        used = len(title) + sum(len(f["name"]) + len(f["value"]) for f in fields) + len(embed["footer"]["text"])
        embed["description"] = "```\n" + _cut(event.error, max(0, min(4096, 6000 - used) - 8)) + "\n```"
    return {"content": _cut(event.summary(), 2000), "username": "Sentinel Backup",
            "allowed_mentions": {"parse": []}, "embeds": [embed]}


PAYLOADS: dict[str, Callable[[RunEvent], dict[str, Any]]] = {
    "slack": slack_payload, "discord": discord_payload, "json": json_payload}
