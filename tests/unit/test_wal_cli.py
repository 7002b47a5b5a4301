"""The lean wal-push / wal-fetch parser and the WAL object encodings."""

from __future__ import annotations

import pytest

from sentinel_backup.choices import Compression
from sentinel_backup.errors import ConfigError
from sentinel_backup.wal.archive import Encoding, encoding_of
from sentinel_backup.wal.fastpath import handles, main, parse


def test_fast_path_takes_plain_wal_commands_only() -> None:
    assert handles(["--env-file", "/etc/s.env", "wal-push", "pg_wal/000000010000000000000001"])
    assert handles(["wal-fetch", "00000002.history", "pg_wal/RECOVERYHISTORY", "--env-file=/x", "-q"])
    assert not handles(["wal-push", "--help"])
    assert not handles(["list"])
    assert not handles(["--env-file", "wal-push", "list"])  # wal-push is the value of --env-file here


def test_parse_globals_anywhere() -> None:
    args = parse(["-q", "wal-fetch", "A", "B", "--system-id=42", "--from", "s3", "--env-file", "/e"])
    assert args.command == "wal-fetch" and args.positional == ["A", "B"] and args.quiet
    assert args.options == {"--system-id": "42", "--from": "s3", "--env-file": "/e"}
    with pytest.raises(ConfigError):
        parse(["wal-push", "--bogus", "x"])
    with pytest.raises(ConfigError):
        parse(["wal-push", "x", "--system-id"])


def test_usage_errors_of_wal_fetch_stop_recovery(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wal-fetch", "000000010000000000000001"]) >= 126
    assert main(["wal-fetch", "a", "b", "--bogus"]) >= 126
    assert main(["wal-push"]) == 2
    assert "usage: wal-push" in capsys.readouterr().err


@pytest.mark.parametrize(("extension", "expected"), [
    ("", Encoding(Compression.NONE, None)), (".gz", Encoding(Compression.GZIP, None)),
    (".zst.age", Encoding(Compression.ZSTD, "age")), (".gz.enc", Encoding(Compression.GZIP, "aes-256-cbc")),
    (".enc", Encoding(Compression.NONE, "aes-256-cbc"))])
def test_encodings(extension: str, expected: Encoding) -> None:
    assert encoding_of(extension) == expected


def test_unknown_encoding() -> None:
    with pytest.raises(ValueError):
        encoding_of(".xz")


def test_failures_go_through_the_one_mapping(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """cli.exit_code_for maps for the lean path too; wal-fetch turns all but absence into a fatal code."""
    from sentinel_backup.wal import fastpath

    def broken(args: object) -> int:
        raise RuntimeError("boom")

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(fastpath, "_push", broken)
    monkeypatch.setattr(fastpath, "_fetch", broken)
    assert main(["wal-push", "pg_wal/000000010000000000000001"]) == 1
    assert "ERROR: internal error: RuntimeError: boom" in capsys.readouterr().err
    assert main(["wal-fetch", "000000010000000000000001", "pg_wal/RECOVERYXLOG"]) == 200
    monkeypatch.setattr(fastpath, "_push", interrupted)
    assert main(["wal-push", "pg_wal/000000010000000000000001"]) == 130
    assert "Interrupted." in capsys.readouterr().err
