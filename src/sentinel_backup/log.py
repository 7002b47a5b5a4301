"""Logging: levels DEBUG/INFO/WARN/ERROR, text or JSON lines, stdout and LOG_FILE.

The core logs events with structured fields (``log.info("...", extra=fields(k=v))``);
this module decides how they look. Secrets never reach a log call in the first place.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentinel_backup import private
from sentinel_backup.choices import LogFormat, LogLevel
from sentinel_backup.errors import ConfigError

ROOT = "sentinel_backup"
_LEVELS = {LogLevel.DEBUG: logging.DEBUG, LogLevel.INFO: logging.INFO, LogLevel.WARN: logging.WARNING,
           LogLevel.ERROR: logging.ERROR}
_NAMES = {logging.WARNING: "WARN", logging.CRITICAL: "ERROR"}


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` argument carrying structured fields for a log record."""
    return {"fields": values}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _level(record: logging.LogRecord) -> str:
    return _NAMES.get(record.levelno, record.levelname)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra: dict[str, Any] = getattr(record, "fields", {}) or {}
        tail = " ".join(f"{k}={_text(v)}" for k, v in extra.items())
        line = f"{_timestamp(record)} [{_level(record)}] {record.getMessage()}"
        if tail:
            line += f" {tail}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"timestamp": _timestamp(record), "level": _level(record),
                               "event": record.getMessage(), "logger": record.name}
        doc.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class _Console(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stdout (or sys.stderr) is now: rich's progress display swaps
    sys.stdout while it runs."""

    def __init__(self, to_stderr: bool) -> None:
        self.to_stderr = to_stderr
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr if self.to_stderr else sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _Server(logging.Filter):
    """Every record names the server (SERVER_NAME): servers sharing a LOG_FILE stay apart."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.server = name

    def filter(self, record: logging.LogRecord) -> bool:
        record.fields = {**(getattr(record, "fields", {}) or {}), "server": self.server}
        return True


def setup(level: LogLevel = LogLevel.INFO, fmt: LogFormat = LogFormat.TEXT, file: Path | None = None, *,
          to_stderr: bool = False, quiet: bool = False, server: str = "") -> None:
    """(Re)configure the package logger. Safe to call more than once. ``to_stderr`` keeps
    stdout for machine-readable output (``--json``); ``quiet`` (``--quiet``) shows only
    warnings and errors on the console, while LOG_FILE still gets every record of ``level``;
    ``server`` (SERVER_NAME) is added to every record as the field ``server``."""
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    named = [_Server(server)] if server else []  # on the handlers: a logger's filters skip its children
    logger.setLevel(_LEVELS[level])
    logger.propagate = False
    formatter: logging.Formatter = JsonFormatter() if fmt is LogFormat.JSON else TextFormatter()
    out = _Console(to_stderr)
    out.setFormatter(formatter)
    for one in named:
        out.addFilter(one)
    if quiet:
        out.setLevel(logging.WARNING)
    logger.addHandler(out)
    if file is not None:
        try:
            private.create_file(file)  # 0600 and a 0700 folder when new; an existing file keeps its mode
            handler = logging.FileHandler(file, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"LOG_FILE {file} cannot be opened: {exc.strerror}",
                              "create its folder and give this user write access, or unset LOG_FILE") from None
        handler.setFormatter(formatter)
        for one in named:
            handler.addFilter(one)
        logger.addHandler(handler)


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"{ROOT}.{name}")
