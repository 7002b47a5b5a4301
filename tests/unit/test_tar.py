"""streams.tar: a folder as one tar stream, checked and extracted as it passes (real tar reads it)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from sentinel_backup.errors import SourceError, VerifyFailed
from sentinel_backup.model.manifest import backup_id, parse_name
from sentinel_backup.streams.tar import TarCheck, TarExtractor, TarReader


def folder_of(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "dump"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def stream(reader: TarReader) -> bytes:
    out = b""
    while chunk := reader.read(1 << 20):
        out += chunk
    return out


FILES = {"toc.dat": b"PGDMP" + bytes(700), "3001.dat.gz": bytes(range(256)) * 9, "3000.dat.gz": b"", "blobs.toc": b"x"}


def test_reader_writes_what_tar_reads_toc_first(tmp_path: Path) -> None:
    data = stream(TarReader(folder_of(tmp_path, FILES)))
    assert len(data) % 512 == 0
    listing = subprocess.run(["tar", "-t"], input=data, capture_output=True, check=True).stdout.decode().split()
    assert listing == ["toc.dat", "3000.dat.gz", "3001.dat.gz", "blobs.toc"]
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert {m.name: archive.extractfile(m).read() for m in archive.getmembers()} == FILES  # type: ignore[union-attr]


@pytest.mark.parametrize("chunk", [1, 511, 512, 513, 100_000])
def test_check_and_extract_whatever_the_chunking(tmp_path: Path, chunk: int) -> None:
    data = stream(TarReader(folder_of(tmp_path, FILES)))
    check = TarCheck()
    out = tmp_path / "out"
    out.mkdir()
    extractor = TarExtractor(out)
    for start in range(0, len(data), chunk):
        check.write(data[start:start + chunk])
        extractor.write(data[start:start + chunk])
    extractor.close()
    assert check.complete(), check.detail()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == FILES
    assert all(p.stat().st_mode & 0o077 == 0 for p in out.iterdir())


def test_truncated_or_damaged_archives_are_not_complete(tmp_path: Path) -> None:
    data = stream(TarReader(folder_of(tmp_path, FILES)))
    cut = TarCheck()
    cut.write(data[:-1024])  # the end-of-archive blocks missing
    assert not cut.complete() and "end-of-archive missing" in cut.detail()
    half = TarCheck()
    half.write(data[:700])  # inside toc.dat's data
    assert not half.complete()
    damaged = TarCheck()
    damaged.write(b"\x01" + data[1:])  # header checksum no longer matches
    assert not damaged.complete() and "checksum" in damaged.detail()
    without_toc = TarCheck()
    without_toc.write(stream(TarReader(folder_of(tmp_path / "b", {"1.dat.gz": b"x"}))))
    assert not without_toc.complete() and "lacks toc.dat" in without_toc.detail()
    out = tmp_path / "out"
    out.mkdir()
    extractor = TarExtractor(out)
    extractor.write(data[:-1024])
    with pytest.raises(VerifyFailed, match="end-of-archive"):
        extractor.close()


@pytest.mark.parametrize("name", ["../evil", "sub/dir.dat", ".hidden"])
def test_extractor_refuses_names_that_are_not_plain_files(tmp_path: Path, name: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        member = tarfile.TarInfo(name)
        member.size = 1
        archive.addfile(member, io.BytesIO(b"x"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VerifyFailed, match="unexpected member"):
        TarExtractor(out).write(buffer.getvalue())
    assert list(out.iterdir()) == [] and not (tmp_path / "evil").exists()


def test_reader_refuses_a_subfolder_and_stops_on_request(tmp_path: Path) -> None:
    folder = folder_of(tmp_path, FILES)
    (folder / "sub").mkdir()
    with pytest.raises(SourceError, match="not a plain file"):
        stream(TarReader(folder))
    reader = TarReader(folder_of(tmp_path / "c", FILES))
    reader.read()
    reader.stop()
    with pytest.raises(SourceError, match="stopped"):
        reader.read()


def test_directory_artifact_names_are_ours() -> None:
    name = "sentinel_backup_app_20261203T030000Z.dir.tar.age"
    parsed = parse_name(name)
    assert parsed is not None and parsed[0] == "app"
    assert backup_id(name) == "app_20261203T030000Z"
