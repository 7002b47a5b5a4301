"""``restore --physical``: a base backup into a new data directory, ready for point-in-time recovery.

1. Pick the base backup: the one named, or the newest that precedes the target (its stop
   time before ``--target-time``, its stop LSN before ``--target-lsn``; with a restore point
   or an xid, whose position is only known to the WAL, the newest: name an older one by id).
2. Refuse, before writing anything, a non-empty target folder and server binaries of another
   major version than the backup's (PG_BIN_DIR, else the distribution folders).
3. Stream the stored artifact through the shared read/decode chain into the tar extractor
   (mode 0700, owned by the postgres OS user when run as root); stored and raw SHA-256 are
   compared with the manifest at the end, and a mismatch removes what was written.
4. Write ``recovery.signal`` and the recovery settings into ``postgresql.auto.conf``:
   ``restore_command`` calling this tool's ``wal-fetch`` with the same env file, the target,
   ``recovery_target_timeline = 'latest'``, and ``archive_mode = off`` unless asked to keep
   archiving (a restored copy must not push its WAL into the original's archive: it shares
   the original's system identifier, so its segments of a new timeline would land beside the
   original's and look like the original's history).
5. Print the command that starts it; with ``--start PORT`` start a temporary server (private
   socket folder, no TCP), wait until recovery ended, and report the time and LSN reached.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sentinel_backup import log
from sentinel_backup.config import Settings
from sentinel_backup.errors import ConfigError, NotFound, RestoreFailed
from sentinel_backup.model.catalog import Entry
from sentinel_backup.pg.tools import LAYOUTS, major_of, tool_version
from sentinel_backup.physical.extract import TarExtractor
from sentinel_backup.physical.facts import parse_lsn
from sentinel_backup.physical.server import TemporaryServer
from sentinel_backup.pipeline.read import decode_chain, reading_cipher
from sentinel_backup.storage.base import Storage

logger = log.get("physical")
ACTIONS = ("promote", "pause", "shutdown")


@dataclass(frozen=True)
class Target:
    time: datetime | None = None
    lsn: str | None = None
    name: str | None = None
    xid: str | None = None
    action: str = "promote"

    def __post_init__(self) -> None:
        given = [v for v in (self.time, self.lsn, self.name, self.xid) if v is not None]
        if len(given) > 1:
            raise ConfigError("give at most one of --target-time, --target-lsn, --target-name, --target-xid",
                              "PostgreSQL recovers to one target")
        if self.action not in ACTIONS:
            raise ConfigError(f"--target-action {self.action!r} is not one of {', '.join(ACTIONS)}")
        if self.lsn is not None:
            try:
                parse_lsn(self.lsn)
            except ValueError:
                raise ConfigError(f"--target-lsn {self.lsn!r} is not an LSN", "write it as 0/3000060") from None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.time, self.lsn, self.name, self.xid))

    def settings(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.time is not None:
            out["recovery_target_time"] = self.time.isoformat(sep=" ")
        if self.lsn is not None:
            out["recovery_target_lsn"] = self.lsn
        if self.name is not None:
            out["recovery_target_name"] = self.name
        if self.xid is not None:
            out["recovery_target_xid"] = self.xid
        if self.given:
            out["recovery_target_action"] = self.action
        return out


def parse_target_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--target-time {text!r} is not a time", "write it as '2026-12-02 17:58:00+00:00'") from None
    if moment.tzinfo is None:
        raise ConfigError(f"--target-time {text!r} has no time zone", "add one, e.g. '+00:00' for UTC")
    return moment


def physical_entries(entries: list[Entry], system_id: str | None = None) -> list[Entry]:
    return [e for e in entries if e.manifest.kind == "physical" and e.manifest.physical is not None
            and (system_id is None or e.manifest.physical.system_identifier == system_id)]


def choose_base(entries: list[Entry], wanted: str, target: Target, system_id: str | None = None) -> Entry:
    """The base backup to restore (see the module docstring); newest first in ``entries``."""
    pool = physical_entries(entries, system_id)
    if wanted != "latest":
        for entry in pool:
            if wanted in (entry.id, entry.manifest.artifact):
                return entry
        raise NotFound(f"no physical backup with id {wanted!r}", "run `sentinel-backup list` to see the ids")
    if not pool:
        raise NotFound("no physical backup found", "run `sentinel-backup backup --physical` first")
    clusters = {e.manifest.physical.system_identifier for e in pool if e.manifest.physical}
    if len(clusters) > 1:
        raise ConfigError(f"physical backups of {len(clusters)} clusters are stored ({', '.join(sorted(clusters))})",
                          "name the backup by id (sentinel-backup list)")
    for entry in pool:
        facts = entry.manifest.physical
        assert facts is not None
        if target.time is not None and (facts.stop_time or entry.manifest.finished_at) > target.time:
            continue
        if target.lsn is not None and parse_lsn(facts.stop_lsn) > parse_lsn(target.lsn):
            continue
        return entry
    raise NotFound("no physical backup precedes the target", "choose a later target, or check `sentinel-backup list`"
                   " for the earliest point each backup can reach")


def server_bin(settings: Settings, major: int) -> Path | None:
    """The folder of ``pg_ctl`` and ``postgres`` for a restore of a ``major`` backup: PG_BIN_DIR
    (refused when it is another major version), else the distribution folder of that major."""
    if settings.pg_bin_dir is not None:
        folder = settings.pg_bin_dir
        version = tool_version([str(folder / "postgres")])
        if version is None:
            raise ConfigError(f"PG_BIN_DIR {folder} holds no runnable postgres",
                              "point PG_BIN_DIR at the bin folder of a PostgreSQL server installation")
        if major_of(version) != major:
            raise ConfigError(f"the backup is of PostgreSQL {major}, but PG_BIN_DIR holds {version}",
                              f"a data directory only starts with the same major version: install PostgreSQL {major}"
                              f" and set PG_BIN_DIR to its bin folder")
        return folder
    for layout in LAYOUTS:
        folder = Path(layout.format(major=major))
        if (folder / "postgres").is_file():
            return folder
    return None


def default_tool_command() -> str:
    """How PostgreSQL's restore_command calls this tool: the installed script, else the interpreter."""
    script = Path(sys.argv[0])
    if script.name == "sentinel-backup" and script.is_file():
        return shlex.quote(str(script.resolve()))
    found = shutil.which("sentinel-backup")
    if found:
        return shlex.quote(found)
    return f"{shlex.quote(sys.executable)} -m sentinel_backup"


def conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass
class PhysicalResult:
    entry: Entry
    storage: str
    pgdata: Path
    seconds: float
    start_command: str
    settings: dict[str, str] = field(default_factory=dict)
    reached_lsn: str | None = None
    reached_time: str | None = None
    recovery_seconds: float | None = None
    state: str | None = None  # promoted / paused / shut down, with --start


class PhysicalRestore:
    def __init__(self, settings: Settings, *, env_file: Path | None, tool_command: str | None = None,
                 keep_archiving: bool = False, tablespace_dir: Path | None = None) -> None:
        self.settings = settings
        self.env_file = env_file.resolve() if env_file is not None else None
        self.tool_command = tool_command or default_tool_command()
        self.keep_archiving = keep_archiving
        self.tablespace_dir = tablespace_dir
        self.owner = _postgres_owner()

    def restore_command(self, system_id: str) -> str:
        env = f" --env-file {shlex.quote(str(self.env_file))}" if self.env_file is not None else ""
        return f"{self.tool_command}{env} wal-fetch --system-id {system_id} %f %p"

    def preflight(self, entry: Entry, pgdata: Path) -> tuple[Path | None, dict[str, Path]]:
        """Everything refused before a byte is written: the folder, the binaries, tablespaces."""
        if pgdata.exists() and (not pgdata.is_dir() or any(pgdata.iterdir())):
            raise ConfigError(f"{pgdata} is not empty", "restore into a new or empty folder; a physical restore never"
                              " writes over an existing data directory")
        facts = entry.manifest.physical
        assert facts is not None
        major = major_of(entry.manifest.server_version or "0")
        bin_dir = server_bin(self.settings, major)
        spaces: dict[str, Path] = {}
        for space in facts.tablespaces:
            oid = str(space["oid"])
            location = self.tablespace_dir / oid if self.tablespace_dir else Path(str(space["location"]))
            if location.exists() and any(location.iterdir()):
                raise ConfigError(f"tablespace {space.get('name', oid)} would be restored to {location}, which is not"
                                  " empty", "give --tablespace-dir DIR: each tablespace goes to DIR/<oid>")
            spaces[oid] = location
        return bin_dir, spaces

    def run(self, entry: Entry, storage: Storage, pgdata: Path, target: Target, *,
            start_port: int | None = None, keep_running: bool = False,
            chain: list[tuple[Entry, Storage]] | None = None) -> PhysicalResult:
        facts = entry.manifest.physical
        assert facts is not None
        pgdata = pgdata.absolute()
        bin_dir, spaces = self.preflight(entry, pgdata)
        if start_port is not None and bin_dir is None:
            major = major_of(entry.manifest.server_version or "0")
            raise ConfigError(f"no PostgreSQL {major} server binaries found to start the restored copy",
                              f"install PostgreSQL {major} or set PG_BIN_DIR")
        blocked = _unreachable(pgdata, self.owner)
        if blocked is not None:
            message = f"the postgres OS user cannot reach {pgdata}: {blocked} is not searchable by others"
            hint = f"restore below a folder postgres can enter (or chmod o+x {blocked})"
            if start_port is not None:
                raise ConfigError(message, hint)
            logger.warning(f"{message}; {hint}")
        t0 = time.monotonic()
        scratch = None  # an incremental's chain: every member fetched and verified before the target is touched
        if chain is not None and len(chain) > 1:
            from sentinel_backup.physical.incremental import ChainScratch
            scratch = ChainScratch(self, chain, bin_dir)
            scratch.prepare()
        created = not pgdata.exists()
        pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(pgdata, 0o700)
        if self.owner is not None:
            os.chown(pgdata, *self.owner)
        extractor = TarExtractor(pgdata, spaces, self.owner)
        try:
            if scratch is not None:
                scratch.combine(pgdata)
            else:
                self._extract(entry, storage, extractor)
        except BaseException:
            _wipe(pgdata, remove=created)
            for made in extractor._made:
                shutil.rmtree(made, ignore_errors=True)
            raise
        finally:
            if scratch is not None:
                scratch.cleanup()
        self._check_tool()
        if self.env_file is None:
            logger.warning("no --env-file: restore_command runs wal-fetch without one, so the server must see the"
                           " settings (BACKUP_DIR, keys, buckets) in its own environment; pass --env-file FILE")
        conf = self._configure(pgdata, facts.system_identifier, target)
        seconds = time.monotonic() - t0
        run_as = "runuser -u postgres -- " if self.owner is not None else ""
        pg_ctl = str(bin_dir / "pg_ctl") if bin_dir is not None else "pg_ctl"
        command = f"{run_as}{shlex.quote(pg_ctl)} -D {shlex.quote(str(pgdata))} -l {shlex.quote(str(pgdata))}/log start"
        result = PhysicalResult(entry, storage.name, pgdata, seconds, command, conf)
        if start_port is not None:
            assert bin_dir is not None
            TemporaryServer(bin_dir, pgdata, start_port, self.owner, self.settings).recover(result, keep_running)
        return result

    def _check_tool(self) -> None:
        """Warn when the postgres OS user could not run restore_command's program."""
        words = shlex.split(self.tool_command)
        if self.owner is None or not words or not words[0].startswith("/"):
            return
        program = Path(words[0])
        blocked = _unreachable(program.resolve(), self.owner)
        if blocked is not None:
            logger.warning(f"restore_command runs {program} as the postgres OS user, who cannot enter {blocked}:"
                           " recovery would stop at its first WAL file; install the tool where postgres can run it"
                           " and pass --tool-command")

    def _extract(self, entry: Entry, storage: Storage, extractor: TarExtractor) -> None:
        manifest = entry.manifest
        decoder = decode_chain(manifest, reading_cipher(manifest, self.settings), extractor)
        with storage.open_reader(manifest.artifact) as reader:
            decoder.feed(reader)
        if decoder.stored.sha256 != manifest.sha256 or decoder.stored.size != manifest.size_bytes:
            raise RestoreFailed(f"{storage.name}:{manifest.artifact} is not the stored backup (SHA-256 differs from"
                                " the manifest)", "restore from another destination (--from) or another backup")
        if decoder.raw.sha256 != manifest.raw_sha256:
            raise RestoreFailed(f"{manifest.artifact} decodes to other bytes than were backed up",
                                "restore from another destination (--from) or another backup")

    def _configure(self, pgdata: Path, system_id: str, target: Target) -> dict[str, str]:
        conf = {"restore_command": self.restore_command(system_id), "recovery_target_timeline": "latest",
                **target.settings()}
        if not self.keep_archiving:
            conf["archive_mode"] = "off"
        for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
            with contextlib.suppress(FileNotFoundError):
                (pgdata / stale).unlink()
        auto = pgdata / "postgresql.auto.conf"
        with open(auto, "a") as out:
            out.write("\n# written by sentinel-backup restore --physical: recovery from the WAL archive\n")
            out.writelines(f"{key} = {conf_quote(value)}\n" for key, value in conf.items())
        signal = pgdata / "recovery.signal"
        signal.touch()
        for path in (auto, signal):
            os.chmod(path, 0o600)
            if self.owner is not None:
                os.chown(path, *self.owner)
        return conf


def _postgres_owner() -> tuple[int, int] | None:
    """(uid, gid) of the postgres OS user when we run as root (the server refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise ConfigError("running as root, but there is no `postgres` OS user to own the data directory",
                          "run the restore as the user that runs PostgreSQL") from None
    return entry.pw_uid, entry.pw_gid


def _unreachable(pgdata: Path, owner: tuple[int, int] | None) -> Path | None:
    """The first existing parent folder the postgres OS user cannot enter (run as root only)."""
    if owner is None:
        return None
    for parent in reversed(pgdata.parents):
        try:
            info = parent.stat()
        except FileNotFoundError:
            return None
        if info.st_uid != owner[0] and not info.st_mode & 0o001:
            return parent
    return None


def _wipe(folder: Path, *, remove: bool) -> None:
    """Remove what a failed restore wrote (the folder was empty or absent before)."""
    if remove:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
