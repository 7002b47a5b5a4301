"""The commit protocol: from a written stream to a backup, destination by destination.

For each destination whose copy was written in full, in order:

1. ``commit`` the writer (rename of the fsynced partial file / complete the multipart upload);
2. check the durable copy: its size (``VERIFY_AFTER_BACKUP=none``), its SHA-256 re-read
   (``integrity``: the bytes the in-stream check decoded are the bytes stored), a full
   decode again (``reread``); a further copy whose store verified the SHA-256 of every part
   it received only needs its size;
3. write ``<key>.sha256`` (``sha256sum -c`` format, naming the file in its own folder), then
   ``<key>.manifest.json``: the commit point. Past it, the copy is a backup.

A copy that fails its check is deleted (only what this run stored) and named in
``Committed.failed``; the others go on. A stop request (or an unexpected error) discards
what this copy left and aborts the copies not yet committed, then propagates; copies whose
manifest was written stay, listed in ``Committed.stored``. No copy committed at all is
BackupFailed.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from sentinel_backup import log
from sentinel_backup.choices import VerifyMode
from sentinel_backup.config import Settings
from sentinel_backup.errors import BackupFailed, SentinelError, StorageError
from sentinel_backup.interrupt import Stopper
from sentinel_backup.model.manifest import MANIFEST_SUFFIX, Manifest, checksum_line
from sentinel_backup.pipeline.read import check_stored, verify_copy
from sentinel_backup.pipeline.write import Written
from sentinel_backup.storage.base import ObjectWriter, Storage

logger = log.get("commit")

UNIQUE_TRIES = 3600  # an hour of one-second steps


@dataclass
class Committed:
    """Where one backup was committed (its manifest written) and where it failed, with why.
    Filled in place, so that a caller still knows what stays when an interruption propagates."""

    stored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def unique_key(destinations: list[Storage], name_for: Callable[[int], str], *, what: str) -> str:
    """The first of ``name_for(0)``, ``name_for(1)``, ... that no destination holds, neither as
    an object nor as a manifest (two runs within one second must never share a name).
    ``name_for(n)`` is typically the name stamped ``n`` seconds after the run's start."""
    for offset in range(UNIQUE_TRIES):
        key = name_for(offset)
        taken = any(dest.stat(key) is not None or dest.stat(key + MANIFEST_SUFFIX) is not None
                    for dest in destinations)
        if not taken:
            return key
    raise BackupFailed(f"no free name for {what} near {name_for(0)}", "report this")


def commit(written: Written, manifest: Manifest, destinations: list[Storage], *, settings: Settings,
           stopper: Stopper, min_size: int = 0, committed: Committed | None = None) -> Committed:
    """Close the stream and commit, check and record each healthy copy (see the module doc).

    ``manifest.artifact`` must be ``written.key``; ``min_size`` (0: none) refuses a stored
    stream smaller than that before anything is committed. ``settings`` gives the verify
    mode and, for ``reread``, the keys. Returns ``committed`` (a fresh one when None)."""
    result = committed if committed is not None else Committed()
    if manifest.artifact != written.key:
        written.abort()
        raise BackupFailed(f"the manifest names {manifest.artifact}, the stream was written to {written.key}",
                           "this is a bug in sentinel-backup; please report it")
    fanout = written.fanout
    try:
        fanout.close()
    except BaseException:
        fanout.abort()
        raise
    if min_size and manifest.size_bytes < min_size:
        fanout.abort()
        raise BackupFailed(f"{manifest.artifact} is only {manifest.size_bytes} bytes (MIN_BACKUP_SIZE is "
                           f"{min_size})", "check that the database has data, or lower MIN_BACKUP_SIZE")
    for name, error in fanout.failed.items():
        result.failed[name] = str(error)
        logger.error(f"Destination {name} failed for {manifest.artifact}: {error}", extra=log.fields(destination=name))
        writer = next((lane.writer for lane in fanout.lanes if lane.name == name), None)
        if writer is not None:
            _abort_writer(writer, name)
    by_name = {d.name: d for d in destinations}
    healthy = list(fanout.healthy.items())
    for index, (name, writer) in enumerate(healthy):
        storage = by_name[name]
        is_committed = False
        try:
            stopper.check()
            writer.commit()
            is_committed = True
            # The stream was decoded in-stream; each durable copy is re-read for its SHA-256,
            # except a further copy whose store verified the SHA-256 of every part it received.
            by_store = bool(result.stored) and bool(getattr(writer, "verified_by_store", False))
            check_copy(storage, manifest, settings, stopper, full=not by_store)
            storage.put_bytes(manifest.checksum_key,
                              checksum_line(manifest.sha256, posixpath.basename(manifest.artifact)))
            stopper.check()  # the last moment to stop: past the manifest, this copy is a backup
            storage.put_bytes(manifest.manifest_key, manifest.to_json())
        except Exception as exc:
            if not isinstance(exc, SentinelError) or stopper.requested:
                # Interrupted (or a bug): nothing unfinished may stay anywhere.
                discard(storage, manifest, writer, is_committed)
                for rest_name, rest in healthy[index + 1:]:
                    _abort_writer(rest, rest_name)
                raise
            result.failed[name] = exc.message
            logger.error(f"Destination {name} failed for {manifest.artifact}: {exc.message}",
                         extra=log.fields(destination=name))
            if is_committed:  # only what this run stored; never a name it could not commit
                storage.delete(manifest.checksum_key)
                storage.delete(manifest.artifact)
            continue
        result.stored.append(name)
    if not result.stored:
        raise BackupFailed(f"no destination holds a verified copy of {manifest.artifact}",
                           "; ".join(f"{k}: {v}" for k, v in result.failed.items()))
    return result


def check_copy(storage: Storage, manifest: Manifest, settings: Settings, stopper: Stopper, *,
               full: bool = True) -> None:
    """After the copy is durable: its size (always), its SHA-256 (integrity: the bytes the
    in-stream check decoded are the bytes stored), or a full decode again (reread)."""
    mode = settings.verify_after_backup
    if mode is VerifyMode.NONE or not full:
        info = storage.stat(manifest.artifact)
        if info is None or info.size != manifest.size_bytes:
            raise StorageError(f"{storage.name}: stored size does not match the stream", "try again")
        return

    def progress(_n: int) -> None:  # a stop request ends the re-read too
        stopper.check()

    if mode is VerifyMode.REREAD:
        report = verify_copy(storage, manifest, settings, progress=progress)
        ok, failures = report.ok, report.failures
    else:
        stored = check_stored(storage, manifest, progress=progress)
        ok, failures = stored.ok, [stored]
    if not ok:
        detail = "; ".join(f"{c.name}: {c.detail}" for c in failures if not c.ok) or "nothing could be checked"
        raise BackupFailed(f"{storage.name} copy of {manifest.artifact} failed verification: {detail}")
    logger.debug(f"Verified {storage.name} copy", extra=log.fields(mode=mode.value))


def discard(storage: Storage, manifest: Manifest, writer: ObjectWriter, committed: bool) -> None:
    """Remove what this run stored of an unfinished copy (interrupted before its manifest)."""
    if not committed:
        _abort_writer(writer, storage.name)
        return
    for key in (manifest.checksum_key, manifest.artifact):
        try:
            storage.delete(key)
        except SentinelError as exc:
            logger.warning(f"Could not remove {key} from {storage.name}: {exc.message}")


def _abort_writer(writer: ObjectWriter, name: str) -> None:
    try:
        writer.abort()
    except SentinelError as exc:
        logger.warning(f"Could not abort the upload to {name}: {exc.message}")
