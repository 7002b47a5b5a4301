"""`sentinel-backup demo`: the whole job on a throwaway server, start to finish.

Starts a private PostgreSQL cluster, loads sample data, backs it up to a local folder,
verifies the copy, restores it into a new database and shows that the restored data
equals the source, then removes the cluster.
"""

from __future__ import annotations

import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sentinel_backup import log
from sentinel_backup.choices import Compression, LogLevel
from sentinel_backup.cli.app import command, emit
from sentinel_backup.errors import EXIT_FAILURE

if TYPE_CHECKING:
    from sentinel_backup.config import Settings
    from sentinel_backup.demo.cluster import TempCluster

DB = "sentinel_demo"


def demo_settings(cluster: TempCluster, backup_dir: Path, compression: Compression) -> Settings:
    from sentinel_backup.config import settings_from
    values = {**cluster.env(), "POSTGRES_DB": DB, "BACKUP_DIR": str(backup_dir), "COMPRESSION": compression.value,
              "S3_ENABLED": "false", "MINIO_ENABLED": "false", "ENCRYPT_ENABLED": "false",
              "WEBHOOK_ENABLED": "false", "LOG_LEVEL": "INFO", "POSTGRES_CONTAINER": ""}
    return settings_from(values)


@command()
def demo(
    backup_dir: Annotated[Path | None, typer.Option("--backup-dir", help="Keep the backups here.")] = None,
    compression: Annotated[Compression, typer.Option("--compression")] = Compression.GZIP,
) -> int:
    """Run backup -> verify -> restore -> compare on a throwaway PostgreSQL with sample data."""
    from sentinel_backup.demo.cluster import TempCluster
    from sentinel_backup.demo.compare import differences, fingerprints
    from sentinel_backup.logical.restore import Restorer
    from sentinel_backup.logical.run import BackupRun
    from sentinel_backup.model.catalog import scan
    from sentinel_backup.pipeline.verify import verify_copy
    from sentinel_backup.storage.local import LocalStorage
    log.setup(LogLevel.INFO)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sentinel-demo-") as tmp, TempCluster() as cluster:
        folder = backup_dir or Path(tmp) / "backups"
        emit(f"1. Started a throwaway PostgreSQL ({cluster.psql('SHOW server_version')}) on port {cluster.port}")
        cluster.psql(f"CREATE DATABASE {DB}")
        cluster.psql(resources.files("sentinel_backup.demo").joinpath("sample.sql").read_text("utf-8"), DB)
        source = fingerprints(lambda sql, db: cluster.psql(sql, db), DB)
        emit(f"2. Loaded sample data into {DB}: {len(source)} tables, "
             f"{sum(int(v.split(':')[0]) for v in source.values())} rows")
        settings = demo_settings(cluster, folder, compression)
        storage = LocalStorage(folder)
        storage.prepare()
        result = BackupRun(settings, [storage]).run()
        if result.failed:
            emit(f"Backup failed: {result.failed[0].error}")
            return EXIT_FAILURE
        manifest = result.outcomes[0].manifest
        assert manifest is not None
        emit(f"3. Backed up to {folder / manifest.artifact} ({manifest.size_bytes} bytes stored, "
             f"{manifest.raw_size_bytes} raw, sha256 {manifest.sha256[:16]}...)")
        report = verify_copy(storage, manifest, settings)
        emit("4. Verified: " + ", ".join(f"{c.name} {'ok' if c.ok else 'FAILED'}" for c in report.checks))
        if not report.ok:
            return EXIT_FAILURE
        entry = scan([storage]).find("latest", DB)
        restored = Restorer(settings).restore(entry, storage, f"{DB}_restored", create=True)
        emit(f"5. Restored into {restored.target} in {restored.seconds:.1f} s; row counts match the manifest")
        copy = fingerprints(lambda sql, db: cluster.psql(sql, db), restored.target)
        diff = differences(source, copy)
        if diff:
            emit(f"6. MISMATCH: restored data differs in {', '.join(diff)}")
            return EXIT_FAILURE
        emit(f"6. The restored database equals the source: {len(copy)} tables, identical rows and content")
    emit(f"Demo completed in {time.monotonic() - t0:.1f} s; the throwaway server was stopped and removed.")
    return 0
