"""Notifications: a run's event -> Slack / Discord / JSON payload -> delivery with retries.

Delivery never raises and never changes a run's outcome: a failure is logged as a
warning on ``sentinel_backup.notify`` and returned as a :class:`DeliveryResult`.

* Levels (``NOTIFICATION_LEVEL``): ``all`` sends every event; ``error`` sends failures
  and partial successes only (backup_failed, backup_partial, verify_failed, archive_failed and
  its archive_recovered); ``none``
  sends nothing. ``send_test`` ignores the level (and ``WEBHOOK_ENABLED``).
* Formats (``WEBHOOK_FORMAT``): ``auto`` picks Slack for ``hooks.slack.com``, Discord for
  ``discord.com/api/webhooks`` and ``discordapp.com``, JSON otherwise. One URL of
  ``WEBHOOK_URL`` can name its own format: ``slack:https://...,json:https://...``
  (:func:`split_target`); a plain URL takes ``WEBHOOK_FORMAT``, as before.
* JSON schema ``sentinel-backup.event/v1``: ``schema, event, severity (info|warning|error),
  summary, text, host, time (ISO 8601 UTC), tool_version, databases [str], sizes_bytes {db: int},
  total_size_bytes, duration_seconds (float|null), destinations [str], error (str|null),
  counts {str: int}``. ``text`` is the summary plus the error on a second line, the key that
  Mattermost, Rocket.Chat and Google Chat read. New keys may be added within v1; a removed or retyped key means v2.
* Secrets never leave: URLs are shown as ``scheme://host/…``, credentials in URLs
  (``user:pass@``, ``token=``/``key=``/``signature=`` query values) and every configured
  secret value are replaced by ``***`` in the error text.
* Retries: up to ``attempts`` (3) tries per URL on HTTP 5xx, 429 and refused/reset
  connections, not on timeouts or other 4xx. Backoff 1 s, 2 s, ...; ``Retry-After`` (seconds
  or HTTP date) is honoured up to ``retry_after_cap`` (15 s). No new try starts after the
  ``deadline`` (60 s) of one ``notify`` call, and waits are clamped to it, so the worst
  case of a call is ``deadline + timeout`` (70 s with the defaults), whatever the number
  of URLs. ``timeout`` (10 s) bounds each socket operation. Redirects are not followed.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sentinel_backup import __version__

if TYPE_CHECKING:
    from sentinel_backup.config import Settings

log = logging.getLogger("sentinel_backup.notify")
SCHEMA = "sentinel-backup.event/v1"
USER_AGENT = f"sentinel-backup/{__version__}"


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
    databases: Sequence[str] = ()
    sizes: Mapping[str, int] = field(default_factory=dict)  # database -> stored bytes
    duration_seconds: float | None = None
    destinations: Sequence[str] = ()
    error: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)  # e.g. removed, kept, failed
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def severity(self) -> str:
        return _SEVERITY.get(self.kind, "info")

    @property
    def title(self) -> str:
        if self.kind is EventKind.PRUNE_REMOVED:
            return f"Retention removed {self.counts.get('removed', 0)} backup(s)"
        return _TITLE[self.kind]

    def summary(self) -> str:
        parts = [f"{self.title} on {self.host}"]
        if self.databases:
            parts.append(", ".join(self.databases))
        if self.sizes:
            parts.append(human_size(sum(self.sizes.values())))
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
    if event.databases:
        rows.append(("Databases", ", ".join(event.databases)))
    if event.sizes:
        rows.append(("Size", ", ".join(f"{db}: {human_size(n)}" for db, n in event.sizes.items())))
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
        "host": event.host, "time": event.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "tool_version": __version__, "databases": list(event.databases), "sizes_bytes": dict(event.sizes),
        "total_size_bytes": sum(event.sizes.values()), "duration_seconds": event.duration_seconds,
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


_BUILDERS: dict[str, Callable[[RunEvent], dict[str, Any]]] = {
    "slack": slack_payload, "discord": discord_payload, "json": json_payload}


# --- delivery -----------------------------------------------------------------------------
@dataclass(frozen=True)
class DeliveryResult:
    url: str  # public_url(): never the token
    format: str
    ok: bool
    status: int | None = None
    attempts: int = 0
    error: str | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect becomes an HTTPError: never re-send a message elsewhere


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass
class Transport:
    """HTTP POST/GET with retries; ``sleep`` and ``clock`` are injectable for tests."""

    timeout: float = 10.0
    attempts: int = 3
    backoff: float = 1.0
    retry_after_cap: float = 15.0
    deadline: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def send(self, url: str, body: bytes | None, *, fmt: str = "json", until: float | None = None,
             content_type: str = "application/json") -> DeliveryResult:
        until = self.clock() + self.deadline if until is None else until
        status: int | None = None
        error: str | None = "not attempted"
        for attempt in range(1, self.attempts + 1):
            status, error, wait = self._once(url, body, content_type, attempt)
            if error is None:
                return DeliveryResult(public_url(url), fmt, True, status, attempt)
            remaining = until - self.clock()
            if wait is None or attempt == self.attempts or remaining <= 0:
                return DeliveryResult(public_url(url), fmt, False, status, attempt, redact(error, [url]))
            self.sleep(min(wait, remaining))
        return DeliveryResult(public_url(url), fmt, False, status, self.attempts, error)  # pragma: no cover

    def _once(self, url: str, body: bytes | None, content_type: str,
              attempt: int) -> tuple[int | None, str | None, float | None]:
        """(status, error or None when accepted, wait before a retry or None: do not retry)."""
        backoff = self.backoff * 2 ** (attempt - 1)
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return None, "invalid URL: only http:// and https:// are supported", None
        try:
            request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                             headers={"User-Agent": USER_AGENT, "Content-Type": content_type})
            with _OPENER.open(request, timeout=self.timeout) as response:
                response.read(65536)
                return response.status, None, None
        except urllib.error.HTTPError as exc:
            retry = exc.code == 429 or exc.code >= 500
            wait = self._retry_after(exc.headers.get("Retry-After"), backoff) if retry else None
            return exc.code, f"HTTP {exc.code} {exc.reason}", wait
        except TimeoutError:
            return None, f"no answer within {self.timeout:g} s", None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                return None, f"no answer within {self.timeout:g} s", None
            return None, f"cannot connect: {exc.reason}", backoff
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}", backoff
        except ValueError as exc:  # not a usable URL: retrying cannot help
            return None, f"invalid URL: {exc}", None

    def _retry_after(self, header: str | None, default: float) -> float:
        if not header:
            return default
        try:
            seconds = float(header)
        except ValueError:
            try:
                seconds = (parsedate_to_datetime(header) - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                return default
        return max(0.0, min(seconds, self.retry_after_cap))


# --- the notifier -------------------------------------------------------------------------
_ERROR_KINDS = {EventKind.BACKUP_FAILED, EventKind.BACKUP_PARTIAL, EventKind.VERIFY_FAILED,
                EventKind.ARCHIVE_FAILED, EventKind.ARCHIVE_RECOVERED}


@dataclass
class Notifier:
    urls: Sequence[str] = ()
    enabled: bool = True
    level: str = "all"
    format: str = "auto"
    secrets: Sequence[str] = ()
    transport: Transport = field(default_factory=Transport)
    healthcheck_url: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, transport: Transport | None = None) -> Notifier:
        urls = [u.strip() for u in (settings.webhook_url or "").split(",") if u.strip()]
        secrets = [*urls, settings.healthcheck_url or "", settings.postgres_password or "",
                   settings.minio_secret_key or "", settings.minio_access_key or ""]
        return cls(urls=urls, enabled=settings.webhook_enabled, level=settings.notification_level.value,
                   format=settings.webhook_format.value, secrets=[s for s in secrets if s],
                   transport=transport or Transport(), healthcheck_url=settings.healthcheck_url)

    def ping(self, kind: str, body: str | None = None) -> bool | None:
        """Ping HEALTHCHECK_URL (start / success / fail); None when it is not set. Never raises."""
        if not self.healthcheck_url:
            return None
        return healthcheck_ping(self.healthcheck_url, kind, body, transport=self.transport)

    def wants(self, event: RunEvent) -> bool:
        if not self.enabled or not self.urls or self.level == "none":
            return False
        return self.level == "all" or event.kind in _ERROR_KINDS

    def notify(self, event: RunEvent, *, force: bool = False) -> list[DeliveryResult]:
        """Send the event to every URL (unless filtered out). Never raises."""
        if not force and not self.wants(event):
            return []
        safe = _scrubbed(event, self.secrets)
        until = self.transport.clock() + self.transport.deadline
        return [self._deliver(url, safe, until) for url in self.urls]

    def _deliver(self, item: str, event: RunEvent, until: float) -> DeliveryResult:
        try:
            fmt, url = split_target(item, self.format)
        except ValueError as exc:  # settings validation refuses it first; a Notifier built by hand may not
            return DeliveryResult("(invalid URL)", "?", False, error=str(exc))
        fmt = detect_format(url) if fmt == "auto" else fmt
        try:
            body = json.dumps(_BUILDERS[fmt](event), ensure_ascii=False).encode()
            result = self.transport.send(url, body, fmt=fmt, until=until)
        except Exception as exc:  # a notification must never break a run
            result = DeliveryResult(public_url(url), fmt, False, error=f"internal error: {redact(str(exc), [url])}")
        if result.ok:
            log.info("notified %s (%s, %s)", result.url, fmt, event.kind.value)
        else:
            log.warning("webhook %s (%s) not delivered after %d attempt(s): %s",
                        result.url, fmt, result.attempts, result.error)
        return result

    def send_test(self) -> list[DeliveryResult]:
        """A test event to every URL, whatever WEBHOOK_ENABLED and NOTIFICATION_LEVEL say."""
        if not self.enabled:
            log.info("WEBHOOK_ENABLED is false: real runs will not send notifications")
        event = RunEvent(EventKind.TEST)
        return self.notify(event, force=True)


def _scrubbed(event: RunEvent, secrets: Sequence[str]) -> RunEvent:
    return replace(event, error=redact(event.error, secrets) if event.error else event.error,
                   destinations=[redact(d, secrets) for d in event.destinations])


def send_test(settings: Settings, transport: Transport | None = None) -> bool:
    """For ``notify-test``: True when at least one URL is configured and all accepted."""
    notifier = Notifier.from_settings(settings, transport)
    if not notifier.urls:
        log.warning("WEBHOOK_URL is not set: nothing to test")
        return False
    return all(r.ok for r in notifier.send_test())


def healthcheck_ping(url: str, kind: str, body: str | None = None, *,
                     transport: Transport | None = None) -> bool:
    """healthchecks.io-style ping: ``start`` -> URL/start, ``success`` -> URL, ``fail`` ->
    URL/fail. ``body`` (e.g. the log tail, last 10 kB) is POSTed. Never raises."""
    try:
        suffix = {"start": "/start", "success": "", "fail": "/fail"}[kind]
        target = url.rstrip("/") + suffix
        data = body.encode()[-10_000:].decode("utf-8", "ignore").encode() if body is not None else None
        result = (transport or Transport()).send(target, data, fmt="ping", content_type="text/plain; charset=utf-8")
    except Exception as exc:  # a ping must never break a run
        log.warning("health check ping (%s) failed: %s", kind, redact(str(exc), [url]))
        return False
    if not result.ok:
        log.warning("health check ping %s to %s failed: %s", kind, result.url, result.error)
    return result.ok
