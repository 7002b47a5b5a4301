"""The last-run record (``BACKUP_DIR/.sentinel-last-run.json``, ``.sentinel-last-run.<SERVER_NAME>.json``
for a named server): what the last backup run did.

``databases`` maps each database (or ``(cluster)`` for a physical run) to its outcome; the roles
and tablespaces (``pg_dumpall --globals-only``) are under ``globals``, apart, so that a database
named ``globals`` never shares their entry. Records written before that (the roles under
``databases["globals"]``) are read as they are.

Written by every backup job (fsynced, then renamed into place); read by ``check``, which
must start quickly, so this module needs nothing but the standard library at import time.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentinel_backup import log, private
from sentinel_backup.errors import SentinelError

if TYPE_CHECKING:
    from sentinel_backup.config import Settings
    from sentinel_backup.logical.run import RunResult

__all__ = ["LAST_RUN_FILE", "LastRunUnreadable", "last_run_path", "outcomes", "read_last_run", "write_last_run"]

logger = log.get("jobs")
LAST_RUN_FILE = ".sentinel-last-run.json"
GLOBALS_LABEL = "globals (roles and tablespaces)"  # how people are told of the globals part of a run


def last_run_path(settings: Settings) -> Path:
    name = settings.server_name
    return settings.backup_dir / (LAST_RUN_FILE.replace(".json", f".{name}.json") if name else LAST_RUN_FILE)


def write_last_run(settings: Settings, result: RunResult, code: int) -> None:
    def entry(o: Any) -> dict[str, Any]:
        return {"ok": o.ok, "error": o.error, "failed_destinations": o.failed,
                "backup": o.manifest.id if o.manifest else None}

    record: dict[str, Any] = {
        "finished_at": datetime.now(UTC).isoformat(), "started_at": result.started.isoformat(),
        "exit_code": code, "status": {0: "ok", 3: "partial"}.get(code, "failed"), "server": settings.server_name,
        "databases": {o.database: entry(o) for o in result.outcomes if o.kind != "globals"},
    }
    roles = [o for o in result.outcomes if o.kind == "globals"]
    if roles:
        record["globals"] = entry(roles[0])
    path = last_run_path(settings)
    tmp = path.with_suffix(".tmp")
    try:  # written whole (fsync) before the rename: a crash leaves the old record, never an empty one
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, private.FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), private.file_mode_for(path))
            file.write(json.dumps(record, indent=2))
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(path)
    except (OSError, SentinelError) as exc:
        logger.warning(f"Could not record the last run in {settings.backup_dir}: {exc}")


class LastRunUnreadable(SentinelError):
    """The last-run record exists but says nothing usable (empty, damaged, unreadable)."""


def read_last_run(settings: Settings) -> dict[str, Any] | None:
    """The last-run record; None when no run was recorded. LastRunUnreadable when the file
    is there but empty, not JSON, not a record, or cannot be read."""
    path = last_run_path(settings)
    hint = (f"the next backup run rewrites it; meanwhile check the log of the last run and the free space "
            f"and permissions of {settings.backup_dir}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise LastRunUnreadable(f"last-run record is unreadable: {path} ({reason})", hint) from None
    if not text.strip():
        raise LastRunUnreadable(f"last-run record is empty: {path}", hint)
    try:
        data = json.loads(text)
    except ValueError:
        raise LastRunUnreadable(f"last-run record is damaged (not JSON): {path}", hint) from None
    if not isinstance(data, dict) or data.get("status") not in ("ok", "partial", "failed") \
            or not data.get("finished_at"):
        raise LastRunUnreadable(f"last-run record has no status or finish time: {path}", hint)
    return data


def outcomes(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Label -> outcome of every part of a recorded run: the databases by name, the roles and
    tablespaces as ``globals (roles and tablespaces)`` (older records: as they were written)."""
    found = {str(k): v for k, v in (record.get("databases") or {}).items() if isinstance(v, dict)}
    if isinstance(record.get("globals"), dict):
        found[GLOBALS_LABEL] = record["globals"]
    return found
