"""Health checks: uniform results (name, ok, detail) for humans, JSON and monitors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import Settings
from .errors import SentinelError
from .source import Source
from .storage.base import Storage
from .storage.registry import build_destinations
from .streams.crypto import cipher_from_settings


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


def _attempt(name: str, action: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, True, action())
    except SentinelError as exc:
        return CheckResult(name, False, exc.message, exc.hint)


def probe_destination(storage: Storage) -> str:
    """Write, read back and delete a small object."""
    key = "sentinel-backup-check-probe"
    payload = b"sentinel-backup check\n"
    storage.put_bytes(key, payload)
    try:
        if storage.read_bytes(key) != payload:
            raise SentinelError(f"{storage.name}: the probe object read back differently", "check the store")
    finally:
        storage.delete(key)
    return f"write/read/delete ok at {storage.describe()}"


def run_checks(settings: Settings) -> list[CheckResult]:
    source = Source(settings)
    results = [CheckResult("configuration", True, "settings are valid")]

    def server() -> str:
        version = source.query_json("SELECT to_json(current_setting('server_version'))")
        databases = source.resolve_databases()
        return f"PostgreSQL {version}; databases: {', '.join(databases)}"

    results.append(_attempt("source", server))
    results.append(_attempt("pg_dump", lambda: source.tool_version("pg_dump")))

    def encryption() -> str:
        cipher = cipher_from_settings(settings)
        return "disabled" if cipher is None else f"{cipher.method}, key {cipher.key_id}"

    results.append(_attempt("encryption", encryption))
    try:
        destinations = build_destinations(settings)
    except SentinelError as exc:
        return [*results, CheckResult("destinations", False, exc.message, exc.hint)]
    for storage in destinations:
        results.append(_attempt(f"destination {storage.name}", functools.partial(_prepare_and_probe, storage)))
    return results


def _prepare_and_probe(storage: Storage) -> str:
    prepare = getattr(storage, "prepare", None)
    if callable(prepare):
        prepare()
    return probe_destination(storage)
