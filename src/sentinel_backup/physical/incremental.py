"""Incremental base backups (PostgreSQL 17+) and the restore of a chain with ``pg_combinebackup``.

Backup (``backup --physical --incremental`` or ``PHYSICAL_INCREMENTAL=true``):

1. The server must be PostgreSQL 17 or newer (else exit 2 naming its version) with
   ``summarize_wal = on`` (else exit 2 with the fix); container mode and clusters with
   tablespaces are refused (``pg_basebackup`` must read the parent's manifest from a local
   file, and the chain restore maps no tablespaces yet).
2. The parent is the newest physical backup of this cluster in the catalog (any destination);
   the chain policy (``physical.chain.needs_full``) or WAL summaries that do not reach back to
   the parent's start make it a full backup instead, with the reason logged.
3. The parent's ``backup_manifest`` (stored beside its artifact, encoded like it) is decoded
   into a private temporary folder for ``pg_basebackup --incremental=FILE`` and removed after.

Restore (:class:`ChainScratch`): every member of the chain is checked present, then fetched,
verified (stored and raw SHA-256) and extracted, two members at a time, into its own folder of a
private scratch directory (``PHYSICAL_SPOOL_DIR`` or the system temporary folder) before the
target is touched; ``pg_combinebackup`` (of the backup's major version, next to its server
binaries; ``--no-sync``, ``--link`` on 18+ within one file system) then writes the full data
directory into the target. Scratch space: about the sum of the chain members' raw sizes,
besides the result in the target. The scratch is removed afterwards, also on failure.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentinel_backup import log
from sentinel_backup.choices import Compression
from sentinel_backup.config import Settings, parse_duration
from sentinel_backup.errors import ConfigError, Interrupted, RestoreFailed, SentinelError
from sentinel_backup.interrupt import process_alive
from sentinel_backup.model.catalog import Entry, scan
from sentinel_backup.model.manifest import PhysicalFacts
from sentinel_backup.pg.source import Source
from sentinel_backup.physical.chain import ChainPolicy, chain_of, needs_full, position, root_id
from sentinel_backup.physical.extract import TarExtractor
from sentinel_backup.pipeline.read import decoder_for, reading_cipher
from sentinel_backup.storage.base import Storage

if TYPE_CHECKING:
    from sentinel_backup.checks import CheckResult
    from sentinel_backup.physical.restore import PhysicalRestore

logger = log.get("physical")
MIN_MAJOR = 17
STATE_SQL = ("SELECT json_build_object('version', current_setting('server_version'), 'version_num',"
             " current_setting('server_version_num')::int, 'summarize_wal', current_setting('summarize_wal', true),"
             " 'system_id', (SELECT system_identifier::text FROM pg_control_system()),"
             " 'tablespaces', (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')))")
SUMMARIES_SQL = "SELECT coalesce(min(start_lsn)::text, '') FROM pg_available_wal_summaries() WHERE tli = {tli}"


def incremental_problem(state: dict[str, Any]) -> ConfigError | None:
    """Why this server cannot take incremental backups (``state``: STATE_SQL's row), or None."""
    if int(state["version_num"]) < MIN_MAJOR * 10000:
        return ConfigError(f"incremental backups need PostgreSQL {MIN_MAJOR} or newer; the server is PostgreSQL"
                           f" {state['version']}", "take full base backups (backup --physical without --incremental,"
                           " PHYSICAL_INCREMENTAL=false), or upgrade the server")
    if state.get("summarize_wal") != "on":
        return ConfigError("incremental backups need summarize_wal = on; the server has it off",
                           "as a superuser: ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); then take"
                           " a full backup (backup --physical): the next incremental builds on it")
    return None


def server_state(source: Source) -> dict[str, Any]:
    state = source.query_json(STATE_SQL)
    assert isinstance(state, dict)
    return state


@dataclass
class Increment:
    """What the next backup is: an incremental on ``parent`` (with its manifest decoded to
    ``manifest_path``), or a full one (``parent`` None) for ``reason``."""

    parent: Entry | None = None
    manifest_path: Path | None = None
    reason: str = ""

    def facts(self, facts: PhysicalFacts) -> PhysicalFacts:
        if self.parent is None:
            return facts
        return facts.model_copy(update={"parent_id": self.parent.id, "chain_root_id": root_id(self.parent),
                                        "chain_position": position(self.parent) + 1})

    def cleanup(self) -> None:
        if self.manifest_path is not None:
            shutil.rmtree(self.manifest_path.parent, ignore_errors=True)
            self.manifest_path = None


def plan_increment(settings: Settings, destinations: list[Storage], source: Source,
                   now: datetime | None = None) -> Increment:
    """Decide full or incremental and prepare the parent's manifest (see the module docstring)."""
    if source.container:
        raise ConfigError("incremental backups cannot run through docker exec (pg_basebackup must read the parent's"
                          " backup_manifest from a local file)", "run sentinel-backup on the database host, or take"
                          " full backups (PHYSICAL_INCREMENTAL=false)")
    state = server_state(source)
    problem = incremental_problem(state)
    if problem is not None:
        raise problem
    if int(state["tablespaces"]):
        raise ConfigError("incremental backups of a cluster with tablespaces are not supported",
                          "take full base backups (PHYSICAL_INCREMENTAL=false)")
    from sentinel_backup.physical.restore import physical_entries
    entries = scan(destinations, strict=False).entries
    pool = physical_entries(entries, str(state["system_id"]))
    parent = pool[0] if pool else None
    root = None
    if parent is not None:
        root = next((e for e in entries if e.id == root_id(parent)), None)
    policy = ChainPolicy(parse_duration(settings.physical_full_every) if settings.physical_full_every else None,
                         settings.physical_max_incrementals)
    reason = needs_full(parent, root, policy, now or datetime.now(UTC))
    if reason is None and parent is not None:
        reason = _summaries_missing(source, parent)
    if reason is not None or parent is None:
        logger.info(f"Full base backup: {reason}")
        return Increment(reason=reason or "")
    try:
        path = _decode_manifest(settings, parent, destinations, str(state["system_id"]))
    except RestoreFailed as exc:  # the backup still happens: a full one starts a new chain
        logger.warning(f"Full base backup instead of an incremental: {exc.message}")
        return Increment(reason=exc.message)
    logger.info(f"Incremental base backup on {parent.id} (chain of {root_id(parent)}, position"
                f" {position(parent) + 1})")
    return Increment(parent, path)


def _summaries_missing(source: Source, parent: Entry) -> str | None:
    """A reason when the server's WAL summaries do not reach back to the parent's start."""
    facts = parent.manifest.physical
    assert facts is not None
    from sentinel_backup.physical.facts import parse_lsn
    try:
        text = source.query_json(f"SELECT to_json(({SUMMARIES_SQL.format(tli=int(facts.timeline))}))")
    except SentinelError as exc:  # not allowed to read them: pg_basebackup will say what is wrong
        logger.debug(f"Cannot list WAL summaries: {exc.message}")
        return None
    if not text:
        return "the server has no WAL summaries yet (summarize_wal was just turned on?)"
    if parse_lsn(str(text)) > parse_lsn(facts.start_lsn):
        return f"the WAL summaries start at {text}, after {parent.id} began ({facts.start_lsn})"
    return None


class _File:
    def __init__(self, out: Any) -> None:
        self.out = out

    def write(self, data: bytes) -> None:
        self.out.write(data)

    def close(self) -> None:
        pass


def _decode_manifest(settings: Settings, parent: Entry, destinations: list[Storage], system_id: str) -> Path:
    """The parent's backup_manifest, decoded into a private temporary folder."""
    facts = parent.manifest.physical
    assert facts is not None and facts.backup_manifest_key is not None
    folder = Path(tempfile.mkdtemp(prefix="sentinel-parent-manifest-"))
    path = folder / "backup_manifest"
    errors = []
    for storage in destinations:
        if storage.name not in parent.locations:
            continue
        try:
            blob = storage.read_bytes(facts.backup_manifest_key)
            with open(path, "wb") as out:
                decoder = decoder_for(Compression(parent.manifest.compression.algorithm),
                                      reading_cipher(parent.manifest, settings), _File(out))
                decoder.feed(io.BytesIO(blob))
            doc = json.loads(path.read_bytes())
            if str(doc.get("System-Identifier", system_id)) != system_id:
                raise ConfigError(f"the backup_manifest of {parent.id} is of another cluster")
            return path
        except (SentinelError, OSError, ValueError) as exc:
            errors.append(f"{storage.name}: {exc}")
    shutil.rmtree(folder, ignore_errors=True)
    raise RestoreFailed(f"the backup_manifest of {parent.id} cannot be read ({'; '.join(errors) or 'no copy'})")


# --- restore of a chain ---------------------------------------------------------------------------
SCRATCH_PREFIX = "sentinel-combine-"


def remove_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove ``<prefix><pid>-*`` folders whose process is gone (a killed restore's scratch)."""
    removed = []
    for folder in parent.glob(f"{prefix}*"):
        match = re.match(rf"{re.escape(prefix)}(\d+)-", folder.name)
        if match is None or process_alive(int(match.group(1))):
            continue
        logger.warning(f"Removing the scratch of an interrupted restore: {folder}")
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed



def chain_for(entry: Entry, entries: list[Entry], destinations: list[Storage],
              wanted: str | None) -> list[tuple[Entry, Storage]]:
    """Every member of ``entry``'s chain (root first) and the destination to read it from."""
    from sentinel_backup.logical.restore import pick_copy
    return [(member, pick_copy(member, destinations, wanted)) for member in chain_of(entry, entries)]


EXTRACT_WORKERS = 2


class _CancellableExtractor(TarExtractor):
    """A TarExtractor that stops at its next chunk once ``cancel`` is set (another member failed,
    or a signal stopped the restore)."""

    def __init__(self, cancel: threading.Event, *args: Any) -> None:
        super().__init__(*args)
        self.cancel = cancel

    def write(self, data: bytes) -> None:
        if self.cancel.is_set():
            raise Interrupted("the chain restore was stopped")
        super().write(data)


class ChainScratch:
    """The members of a chain fetched, verified and extracted into a scratch directory, then
    combined into the target by ``pg_combinebackup`` (see the module docstring)."""

    def __init__(self, restorer: PhysicalRestore, chain: list[tuple[Entry, Storage]], bin_dir: Path | None) -> None:
        self.restorer, self.chain = restorer, chain
        major = chain[-1][0].manifest.server_version or "?"
        tool = bin_dir / "pg_combinebackup" if bin_dir is not None else None
        if tool is None or not tool.is_file():
            raise ConfigError(f"restoring an incremental backup needs pg_combinebackup of PostgreSQL {major},"
                              f" found none{f' in {bin_dir}' if bin_dir else ''}",
                              "install the PostgreSQL server package of that version or set PG_BIN_DIR")
        self.tool = tool
        for member, _storage in chain:
            if member.manifest.physical is not None and member.manifest.physical.tablespaces:
                raise ConfigError(f"{member.id} holds tablespaces; restoring an incremental chain with tablespaces is"
                                  " not supported", "restore a full base backup")
        self.folder: Path | None = None
        self.members: list[Path] = []

    def prepare(self) -> None:
        """Check every member is stored, then fetch, verify and extract each; nothing touches the target."""
        for member, storage in self.chain:
            info = storage.stat(member.manifest.artifact)
            if info is None or info.size != member.manifest.size_bytes:
                what = "missing" if info is None else \
                    f"{info.size} bytes, the manifest says {member.manifest.size_bytes}"
                raise RestoreFailed(f"chain member {member.id} is {what} on {storage.name}"
                                    f" ({member.manifest.artifact}); nothing was written",
                                    "restore from another destination (--from) or an older full backup")
        owner = self.restorer.owner
        parent = self.restorer.settings.physical_spool_dir or Path(tempfile.gettempdir())
        remove_stale(parent, SCRATCH_PREFIX)
        self.folder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent))
        if owner is not None:
            os.chmod(self.folder, 0o700)
            os.chown(self.folder, *owner)
        cancel = threading.Event()
        try:
            for n, (member, _storage) in enumerate(self.chain):
                target = self.folder / f"{n:03d}-{member.id}"
                target.mkdir(mode=0o700)
                if owner is not None:
                    os.chown(target, *owner)
                self.members.append(target)
            # the members are independent until pg_combinebackup: two at a time (the root, the largest,
            # beside the incrementals); a signal raises here in the main thread, the workers then stop at
            # their next chunk before the scratch is removed
            with ThreadPoolExecutor(max_workers=EXTRACT_WORKERS, thread_name_prefix="chain") as pool:
                jobs = [pool.submit(self._extract_member, n, target, cancel)
                        for n, target in enumerate(self.members)]
                try:
                    wait(jobs, return_when=FIRST_EXCEPTION)
                    failed = [e for e in (job.exception() for job in jobs if job.done()) if e is not None]
                    if failed:  # the first failed member in chain order; the others stop
                        raise failed[0]
                except BaseException:
                    cancel.set()
                    raise
        except BaseException:
            self.cleanup()
            raise

    def _extract_member(self, n: int, target: Path, cancel: threading.Event) -> None:
        member, storage = self.chain[n]
        if cancel.is_set():
            return
        logger.info(f"Fetching chain member {n + 1}/{len(self.chain)}: {member.id} from {storage.name}")
        try:
            self.restorer._extract(member, storage, _CancellableExtractor(cancel, target, {}, self.restorer.owner))
        except Interrupted:
            raise
        except SentinelError as exc:  # a corrupt or undecodable member
            raise RestoreFailed(f"chain member {member.id}: {exc.message}; nothing was written to the"
                                " target", exc.hint) from None

    def combine(self, pgdata: Path) -> None:
        run_as = ["runuser", "-u", "postgres", "--"] if self.restorer.owner is not None else []
        # --no-sync: as after the extraction of a full backup, the server syncs the whole data directory
        # when it first starts (a base backup's pg_control says it was not shut down cleanly)
        argv = [*run_as, str(self.tool), "-o", str(pgdata), "--no-sync", *self.link_option(pgdata),
                *map(str, self.members)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
        if proc.returncode != 0:
            raise RestoreFailed(f"pg_combinebackup failed: {(proc.stderr or proc.stdout).strip()[-2000:]}",
                                "check the scratch space (PHYSICAL_SPOOL_DIR) and the chain (sentinel-backup list)")
        logger.info(f"Combined {len(self.members)} chain member(s) into {pgdata}")

    def link_option(self, pgdata: Path) -> list[str]:
        """``--link`` (PostgreSQL 18+) when the scratch and the target share a file system: the
        files no incremental changed become hard links to the extracted ones instead of copies
        (the scratch is removed right after, so nothing else ever uses them)."""
        from sentinel_backup.pg.tools import major_of
        if self.folder is None or major_of(self.chain[-1][0].manifest.server_version or "0") < 18:
            return []
        try:
            same = os.stat(self.folder).st_dev == os.stat(pgdata).st_dev
        except OSError:
            return []
        return ["--link"] if same else []

    def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> ChainScratch:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.cleanup()


def incremental_check(source: Source) -> CheckResult:
    """For ``check`` with PHYSICAL_INCREMENTAL: the server can take incremental backups."""
    from sentinel_backup.checks import CRITICAL, OK, CheckResult
    try:
        state = server_state(source)
    except SentinelError as exc:
        return CheckResult("incremental backups", CRITICAL, exc.message, exc.hint)
    problem = incremental_problem(state)
    if problem is not None:
        return CheckResult("incremental backups", CRITICAL, problem.message, problem.hint)
    return CheckResult("incremental backups", OK, f"PostgreSQL {state['version']}, summarize_wal = on")
