"""Full verification of a stored copy: everything that can be checked of it, as checks.

:func:`verify_copy` reads the copy once through the read pipeline (``pipeline.read``):
stored size and SHA-256 against the manifest; then, when the data can be decrypted, full
decompression, raw size and raw SHA-256, and the kind's own completeness check (the raw
observer of :func:`observer_for`: pg_dump's end-of-dump marker for plain dumps). Used by
``verify``, and by ``backup`` with ``VERIFY_AFTER_BACKUP=reread``.

Legacy files of the shell version have no manifest: :func:`verify_legacy` checks what can be
checked without one (full decompression, end-of-dump marker, MIN_BACKUP_SIZE, and the
``.sha256`` file the shell version wrote beside it, when present).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sentinel_backup.config import Settings
from sentinel_backup.errors import ConfigError, Interrupted, SentinelError, VerifyFailed
from sentinel_backup.keys import cipher_for_manifest
from sentinel_backup.logical.producer import EndMarker
from sentinel_backup.model.check import Check, failures
from sentinel_backup.model.manifest import SHA256_SUFFIX, Manifest
from sentinel_backup.pipeline.producer import RawObserver
from sentinel_backup.pipeline.read import Decoder, decode_chain, reading_cipher, sha_detail
from sentinel_backup.storage.base import ObjectInfo, Storage
from sentinel_backup.streams.base import NullSink, pump
from sentinel_backup.streams.crypto import Cipher
from sentinel_backup.streams.digest import Digest
from sentinel_backup.streams.tar import TarCheck, TarObserver


@dataclass
class CopyReport:
    destination: str
    key: str
    checks: list[Check] = field(default_factory=list)
    stored_sha256: str = ""  # of the bytes read (legacy files: the only record of them there is)
    stored_size: int = 0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def observer_for(manifest: Manifest) -> RawObserver | None:
    """The completeness check of a stored backup's raw stream, by its kind: where the next
    kind of backup adds its own (a base backup's tar end-of-archive)."""
    if manifest.kind in ("database", "globals") and manifest.format == "plain":
        return EndMarker()
    if manifest.format == "directory":
        return TarCheck()  # pg_dump -Fd's folder as a tar: end-of-archive and toc.dat
    if manifest.kind == "physical":
        return TarObserver()  # a base backup: the tar must reach its end-of-archive
    return None


def verify_copy(storage: Storage, manifest: Manifest, settings: Settings, *, key: str | None = None,
                progress: Callable[[int], None] | None = None) -> CopyReport:
    """Every check we can make of one stored copy; never raises for a bad copy. ``progress``
    is called per chunk read; it may raise Interrupted to stop the re-read, which propagates."""
    key = key or manifest.artifact
    observer = observer_for(manifest)
    report, info = _open_report(storage, key)
    if info is None:
        return report
    report.checks.append(Check.of("size", info.size == manifest.size_bytes,
                               f"{info.size} bytes stored, manifest says {manifest.size_bytes}"))
    try:
        cipher = reading_cipher(manifest, settings)
    except ConfigError as exc:
        cipher, report.checks = None, [*report.checks, Check.of("key", False, str(exc))]
    can_decode = manifest.encryption is None or (cipher is not None and cipher.can_decrypt)
    decoder = decode_chain(manifest, cipher, observer or NullSink()) if can_decode else None
    stored = decoder.stored if decoder else Digest(NullSink())
    try:
        _read_through(storage, key, decoder, stored, progress)
    except Interrupted:
        raise  # a stop request (from ``progress``) is not a finding about the copy
    except VerifyFailed as exc:
        report.checks.append(Check.of("sha256", stored.sha256 == manifest.sha256 and stored.size == manifest.size_bytes,
                                   sha_detail(stored.sha256, manifest.sha256)))
        report.checks.append(Check.of("decode", False, exc.message))
        return report
    except SentinelError as exc:
        report.checks.append(Check.of("read", False, exc.message))
        return report
    report.checks.append(Check.of("sha256", stored.sha256 == manifest.sha256,
                                  sha_detail(stored.sha256, manifest.sha256)))
    report.checks.extend(_sidecar(storage, manifest, key))
    if decoder is None:
        report.checks.append(Check.of("decode", True, "not decrypted: set AGE_IDENTITY_FILE to check the content too"))
        return report
    raw = decoder.raw
    report.checks.append(Check.of("raw", raw.sha256 == manifest.raw_sha256 and raw.size == manifest.raw_size_bytes,
                                  f"{raw.size} bytes after decoding, manifest says {manifest.raw_size_bytes}"))
    if observer is not None:
        report.checks.append(Check.of(observer.name, observer.complete(), observer.detail()))
    return report


def _open_report(storage: Storage, key: str) -> tuple[CopyReport, ObjectInfo | None]:
    """A report for one copy, with its first finding when the copy is missing."""
    report = CopyReport(storage.name, key)
    info = storage.stat(key)
    if info is None:
        report.checks.append(Check.of("exists", False, f"{key} is missing"))
    return report, info


def _read_through(storage: Storage, key: str, decoder: Decoder | None, stored: Digest,
                  progress: Callable[[int], None] | None) -> None:
    """Read one stored copy through the decode chain (or only the stored digest when it cannot be decoded)."""
    with storage.open_reader(key) as reader:
        if decoder:
            decoder.feed(reader, progress)
        else:
            pump(reader, stored, progress=progress)


def _sidecar(storage: Storage, manifest: Manifest, key: str) -> list[Check]:
    """The ``.sha256`` file, when present, must agree with the manifest."""
    sidecar = key + ".sha256"
    if storage.stat(sidecar) is None:
        return []
    text = storage.read_bytes(sidecar).decode(errors="replace").split()
    ok = bool(text) and text[0] == manifest.sha256
    return [Check.of("sha256-file", ok, f"{sidecar} " + ("agrees" if ok else "disagrees with the manifest"))]


# --- legacy files of the shell version ---------------------------------------------------
def verify_legacy(storage: Storage, manifest: Manifest, settings: Settings, *, key: str | None = None,
                  progress: Callable[[int], None] | None = None) -> CopyReport:
    """Every check a shell-version file allows (``manifest`` is synthesized by the catalog):
    MIN_BACKUP_SIZE, decryption with ENCRYPTION_KEY_PATH for ``.enc``, gzip integrity by full
    decompression, pg_dump's end-of-dump marker, and ``<file>.sha256`` when the shell version
    left one. Never raises for a bad file."""
    key = key or manifest.artifact
    report, info = _open_report(storage, key)
    if info is None:
        return report
    minimum = settings.min_backup_size
    big_enough = not minimum or info.size >= minimum
    report.checks.append(Check.of("size", big_enough, f"{info.size} bytes stored" + (
        "" if not minimum else f", MIN_BACKUP_SIZE is {minimum}" if big_enough else
        f", less than MIN_BACKUP_SIZE {minimum} (set MIN_BACKUP_SIZE=0 if the database really is that small)")))
    cipher: Cipher | None = None
    if manifest.encryption is not None:
        try:
            cipher = cipher_for_manifest(manifest.encryption.method, "", settings)
        except ConfigError as exc:
            report.checks.append(Check.of("key", False, f"encrypted by the shell version and cannot be read: {exc}"
                                       " (set ENCRYPTION_KEY_PATH to the key file it was made with)"))
    observer = EndMarker()
    decoder = decode_chain(manifest, cipher, observer) if manifest.encryption is None or cipher else None
    stored = decoder.stored if decoder else Digest(NullSink())
    try:
        _read_through(storage, key, decoder, stored, progress)
    except Interrupted:
        raise
    except VerifyFailed as exc:
        report.checks.append(Check.of("decode", False, f"{exc.message} (the file is truncated or damaged)"))
        return report
    except SentinelError as exc:
        report.checks.append(Check.of("read", False, exc.message))
        return report
    report.stored_sha256, report.stored_size = stored.sha256, stored.size
    report.checks.extend(_legacy_sidecar(storage, key, stored.sha256))
    if decoder is not None:
        what = "decrypted and decompressed" if cipher else "decompressed"
        report.checks.append(Check.of("decode", True, f"{what} in full: {decoder.raw.size} bytes of SQL"))
        report.checks.append(Check.of(observer.name, observer.complete(), observer.detail()))
    return report


def _legacy_sidecar(storage: Storage, key: str, sha256: str) -> list[Check]:
    """``<file>.sha256`` (``sha256sum`` output: hash, then the name) must match the bytes read."""
    sidecar = key + SHA256_SUFFIX
    if storage.stat(sidecar) is None:
        return [Check.of("sha256-file", True, f"no {sidecar}: nothing recorded to compare with")]
    text = storage.read_bytes(sidecar).decode(errors="replace").split()
    recorded = text[0].lower() if text else ""
    ok = recorded == sha256
    return [Check.of("sha256-file", ok, f"sha256 {sha256[:16]}... " + (
        f"matches {sidecar}" if ok else f"!= {sidecar} ({recorded[:16] or 'empty'}...)"))]


def prove_legacy(storage: Storage, manifest: Manifest, settings: Settings,
                 progress: Callable[[int], None] | None = None) -> Manifest:
    """Verify a legacy file in full before it is restored; the description with the SHA-256 and
    size just read, so the restore pass can tell if the file changed in between."""
    report = verify_legacy(storage, manifest, settings, progress=progress)
    if not report.ok:
        detail = failures(report.checks)
        raise VerifyFailed(f"{storage.name}:{manifest.artifact} cannot be restored: {detail}",
                           "restore another backup; `sentinel-backup verify NAME` shows every check")
    return manifest.model_copy(update={"sha256": report.stored_sha256, "size_bytes": report.stored_size})
