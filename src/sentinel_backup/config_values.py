"""Values of settings that need more than a type: durations, and secret files (the one
check every secret file goes through). Used by the schema (``config``) and by the modules
that read secrets (keys, registry)."""

from __future__ import annotations

import re
import stat
from datetime import timedelta
from pathlib import Path

from sentinel_backup.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`90m`, `26h`, `7d`, `2w` (or plain seconds) as a timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", text.lower())
    if match is None or int(match.group(1)) == 0:
        raise ValueError("must be a positive duration like 26h, 90m or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2) or "s"])


def parse_timeout(text: str) -> timedelta:
    """A duration like parse_duration's, where `0` is allowed (no limit)."""
    if re.fullmatch(r"\s*0+\s*[smhdw]?\s*", text.lower()):
        return timedelta(0)
    try:
        return parse_duration(text)
    except ValueError:
        raise ValueError("must be a duration like 30s, 5m or 1h, or 0 (no limit)") from None


def read_private_file(path: Path, variable: str, create_hint: str, *, line_limit: int | None = None) -> bytes:
    """A secret file's bytes (only its first line, up to ``line_limit`` bytes, when given).

    The one check every secret file goes through (key files, age identities, password and
    secret-key files): it must be a regular file that neither group nor others can access."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{variable}: {path} is not a regular file", f"point {variable} at the file itself")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{variable}: {path} is readable by group or others (mode {info.st_mode & 0o777:o})",
                              f"run: chmod 600 {path}")
        with path.open("rb") as file:
            return file.read() if line_limit is None else file.readline(line_limit)
    except FileNotFoundError:
        raise ConfigError(f"{variable}: {path} does not exist", create_hint) from None
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}", f"check the permissions of {path}") \
            from None


def read_secret_file(path: Path, variable: str) -> str:
    """First line of a secret file (password, secret key), without its newline. Refuses files
    readable by group or others, like every secret file."""
    data = read_private_file(path, variable, f"create it with the secret on its first line and chmod 600 {path}, "
                                             f"or fix {variable}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{variable}: {path} is not UTF-8 text", f"put the secret on the first line of {path}") \
            from None
    line = text.splitlines()[0] if text.strip() else ""
    if not line:
        raise ConfigError(f"{variable}: {path} is empty", f"put the secret on the first line of {path}")
    return line
