"""``backup --physical``: one base backup of the whole cluster through the shared pipeline.

``PgBasebackupProducer`` -> :func:`pipeline.write.write_stream` (SHA-256, compression,
encryption, every destination at once, the tar end-of-archive proven in-stream) ->
PostgreSQL's ``backup_manifest`` stored beside the artifact, encoded like it ->
:func:`pipeline.commit.commit` (each copy checked, then ``.sha256`` and the manifest: the
commit point). A killed or failed ``pg_basebackup`` commits nothing: ``write_stream`` aborts
every writer when the producer fails, and the sidecar is removed again.

Keys (see ``model.layout``)::

    basebackups/<system id>/sentinel_base_<stamp>.tar<.gz|.zst>[.enc|.age]   the tar stream
    basebackups/<system id>/sentinel_base_<stamp>.backup_manifest<same suffix>   PostgreSQL's manifest
    ... .manifest.json, .sha256 beside the artifact as for logical backups
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sentinel_backup import __version__, log
from sentinel_backup.choices import Compression
from sentinel_backup.config import Settings
from sentinel_backup.errors import BackupFailed, Interrupted, SentinelError
from sentinel_backup.interrupt import Stopper
from sentinel_backup.keys import cipher_from_settings
from sentinel_backup.logical.run import Outcome, RunResult
from sentinel_backup.model.layout import BASE_PREFIX, Handle, key_for
from sentinel_backup.model.manifest import Manifest, stamp
from sentinel_backup.pg.source import Source
from sentinel_backup.physical.incremental import Increment, plan_increment
from sentinel_backup.physical.producer import PgBasebackupProducer
from sentinel_backup.pipeline.commit import Committed, commit, unique_key
from sentinel_backup.pipeline.write import Encoding, Written, write_stream
from sentinel_backup.storage.base import Storage
from sentinel_backup.streams.base import Sink
from sentinel_backup.streams.compress import compressor
from sentinel_backup.streams.crypto import Cipher

logger = log.get("physical")
CLUSTER = "(cluster)"  # the ``database`` of a physical backup: all of them
MANIFEST_INFIX = ".backup_manifest"


def base_id(key: str) -> str:
    """``basebackups/<sysid>/sentinel_base_<stamp>.tar.gz`` -> ``base_<stamp>``."""
    name = key.rsplit("/", 1)[-1]
    return name.removeprefix("sentinel_").split(".", 1)[0]


def sidecar_key(artifact: str, encoding_suffix: str) -> str:
    head = artifact.split(".tar", 1)[0]
    return f"{head}{MANIFEST_INFIX}{encoding_suffix}"


class _Collect:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def close(self) -> None:
        pass


def encode_bytes(data: bytes, encoding: Encoding) -> bytes:
    """Small data (backup_manifest) compressed and encrypted like the artifact."""
    out = _Collect()
    inner: Sink = encoding.cipher.encryptor(out) if encoding.cipher else out
    sink = compressor(encoding.compression, encoding.level, inner, threads=0)
    sink.write(data)
    sink.close()
    return b"".join(out.parts)


class PhysicalRun:
    """Same shape as ``logical.run.BackupRun``: ``run()`` gives a RunResult with one outcome."""

    def __init__(self, settings: Settings, destinations: list[Storage], *, progress: Callable[[int], None] | None
                 = None, stop: threading.Event | Stopper | None = None, unusable: dict[str, str] | None = None,
                 cipher: Cipher | bool | None = True, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.destinations = destinations
        self.unusable = dict(unusable or {})
        self.source = Source(settings)
        self.cipher = cipher_from_settings(settings) if cipher is True else cipher or None
        self.progress = progress
        self.stopper = stop if isinstance(stop, Stopper) else Stopper(stop)
        self.source.on_spawn = self.stopper.adopt
        self.clock = clock or (lambda: datetime.now(UTC))
        self.increment = Increment()  # full, unless PHYSICAL_INCREMENTAL (physical.incremental)
        if not destinations:
            raise BackupFailed("no destination is enabled", "set LOCAL_ENABLED=true, S3_ENABLED or MINIO_ENABLED")

    def run(self) -> RunResult:
        if self.settings.physical_incremental:  # refusals (version, summarize_wal) exit 2 before anything starts
            self.increment = plan_increment(self.settings, self.destinations, self.source, self.clock())
        try:
            return self._run()
        finally:
            self.increment.cleanup()

    def _run(self) -> RunResult:
        with self.stopper.watching():
            started = self.clock()
            t0 = time.monotonic()
            outcome = Outcome(CLUSTER, "physical", failed=dict(self.unusable))
            interrupted: Interrupted | None = None
            try:
                self.stopper.check("the backup")
                self._one(outcome, started)
            except Exception as exc:
                if not self.stopper.settle() and not isinstance(exc, Interrupted):
                    if not isinstance(exc, SentinelError):
                        raise
                    outcome.error = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
                    logger.error(f"Base backup failed: {exc.message}", extra=log.fields(hint=exc.hint or ""))
                else:
                    interrupted = self.stopper.error("the backup")
                    outcome.error = "interrupted; nothing of it was committed" if not outcome.stored else \
                        f"interrupted; complete on {', '.join(outcome.stored)} and stays"
                    logger.warning(f"Base backup {outcome.error}")
            return RunResult([outcome], started, time.monotonic() - t0, interrupted)

    def encoding(self) -> Encoding:
        return Encoding.from_settings(self.settings, self.cipher)

    def _one(self, outcome: Outcome, moment: datetime) -> None:
        tools = self.source.matched_tools()
        logger.debug(f"Client tools: {tools.describe()}")
        producer = PgBasebackupProducer(self.source, checkpoint=self.settings.physical_checkpoint.value,
                                        label=f"sentinel-backup {stamp(moment)}",
                                        spool_dir=self.settings.physical_spool_dir,
                                        incremental=self.increment.manifest_path)
        producer.inspect()
        sysid = producer.system_identifier
        encoding = self.encoding()
        # zstd: pg_basebackup compresses as it writes, the tool stores and decodes (no second
        # pass over the raw tar in this process: docs/performance.md). gzip stays ours (ISA-L).
        precompressed = encoding.compression is Compression.ZSTD and self.settings.physical_zstd_by_pg_basebackup \
            and producer.compress_itself(encoding.level, encoding.threads)
        key = unique_key(self.destinations, lambda n: key_for(Handle(
            "physical", f"{BASE_PREFIX}{stamp(moment + timedelta(seconds=n))}.tar{encoding.suffix}", sysid)),
            what="the base backup")
        logger.info("Base backup started", extra=log.fields(
            artifact=key, destinations=",".join(d.name for d in self.destinations), encoding=encoding.describe(),
            tablespaces=len(producer.tablespaces), compressed_by="pg_basebackup" if precompressed else "sentinel"))
        begin = self.clock()
        t0 = time.monotonic()
        written = write_stream(producer, key, self.destinations, encoding, verify=self.settings.verify_after_backup,
                               stopper=self.stopper, progress=self.progress, precompressed=precompressed)
        sidecars: list[tuple[Storage, str]] = []
        try:
            self.stopper.check()
            manifest_key = sidecar_key(key, encoding.suffix)
            pg_manifest = producer.backup_manifest
            if pg_manifest is not None:
                blob = encode_bytes(pg_manifest, encoding)
                for dest in self.destinations:
                    if dest.name in written.fanout.healthy:
                        dest.put_bytes(manifest_key, blob)
                        sidecars.append((dest, manifest_key))
            else:
                logger.warning("pg_basebackup wrote no backup_manifest into the stream (version 12 or older):"
                               " the base backup is stored without it")
            manifest = self._manifest(key, begin, time.monotonic() - t0, producer, written, encoding, manifest_key)
            commit(written, manifest, self.destinations, settings=self.settings, stopper=self.stopper,
                   committed=Committed(outcome.stored, outcome.failed))
            self._drop_sidecars([s for s in sidecars if s[0].name not in outcome.stored])  # failed copies
        except BaseException:
            written.abort()
            self._drop_sidecars([s for s in sidecars if s[0].name not in outcome.stored])
            raise
        outcome.manifest = manifest
        facts = manifest.physical
        assert facts is not None
        logger.info("Base backup completed", extra=log.fields(
            artifact=key, raw_bytes=manifest.raw_size_bytes, stored_bytes=manifest.size_bytes,
            seconds=manifest.duration_seconds, start_lsn=facts.start_lsn, stop_lsn=facts.stop_lsn,
            destinations=",".join(outcome.stored)))

    @staticmethod
    def _drop_sidecars(sidecars: list[tuple[Storage, str]]) -> None:
        """Remove the backup_manifest copies of destinations that hold no committed backup."""
        for dest, sidecar in sidecars:
            try:
                dest.delete(sidecar)
            except SentinelError as exc:
                logger.warning(f"Could not remove {sidecar} from {dest.name}: {exc.message}")

    def _manifest(self, key: str, begin: datetime, seconds: float, producer: PgBasebackupProducer,
                  written: Written, encoding: Encoding, manifest_key: str) -> Manifest:
        return Manifest(
            id=base_id(key), kind="physical", database=CLUSTER, artifact=key, created_at=begin,
            finished_at=self.clock(), duration_seconds=round(seconds, 3), tool_version=__version__,
            hostname=socket.gethostname(), server=self.settings.server_name, source=self.source.describe(),
            server_version=producer.server_version,
            format="tar", compression=encoding.compression_info(), encryption=encoding.encryption_info(),
            raw_size_bytes=written.raw.size, raw_sha256=written.raw.sha256, size_bytes=written.stored.size,
            sha256=written.stored.sha256, physical=self.increment.facts(producer.facts(manifest_key)))
