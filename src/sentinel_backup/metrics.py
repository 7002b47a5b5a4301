"""Prometheus metrics in text format, for node_exporter's textfile collector.

After every run the tool rewrites ``METRICS_FILE`` (it should end in ``.prom``). The file
describes the latest known state of every database, not only of this run: the previous
file is read back first, and values this run did not refresh are carried forward. Every series
carries the ``server`` label (SERVER_NAME, "" for the unnamed server): servers sharing one file
never touch each other's series; per database also ``kind`` (``database``, ``globals`` for the
roles and tablespaces, so that a database named "globals" is a series of its own, ``physical``). So a
failed run never erases the last success timestamp of a database, and a backup run keeps
the drill gauges of the last drill (and the other way round).

Per database the rules are:

- ``last_success_timestamp_seconds``, ``raw_bytes``, ``stored_bytes``: the newest
  *successful* backup; a failed attempt leaves them as they were.
- ``duration_seconds`` and ``result{destination}``: the newest attempt. A destination the
  database had before that a failed attempt did not reach is reported as 0; after a
  successful attempt, destinations not mentioned any more (disabled) are dropped.
- ``drill_*``: the newest drill, pass or fail; ``drill_restore_seconds`` stays at the last
  measured restore time when a drill failed before measuring one.

- ``last_failure_timestamp_seconds``: the newest failed attempt (kept after later successes).

A backup run names the databases it was configured to back up (``RunMetrics.scope``): the
series of every other database are dropped, so a database that is no longer backed up
(dropped, or removed from POSTGRES_DB) stops firing "last success too old" alerts. An
invocation without a scope (a drill alone) carries every database forward.

Per destination, after every run that could list it: the number of backups with a manifest,
their stored bytes, and the creation time of the oldest (``time() - ...`` is its age). A
destination that could not be listed keeps its previous values; one no longer configured is
dropped. ``build_info{version, python}`` is always 1.

The file is written atomically: a hidden temp file in the same folder (never
matching ``*.prom``), fsynced, then renamed over the old file, so a reader sees the old
file or the new one, never a partial one. Concurrent writers (servers with their own BACKUP_DIR,
hence their own run lock, sharing one file) take turns on a flock of a hidden ``.<name>.lock`` beside it
for the read-merge-write, so no server's update is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import platform
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from sentinel_backup import __version__, private
from sentinel_backup.errors import SentinelError

log = logging.getLogger(__name__)

PREFIX = "sentinel_backup_"

# metric name (without PREFIX) -> (help text, label names). The order here is the file's order.
DB = ("server", "database", "kind")  # kind: database, globals (roles and tablespaces), physical
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "last_run_timestamp_seconds": ("Unix time the last backup run finished.", ("server",)),
    "last_run_success": ("1 if the last backup run succeeded completely, else 0.", ("server",)),
    "last_success_timestamp_seconds": ("Unix time the newest successful backup of the database finished.", DB),
    "last_failure_timestamp_seconds": ("Unix time the newest failed backup attempt of the database finished.", DB),
    "duration_seconds": ("Seconds the newest backup attempt of the database took.", DB),
    "raw_bytes": ("Uncompressed dump size of the newest successful backup.", DB),
    "stored_bytes": ("Stored (compressed, encrypted) size of the newest successful backup.", DB),
    "result": ("1 if the newest backup attempt reached the destination, else 0.", (*DB, "destination")),
    "drill_success": ("1 if the newest restore drill of the database passed, else 0.", DB),
    "drill_restore_seconds": ("Seconds the last measured drill restore took.", DB),
    "drill_last_timestamp_seconds": ("Unix time the newest restore drill finished.", DB),
    "destination_backups": ("Backups of the server with a manifest on the destination.", ("server", "destination")),
    "destination_stored_bytes": ("Stored bytes of the server's backups with a manifest on the destination.",
                                 ("server", "destination")),
    "destination_oldest_backup_timestamp_seconds": ("Unix time the server's oldest backup on the destination was"
                                                    " taken.", ("server", "destination")),
}
# labels a file written before they existed lacks: read with these values
_DEFAULTS = {"server": ""}
_OLD_KINDS = {"globals": "globals", "(cluster)": "physical"}
BUILD_INFO = ("build_info", "Always 1; the labels say which version wrote the file.")

Labels = tuple[str, ...]
State = dict[str, dict[Labels, float]]


@dataclass(frozen=True)
class DatabaseResult:
    """One database's backup attempt in this run."""

    database: str
    ok: bool
    started: datetime
    finished: datetime
    raw_bytes: int | None = None
    stored_bytes: int | None = None
    destinations: Mapping[str, bool] = field(default_factory=dict)  # destination name -> stored and validated
    kind: str = "database"  # or globals, physical

    @property
    def duration_seconds(self) -> float:
        return max(0.0, (self.finished - self.started).total_seconds())


@dataclass(frozen=True)
class DrillResult:
    """One restore drill. ``restore_seconds`` is None when the drill failed before restoring."""

    database: str
    ok: bool
    finished: datetime
    restore_seconds: float | None = None
    kind: str = "database"  # or physical


@dataclass(frozen=True)
class DestinationInventory:
    """What one destination holds (backups with a manifest)."""

    backups: int
    stored_bytes: int
    oldest: datetime | None


@dataclass(frozen=True)
class RunMetrics:
    """What one invocation has to report.

    ``finished`` is when the backup run ended and ``ok`` whether it succeeded completely.
    Use ``finished=None`` for an invocation that was not a backup run (e.g. a drill alone):
    the ``last_run_*`` gauges are then carried forward unchanged.
    """

    finished: datetime | None
    ok: bool
    databases: Sequence[DatabaseResult] = ()
    drills: Sequence[DrillResult] = ()
    # the (database, kind) pairs the run was configured to back up: the series of all others
    # (of this server) are dropped; a plain name stands for (name, "database")
    scope: frozenset[str | tuple[str, str]] | None = None
    # destination name -> what it holds (None: could not be listed, keep the previous values);
    # destinations not named are dropped. None: no inventory taken, everything carried forward.
    inventory: Mapping[str, DestinationInventory | None] | None = None
    server: str = ""  # SERVER_NAME: every series this invocation writes carries it


def write_metrics(path: Path, results: RunMetrics) -> None:
    """Merge ``results`` into the metrics file at ``path`` and rewrite it atomically.

    Raises SentinelError when the file cannot be written; callers treat that as a warning
    (metrics never decide a backup's outcome).
    """
    with _writer_turn(path):
        state = merge(read_state(path), results)
        write_atomically(path, render(state))


@contextlib.contextmanager
def _writer_turn(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``.<name>.lock`` beside ``path`` (waits for another writer)."""
    try:
        fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def merge(previous: State, results: RunMetrics) -> State:
    """The new state: ``previous`` with everything ``results`` says applied (pure)."""
    state: State = {name: dict(previous.get(name, {})) for name in METRICS}
    server = results.server
    if results.finished is not None:
        state["last_run_timestamp_seconds"][(server,)] = results.finished.timestamp()
        state["last_run_success"][(server,)] = 1.0 if results.ok else 0.0
    if results.scope is not None:
        scope = {(s, "database") if isinstance(s, str) else s for s in results.scope}
        for name, (_, label_names) in METRICS.items():
            if label_names[:3] == DB:
                state[name] = {k: v for k, v in state[name].items() if k[0] != server or (k[1], k[2]) in scope}
    for db in results.databases:
        _merge_database(state, db, server)
    if results.inventory is not None:
        _merge_inventory(state, results.inventory, server)
    for drill in results.drills:
        key = (server, drill.database, drill.kind)
        state["drill_success"][key] = 1.0 if drill.ok else 0.0
        state["drill_last_timestamp_seconds"][key] = drill.finished.timestamp()
        if drill.restore_seconds is not None:
            state["drill_restore_seconds"][key] = drill.restore_seconds
    return state


def _merge_database(state: State, db: DatabaseResult, server: str) -> None:
    key = (server, db.database, db.kind)
    state["duration_seconds"][key] = db.duration_seconds
    results = state["result"]
    known = {labels[3] for labels in results if labels[:3] == key}
    for destination in known - set(db.destinations):
        if db.ok:
            del results[(*key, destination)]  # no longer configured
        else:
            results[(*key, destination)] = 0.0  # the failed attempt never reached it
    for destination, reached in db.destinations.items():
        results[(*key, destination)] = 1.0 if reached else 0.0
    if not db.ok:
        state["last_failure_timestamp_seconds"][key] = db.finished.timestamp()
    if db.ok:
        state["last_success_timestamp_seconds"][key] = db.finished.timestamp()
        if db.raw_bytes is not None:
            state["raw_bytes"][key] = float(db.raw_bytes)
        if db.stored_bytes is not None:
            state["stored_bytes"][key] = float(db.stored_bytes)


def _merge_inventory(state: State, inventory: Mapping[str, DestinationInventory | None], server: str) -> None:
    names = ("destination_backups", "destination_stored_bytes", "destination_oldest_backup_timestamp_seconds")
    for name in names:
        state[name] = {k: v for k, v in state[name].items() if k[0] != server or k[1] in inventory}
    for destination, held in inventory.items():
        if held is None:
            continue  # not listed this time: the previous values stay
        key = (server, destination)
        state["destination_backups"][key] = float(held.backups)
        state["destination_stored_bytes"][key] = float(held.stored_bytes)
        if held.oldest is None:
            state["destination_oldest_backup_timestamp_seconds"].pop(key, None)
        else:
            state["destination_oldest_backup_timestamp_seconds"][key] = held.oldest.timestamp()


def inventory(entries: Iterable[tuple[datetime, int, Iterable[str]]], listed: Iterable[str],
              unlisted: Iterable[str] = ()) -> dict[str, DestinationInventory | None]:
    """Per destination: count, stored bytes and oldest creation time of the backups given as
    (created_at, stored size, destinations holding a copy); ``listed`` destinations appear even
    when empty, ``unlisted`` ones (listing failed) as None."""
    counts: dict[str, list[int]] = {name: [0, 0] for name in listed}
    oldest: dict[str, datetime] = {}
    for created, size, where in entries:
        for name in where:
            if name in counts:
                counts[name][0] += 1
                counts[name][1] += size
                oldest[name] = min(oldest.get(name, created), created)
    result: dict[str, DestinationInventory | None] = {
        name: DestinationInventory(n, size, oldest.get(name)) for name, (n, size) in counts.items()}
    result.update(dict.fromkeys(unlisted))
    return result


def read_state(path: Path) -> State:
    """The values of a metrics file written before; empty when missing or unreadable.

    A damaged file is logged and ignored rather than failing the run: it is rebuilt from
    this run's values (losing only what it alone knew).
    """
    state: State = {name: {} for name in METRICS}
    try:
        text = path.read_bytes().decode("utf-8")  # not read_text: it would turn a \r in a label into \n
    except FileNotFoundError:
        return state
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the previous metrics file %s (%s); starting afresh", path, exc)
        return state
    try:
        for family in text_string_to_metric_families(text):
            _read_family(state, family)
    except (ValueError, TypeError, IndexError) as exc:
        log.warning("cannot parse the previous metrics file %s (%s); starting afresh", path, exc)
        return {name: {} for name in METRICS}
    return state


def _read_family(state: State, family: Metric) -> None:
    name = family.name.removeprefix(PREFIX)
    if not family.name.startswith(PREFIX) or name not in METRICS:
        return  # not ours, or from another version: dropped
    label_names = METRICS[name][1]
    for sample in family.samples:
        labels = dict(sample.labels)
        if "kind" in label_names and "kind" not in labels and "database" in labels:  # a file before `kind`
            labels["kind"] = _OLD_KINDS.get(labels["database"], "database")
        labels = {**_DEFAULTS, **labels}
        if sample.name == family.name and set(labels) == set(label_names):
            state[name][tuple(labels[label] for label in label_names)] = float(sample.value)


class _StateCollector(Collector):
    """Yields one gauge family per metric that has at least one sample."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(PREFIX + BUILD_INFO[0], BUILD_INFO[1], labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1.0)
        yield info
        for name, (help_text, label_names) in METRICS.items():
            samples = self.state.get(name, {})
            if not samples:
                continue
            family = GaugeMetricFamily(PREFIX + name, help_text, labels=list(label_names))
            for labels in sorted(samples):
                family.add_metric(list(labels), samples[labels])
            yield family


def render(state: State) -> bytes:
    """Prometheus text exposition format of ``state``, via a private registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StateCollector(state))
    return generate_latest(registry)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temp file beside ``path``, fsync it, rename it over ``path``.

    The temp file lives in the same folder so the rename stays on one filesystem (atomic),
    and its name (``.<name>.<random>.tmp``) never matches the collector's ``*.prom``.
    """
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, private.file_mode_for(path))  # new: 0600; chmod it once for node_exporter, it stays
        os.replace(temp, path)
    except BaseException as exc:  # also on KeyboardInterrupt: never leave the temp file behind
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise


def _write_error(path: Path, exc: OSError) -> SentinelError:
    return SentinelError(f"cannot write METRICS_FILE {path}: {exc.strerror or exc}",
                         f"check that {path.parent} exists and is writable, or fix METRICS_FILE")
