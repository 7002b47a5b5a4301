"""The last-run record (``BACKUP_DIR/.sentinel-last-run.json``): what the last backup run did.

Written by every backup job (fsynced, then renamed into place); read by ``check``, which
must start quickly, so this module needs nothing but the standard library at import time.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sentinel_backup import log, private
from sentinel_backup.errors import SentinelError

if TYPE_CHECKING:
    from sentinel_backup.config import Settings
    from sentinel_backup.logical.run import RunResult

__all__ = ["LAST_RUN_FILE", "LastRunUnreadable", "read_last_run", "write_last_run"]

logger = log.get("jobs")
LAST_RUN_FILE = ".sentinel-last-run.json"


def write_last_run(settings: Settings, result: RunResult, code: int) -> None:
    record: dict[str, Any] = {
        "finished_at": datetime.now(UTC).isoformat(), "started_at": result.started.isoformat(),
        "exit_code": code, "status": {0: "ok", 3: "partial"}.get(code, "failed"),
        "databases": {o.database: {"ok": o.ok, "error": o.error, "failed_destinations": o.failed,
                                   "backup": o.manifest.id if o.manifest else None} for o in result.outcomes},
    }
    path = settings.backup_dir / LAST_RUN_FILE
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
    path = settings.backup_dir / LAST_RUN_FILE
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
