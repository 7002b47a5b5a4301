"""Asynchronous wal-push (WAL_PUSH_ASYNC): PostgreSQL's archive_command returns once the segment
is durable in the spool; a shipper started by wal-push stores it everywhere and empties the
spool, and keeps a segment spooled while a destination is down."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.plugins.archive import WAIT_SECONDS, ArchivingCluster, WalTool
from tests.plugins.s3 import WeedServer


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS  # a safety net against a hang, not a performance limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def spooled(spool: Path) -> list[str]:
    return sorted(p.name for p in (spool / "push").rglob("*") if p.is_file())


def local_names(archive: ArchivingCluster) -> set[str]:
    return {p.name.split(".")[0] for p in (archive.backup_dir / "wal").rglob("*") if p.is_file()}


def s3_names(server: WeedServer, bucket: str) -> set[str]:
    client: Any = server.client()
    keys = [obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for obj in page.get("Contents", [])]
    return {key.split("/")[-1].split(".")[0] for key in keys if key.startswith("wal/")}


def test_async_push_spools_then_ships_everything(wal_tool: WalTool,
                                                 archiving_cluster: Callable[..., ArchivingCluster]) -> None:
    spool = wal_tool.folder("async") / "spool"
    archive = archiving_cluster({"WAL_PUSH_ASYNC": "true", "WAL_SPOOL_DIR": str(spool)})
    names = [archive.switch() for _ in range(4)]
    archive.wait_archived(names[-1])
    wait_for("the spool to drain", lambda: not spooled(spool) and set(names) <= local_names(archive))
    assert "spooled" in archive.cluster.log_text()


def test_async_push_keeps_a_segment_spooled_while_s3_is_down(
        wal_tool: WalTool, archiving_cluster: Callable[..., ArchivingCluster],
        weed_factory: Callable[[], WeedServer]) -> None:
    server = weed_factory()
    bucket = server.create_bucket()
    folder = wal_tool.folder("async-spool")
    spool = folder / "spool"
    archive = archiving_cluster({**server.s3_env(bucket), "WAL_PUSH_ASYNC": "true", "WAL_SPOOL_DIR": str(spool)})
    first = archive.switch()
    archive.wait_archived(first)
    wait_for("the first segment on S3", lambda: first in s3_names(server, bucket))

    server.stop()
    during = archive.switch()
    archive.wait_archived(during)  # acknowledged: durable in the spool
    wait_for("the shipper to fail on S3", lambda: "stays in the spool" in (spool / "shipper.log").read_text())
    assert during in spooled(spool)
    assert during in local_names(archive)  # the healthy destination got its copy already

    server.start()
    wait_for("the spool to drain", lambda: not spooled(spool))
    assert during in s3_names(server, bucket)
