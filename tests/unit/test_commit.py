"""The commit protocol against real local folders: each copy committed, checked, then its
``.sha256`` and manifest; a copy that does not check out is removed and named; a stop
request leaves nothing unfinished; keys with folders (physical backups) work the same."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel_backup.choices import VerifyMode
from sentinel_backup.errors import BackupFailed, Interrupted
from sentinel_backup.interrupt import Stopper
from sentinel_backup.model.manifest import Manifest, artifact_name
from sentinel_backup.pipeline.commit import Committed, commit, unique_key
from sentinel_backup.pipeline.write import Written, write_stream
from sentinel_backup.storage.base import ObjectInfo
from sentinel_backup.storage.local import LocalStorage, LocalWriter
from tests.unit.test_write_pipeline import (
    DATA,
    GZIP,
    KEY,
    BytesProducer,
    RecordingStorage,
    everything,
    local,
    manifest_for,
    settings,
)


def write(stores: list[LocalStorage], key: str = KEY, stopper: Stopper | None = None) -> tuple[Written, Manifest]:
    written = write_stream(BytesProducer(DATA), key, list(stores), GZIP, verify=VerifyMode.INTEGRITY,
                           stopper=stopper or Stopper())
    return written, manifest_for(written, GZIP, key)


class DamagingStorage(LocalStorage):
    """The real local folder, whose committed artifact loses its last bytes (a bad disk)."""

    def open_writer(self, key: str, *, artifact: bool = True) -> LocalWriter:
        writer = super().open_writer(key, artifact=artifact)
        if artifact:
            real_commit = writer.commit

            def commit() -> ObjectInfo:
                info = real_commit()
                with writer.final.open("r+b") as f:
                    f.truncate(info.size - 10)
                return info

            writer.commit = commit  # type: ignore[method-assign]
        return writer


def test_a_key_in_a_folder_gets_its_sidecars_beside_it(tmp_path: Path) -> None:
    """Physical backups live under basebackups/<system id>/: the manifest and .sha256 sit
    beside the artifact, and ``sha256sum -c`` works in that folder."""
    key = "basebackups/7318008123456789012/sentinel_base_20261203T080000Z.tar.gz"
    store = local(tmp_path)
    written, manifest = write([store], key)
    done = commit(written, manifest, [store], settings=settings(tmp_path), stopper=Stopper())
    assert done.stored == ["local"]
    assert everything(tmp_path) == [key, key + ".manifest.json", key + ".sha256"]
    folder = (tmp_path / key).parent
    subprocess.run(["sha256sum", "-c", Path(key).name + ".sha256"], cwd=folder, check=True, capture_output=True)
    assert Manifest.from_json((tmp_path / (key + ".manifest.json")).read_bytes(), "test").sha256 == manifest.sha256


@pytest.mark.parametrize("verify", ["integrity", "reread", "none"])
def test_a_damaged_copy_is_removed_and_the_good_one_committed(tmp_path: Path, verify: str) -> None:
    events: list[str] = []
    bad, good = DamagingStorage(tmp_path / "bad"), RecordingStorage(tmp_path / "good", events, "good")
    bad.name = "bad"
    bad.prepare()
    written, manifest = write([bad, good])
    done = commit(written, manifest, [bad, good], settings=settings(tmp_path, verify), stopper=Stopper())
    assert done.stored == ["good"]
    assert list(done.failed) == ["bad"]
    assert everything(tmp_path / "bad") == []  # only what this run stored was removed: all of it
    assert events[-1] == f"good:{KEY}.manifest.json"
    assert everything(tmp_path / "good") == [KEY, KEY + ".manifest.json", KEY + ".sha256"]


def test_no_good_copy_is_a_failed_backup(tmp_path: Path) -> None:
    bad = DamagingStorage(tmp_path)
    bad.prepare()
    written, manifest = write([bad])
    committed = Committed(failed={"s3": "not reachable before the run"})
    with pytest.raises(BackupFailed, match="no destination holds a verified copy") as caught:
        commit(written, manifest, [bad], settings=settings(tmp_path), stopper=Stopper(), committed=committed)
    assert "s3: not reachable" in (caught.value.hint or "")
    assert committed.stored == [] and set(committed.failed) == {"s3", "local"}
    assert everything(tmp_path) == []


def test_a_stream_smaller_than_the_minimum_is_refused_before_any_commit(tmp_path: Path) -> None:
    store = local(tmp_path)
    written, manifest = write([store])
    with pytest.raises(BackupFailed, match="MIN_BACKUP_SIZE"):
        commit(written, manifest, [store], settings=settings(tmp_path), stopper=Stopper(),
               min_size=manifest.size_bytes + 1)
    assert everything(tmp_path) == []


def test_a_stop_request_before_the_commit_leaves_nothing(tmp_path: Path) -> None:
    stores = [local(tmp_path / "a"), local(tmp_path / "b", "b")]
    stopper = Stopper()
    written, manifest = write(stores, stopper=stopper)
    stopper.request()
    committed = Committed()
    with pytest.raises(Interrupted):
        commit(written, manifest, stores, settings=settings(tmp_path), stopper=stopper, committed=committed)
    assert committed.stored == []
    assert everything(tmp_path) == []


def test_a_stop_request_after_the_first_manifest_keeps_that_copy_only(tmp_path: Path) -> None:
    """Past its manifest a copy is a backup and stays; the next copy is not committed."""
    stopper = Stopper()

    class StopAfterManifest(LocalStorage):
        def put_bytes(self, key: str, data: bytes) -> ObjectInfo:
            info = super().put_bytes(key, data)
            if key.endswith(".manifest.json"):
                stopper.request()
            return info

    first, second = StopAfterManifest(tmp_path / "a"), local(tmp_path / "b", "second")
    first.prepare()
    written, manifest = write([first, second], stopper=stopper)
    committed = Committed()
    with pytest.raises(Interrupted):
        commit(written, manifest, [first, second], settings=settings(tmp_path), stopper=stopper, committed=committed)
    assert committed.stored == ["local"]
    assert everything(tmp_path / "a") == [KEY, KEY + ".manifest.json", KEY + ".sha256"]
    assert everything(tmp_path / "b") == []


def test_a_manifest_for_another_key_is_refused(tmp_path: Path) -> None:
    store = local(tmp_path)
    written, manifest = write([store])
    other = manifest.model_copy(update={"artifact": "sentinel_backup_other_20261203T080000Z.sql.gz"})
    with pytest.raises(BackupFailed, match="the manifest names"):
        commit(written, other, [store], settings=settings(tmp_path), stopper=Stopper())
    assert everything(tmp_path) == []


def test_unique_key_moves_on_while_a_name_or_its_manifest_is_taken(tmp_path: Path) -> None:
    a, b = local(tmp_path / "a"), local(tmp_path / "b", "b")
    moment = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)

    def name_for(n: int) -> str:
        return artifact_name("app", moment + timedelta(seconds=n), ".sql.gz")

    assert unique_key([a, b], name_for, what="app") == name_for(0)
    a.put_bytes(name_for(0), b"x")  # the artifact on one destination
    b.put_bytes(name_for(1) + ".manifest.json", b"{}")  # only a manifest on the other
    assert unique_key([a, b], name_for, what="app") == name_for(2)
    with pytest.raises(BackupFailed, match="no free name for app"):
        unique_key([a], lambda n: name_for(0), what="app")
