"""`check` on an archiving server: settings, pg_stat_archiver, and a gap in the archive."""

from __future__ import annotations

from collections.abc import Callable

from tests.helpers import cli
from tests.plugins.archive import ArchivingCluster


def test_check_reports_archiving_and_finds_a_gap(archiving_cluster: Callable[..., ArchivingCluster]) -> None:
    archive = archiving_cluster({"MAX_WAL_AGE": "1h"})
    names = [archive.switch() for _ in range(3)]
    archive.wait_archived(names[-1])
    env = {k: v for k, v in archive.values.items() if not k.startswith("LOG_")}

    result = cli(env, "check", "--json")
    checks = {c["name"]: c for c in result.json()["checks"]}
    assert checks["archiving"]["status"] == "ok" and "calls wal-push" in checks["archiving"]["detail"]
    assert checks["archiver"]["status"] == "ok" and names[-1] in checks["archiver"]["detail"]
    assert checks["wal age"]["status"] == "ok"
    assert checks["wal archive local"]["status"] == "ok", checks["wal archive local"]
    assert "no gap" in checks["wal archive local"]["detail"]

    (middle,) = [p for p in (archive.backup_dir / "wal").rglob(f"{names[1]}.*")]
    middle.unlink()
    result = cli(env, "check", "--json")
    gap = {c["name"]: c for c in result.json()["checks"]}["wal archive local"]
    assert gap["status"] == "critical" and names[1] in gap["detail"]
    assert result.code == 1
