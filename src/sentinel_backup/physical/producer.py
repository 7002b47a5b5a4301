"""The physical producer: ``pg_basebackup`` writing one tar stream, and the facts it proves.

``pg_basebackup -D - -Ft -X fetch --checkpoint=<fast|spread> -l <label> --no-password`` over a
replication connection made from POSTGRES_HOST/PORT/USER (the password only in the child's
environment; in container mode through ``docker exec``). ``-X fetch`` puts the WAL needed to
reach consistency into the tar, so a base backup restores on its own. ``pg_basebackup`` 13 and
newer inject ``backup_manifest`` as the last member of the tar written to stdout (checked on 15,
16 and 18; 13/14 do it in ``ReceiveTarFile``, 15+ in the bbstreamer). Older ones write no
manifest: such a base backup is stored without it, ``backup_manifest_key`` stays empty, and the
stop LSN is the server's WAL position read right after the backup (an upper bound).

With COMPRESSION=zstd and PHYSICAL_ZSTD_BY_PG_BASEBACKUP=true (opt-in), ``compress_itself`` adds
``--compress=client-zstd:level=L[,workers=N]`` when this ``pg_basebackup`` takes it (15+, built with
zstd; a probe that connects nowhere tells): its stdout is then the stored compression, walked by the
in-stream decode (``observer`` is the capturing walker), and a failed exit is raised at the end of the
stream, before the cut-short frame could be blamed on the decoder.

Several tablespaces: ``pg_basebackup`` refuses ``-D -`` then (each tablespace is its own tar).
The producer then spools: ``-D <spool> -Ft`` writes ``base.tar``, ``<oid>.tar`` per tablespace
and ``backup_manifest`` into a private temporary folder (as large as the cluster: see
docs/operations.md), and streams one tar made of ``base.tar``'s members, each tablespace's
members under ``pg_tblspc/<oid>/`` and ``backup_manifest`` at the end. The spool is removed
as soon as the stream has been read (or the backup failed).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from sentinel_backup import log
from sentinel_backup.errors import BackupFailed, SourceError
from sentinel_backup.interrupt import stop_children
from sentinel_backup.model.manifest import PhysicalFacts
from sentinel_backup.pg.source import PSQL_FLAGS, Source, StderrCollector, conninfo, source_error
from sentinel_backup.physical.facts import format_lsn, parse_label, parse_lsn, parse_time, wal_file, wal_ranges
from sentinel_backup.streams.tar import CapturingReader, TarObserver, TarWalker

logger = log.get("physical")
LABEL = "backup_label"
MANIFEST = "backup_manifest"
TABLESPACE_PREFIX = "pg_tblspc/"

SERVER_SQL = ("SELECT system_identifier || '|' || (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')"
              " || '|' || pg_is_in_recovery() || '|' || current_setting('server_version') FROM pg_control_system()")
TABLESPACES_SQL = ("SELECT coalesce(json_agg(json_build_object('oid', oid, 'name', spcname, 'location',"
                   " pg_tablespace_location(oid)) ORDER BY oid), '[]'::json) FROM pg_tablespace"
                   " WHERE spcname NOT IN ('pg_default', 'pg_global')")


class PgBasebackupProducer:
    """One base backup of the configured server (see the module docstring)."""

    tool = "pg_basebackup"

    def __init__(self, source: Source, *, checkpoint: str = "fast", label: str = "sentinel-backup",
                 spool_dir: Path | None = None, incremental: Path | None = None) -> None:
        self.source = source
        self.incremental = incremental  # the parent's backup_manifest (physical.incremental), or None: full
        self.checkpoint = checkpoint
        self.backup_label = label
        self.spool_parent = spool_dir
        self.walker: TarWalker = TarWalker(capture=(LABEL, MANIFEST))
        self.compress: str | None = None  # pg_basebackup's --compress (see compress_itself), or None: raw tar
        where = source.settings.postgres_container or source.settings.postgres_host or "local socket"
        self.label = f"pg_basebackup of {where}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.errors: StderrCollector | None = None
        self.spool: Path | None = None
        self._merge: threading.Thread | None = None
        self._merge_error: BaseException | None = None
        self._reader: IO[bytes] | None = None
        self._stopped = False
        self.system_identifier = ""
        self.server_version = ""
        self.segment_size = 0
        self.tablespaces: list[dict[str, object]] = []
        self.finished_at: datetime | None = None

    # --- before -----------------------------------------------------------------------
    def inspect(self) -> None:
        """Read what the facts need from the server before the backup starts."""
        out = self.source.run("psql", *PSQL_FLAGS, "-d", conninfo("postgres"), "-c", SERVER_SQL).strip()
        sysid, segment, recovery, version = out.split("|", 3)
        self.system_identifier, self.server_version, self.segment_size = sysid, version, int(segment)
        if recovery == "true":
            logger.info("The server is a standby: the base backup is taken from it")
        listed = self.source.query_json(TABLESPACES_SQL)
        assert isinstance(listed, list)
        self.tablespaces = [dict(t) for t in listed]

    def compress_itself(self, level: int, workers: int) -> bool:
        """Let ``pg_basebackup`` compress its tar with zstd (``--compress=client-zstd:level=L,workers=N``,
        PostgreSQL 15 and newer) when its build can: the stream is then stored as it comes and the
        in-stream check decodes it for the raw SHA-256 and the facts (see ``observer``). False (the
        raw tar, compressed by the tool) with several tablespaces (spooled) or a pg_basebackup that
        refuses the option: one without zstd, or older than 15. Call after :meth:`inspect`."""
        if self.tablespaces:
            return False
        spec = f"client-zstd:level={level}" + (f",workers={workers}" if workers else "")
        # No connection is made: a build that takes the option fails on the impossible socket
        # instead, after checking the compression (16+: "this build does not support ...").
        probe = self.source.command("pg_basebackup", "-D", "-", "-Ft", "-X", "fetch", f"--compress={spec}",
                                    "--no-password", "-d", "host=/nonexistent/sentinel-probe port=1", connect=False)
        proc = self.source.spawn(probe)
        _out, err = proc.communicate()
        said = err.decode(errors="replace").lower()
        if proc.returncode == 0 or "compress" in said or "connect" not in said:
            logger.debug(f"pg_basebackup does not compress with zstd itself: {said.strip()[:200]}")
            return False
        self.compress = spec
        self.walker = TarObserver(capture=(LABEL, MANIFEST))
        return True

    def argv(self, target: str) -> list[str]:
        incremental = [f"--incremental={self.incremental}"] if self.incremental is not None else []
        compress = [f"--compress={self.compress}"] if self.compress is not None and target == "-" else []
        return self.source.command("pg_basebackup", "-D", target, "-Ft", "-X", "fetch",
                                   f"--checkpoint={self.checkpoint}", "-l", self.backup_label, "--no-password",
                                   *compress, *incremental)

    # --- the Producer protocol ------------------------------------------------------------
    def start(self) -> IO[bytes]:
        if not self.system_identifier:
            self.inspect()
        if not self.tablespaces:
            self.proc = self.source.spawn(self.argv("-"))
            self.errors = StderrCollector(self.proc)
            assert self.proc.stdout is not None
            if self.compress is not None:  # the walker sees the decoded stream (observer)
                return _ExitChecked(self.proc, self.errors)  # type: ignore[return-value]
            return CapturingReader(self.proc.stdout, self.walker)  # type: ignore[return-value]
        return self._spooled()

    def finish(self) -> None:
        if self._merge is not None:
            self._merge.join()
        code = self.proc.wait() if self.proc is not None else 0
        if self.errors is not None:
            self.errors.join()
        self._cleanup()
        if code != 0:
            raise source_error("pg_basebackup", self.errors.text() if self.errors else "", code)
        if self._merge_error is not None:
            raise BackupFailed(f"the spooled base backup could not be streamed: {self._merge_error}")
        if not self.walker.complete():
            raise BackupFailed(f"pg_basebackup output is not a complete tar archive: {self.walker.detail()}",
                               "nothing was committed; run the backup again")
        if LABEL not in self.walker.captured:
            raise BackupFailed("pg_basebackup output holds no backup_label", "report this with the PostgreSQL version")
        self.finished_at = self._server_now()

    def stop(self) -> None:
        self._stopped = True
        if self.proc is not None and self.proc.poll() is None:
            stop_children([self.proc])
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        if self._reader is not None and self._merge is not None:
            with contextlib.suppress(OSError):
                self._reader.close()  # the merging thread's next write fails: it ends, the spool can go
            self._merge.join(timeout=30)
        self._cleanup()

    def observer(self) -> TarObserver:
        if isinstance(self.walker, TarObserver):
            return self.walker  # compressed by pg_basebackup: the facts come from the in-stream decode
        return TarObserver()

    # --- after --------------------------------------------------------------------------
    @property
    def backup_manifest(self) -> bytes | None:
        return self.walker.captured.get(MANIFEST)

    def facts(self, manifest_key: str | None) -> PhysicalFacts:
        label = parse_label(self.walker.captured[LABEL].decode(errors="replace"))
        manifest = self.backup_manifest
        ranges = wal_ranges(manifest) if manifest is not None else []
        if ranges:
            timeline, _start, stop = ranges[-1]
        else:  # pg_basebackup 12 or older: no manifest in the stream; the server's position bounds it
            timeline, stop = label.timeline, parse_lsn(self._query("SELECT pg_current_wal_lsn()"))
        return PhysicalFacts(
            system_identifier=self.system_identifier, timeline=timeline,
            start_lsn=format_lsn(label.start_lsn), stop_lsn=format_lsn(stop), start_wal=label.start_wal,
            stop_wal=wal_file(timeline, max(stop - 1, label.start_lsn), self.segment_size),
            wal_segment_size=self.segment_size, wal_included=True, backup_label=label.label,
            backup_manifest_key=manifest_key if manifest is not None else None,
            backup_manifest_sha256=hashlib.sha256(manifest).hexdigest() if manifest is not None else None,
            tablespaces=[{**t, "member_prefix": f"{TABLESPACE_PREFIX}{t['oid']}/"} for t in self.tablespaces],
            pg_basebackup_version=self._version(), start_time=label.start_time, stop_time=self.finished_at)

    def _version(self) -> str | None:
        try:
            return self.source.tool_version("pg_basebackup")
        except SourceError:
            return None

    def _query(self, sql: str) -> str:
        return self.source.run("psql", *PSQL_FLAGS, "-d", conninfo("postgres"), "-c", sql).strip()

    def _server_now(self) -> datetime:
        text = self._query("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
                           " || '+0000'")
        return parse_time(text) or datetime.now(UTC)

    # --- several tablespaces: spool, then one merged tar --------------------------------
    def _spooled(self) -> IO[bytes]:
        self.spool = Path(tempfile.mkdtemp(prefix="sentinel-basebackup-", dir=self.spool_parent))
        target = self.spool / "out"
        if self.source.container:
            raise BackupFailed("a cluster with tablespaces cannot be backed up through docker exec (pg_basebackup"
                               " must write one tar per tablespace to a folder)", "run sentinel-backup on the"
                               " database host or in a container that reaches the server over the network")
        logger.info(f"{len(self.tablespaces)} tablespace(s): pg_basebackup writes to the spool {self.spool} first")
        self.proc = self.source.spawn(self.argv(str(target)), stdout=subprocess.DEVNULL)
        self.errors = StderrCollector(self.proc)
        code = self.proc.wait()
        self.errors.join()
        if code != 0 or self._stopped:
            self._cleanup()
            raise source_error("pg_basebackup", self.errors.text(), code)
        read_fd, write_fd = os.pipe()
        self._reader = os.fdopen(read_fd, "rb")
        self._merge = threading.Thread(target=self._write_merged, args=(target, write_fd), daemon=True)
        self._merge.start()
        return CapturingReader(self._reader, self.walker)  # type: ignore[return-value]

    def _write_merged(self, folder: Path, fd: int) -> None:
        try:
            with os.fdopen(fd, "wb") as pipe, tarfile.open(fileobj=pipe, mode="w|", format=tarfile.GNU_FORMAT) as out:
                _copy_members(folder / "base.tar", out, "")
                for space in self.tablespaces:
                    _copy_members(folder / f"{space['oid']}.tar", out, f"{TABLESPACE_PREFIX}{space['oid']}/")
                manifest = folder / MANIFEST
                if manifest.exists():
                    with open(manifest, "rb") as data:
                        out.addfile(out.gettarinfo(str(manifest), MANIFEST), data)
        except BaseException as exc:  # the reader sees a truncated tar; finish() names this
            self._merge_error = exc

    def _cleanup(self) -> None:
        if self.spool is not None and (self._merge is None or not self._merge.is_alive()):
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool = None


def _copy_members(path: Path, out: tarfile.TarFile, prefix: str) -> None:
    with tarfile.open(path, mode="r|") as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name in ("", "."):
                continue  # the tablespace's own folder: the pg_tblspc/<oid> link in base.tar stands for it
            member.name = prefix + name
            out.addfile(member, archive.extractfile(member) if member.isfile() else None)


class _ExitChecked:
    """pg_basebackup's stdout when it compresses: at the end of the stream, its exit status. A
    failed or killed pg_basebackup leaves a compressed stream cut short, which would otherwise
    surface as "does not decode"; its own failure is the cause to report."""

    def __init__(self, proc: subprocess.Popen[bytes], errors: StderrCollector) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.raw = proc.stdout
        self.errors = errors

    def read1(self, n: int = -1) -> bytes:
        read1 = getattr(self.raw, "read1", self.raw.read)
        data: bytes = read1(n)
        if not data:
            code = self.proc.wait()  # its stdout ended: it is exiting
            if code != 0:
                self.errors.join()
                raise source_error("pg_basebackup", self.errors.text(), code)
        return data

    read = read1

    def close(self) -> None:
        self.raw.close()

    def fileno(self) -> int:
        return self.raw.fileno()
