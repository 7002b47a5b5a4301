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
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sentinel_backup import __version__
from sentinel_backup.notify_event import (  # the event and its payloads, re-exported
    FORMATS,
    PAYLOADS,
    SCHEMA,
    EventKind,
    RunEvent,
    detect_format,
    discord_payload,
    human_duration,
    human_size,
    json_payload,
    public_url,
    redact,
    slack_payload,
    split_target,
)

__all__ = [
    "FORMATS",
    "SCHEMA",
    "DeliveryResult",
    "EventKind",
    "Notifier",
    "RunEvent",
    "Transport",
    "detect_format",
    "discord_payload",
    "healthcheck_ping",
    "human_duration",
    "human_size",
    "json_payload",
    "public_url",
    "redact",
    "send_test",
    "slack_payload",
    "split_target",
]

if TYPE_CHECKING:
    from sentinel_backup.config import Settings

log = logging.getLogger("sentinel_backup.notify")
USER_AGENT = f"sentinel-backup/{__version__}"


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
    server: str = ""  # SERVER_NAME: every event sent names it

    @classmethod
    def from_settings(cls, settings: Settings, transport: Transport | None = None) -> Notifier:
        urls = [u.strip() for u in (settings.webhook_url or "").split(",") if u.strip()]
        secrets = [*urls, settings.healthcheck_url or "", settings.postgres_password or "",
                   settings.minio_secret_key or "", settings.minio_access_key or ""]
        return cls(urls=urls, enabled=settings.webhook_enabled, level=settings.notification_level.value,
                   format=settings.webhook_format.value, secrets=[s for s in secrets if s],
                   transport=transport or Transport(), healthcheck_url=settings.healthcheck_url,
                   server=settings.server_name)

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
        safe = replace(_scrubbed(event, self.secrets), server=event.server or self.server)
        until = self.transport.clock() + self.transport.deadline
        return [self._deliver(url, safe, until) for url in self.urls]

    def _deliver(self, item: str, event: RunEvent, until: float) -> DeliveryResult:
        try:
            fmt, url = split_target(item, self.format)
        except ValueError as exc:  # settings validation refuses it first; a Notifier built by hand may not
            return DeliveryResult("(invalid URL)", "?", False, error=str(exc))
        fmt = detect_format(url) if fmt == "auto" else fmt
        try:
            body = json.dumps(PAYLOADS[fmt](event), ensure_ascii=False).encode()
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
