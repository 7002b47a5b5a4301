"""WAL archiving to S3 (SeaweedFS) beside local: both copies, and an S3 outage during archiving
(wal-push fails, PostgreSQL keeps the segment and retries, nothing is lost once S3 is back)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from pytest_httpserver import HTTPServer

from tests.plugins.archive import WAIT_SECONDS, ArchivingCluster, WalTool
from tests.plugins.s3 import WeedServer


def _s3_names(server: WeedServer, bucket: str) -> set[str]:
    client: Any = server.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    return {key.split("/")[-1].split(".")[0] for key in keys if "wal/" in key}


def _local_names(archive: ArchivingCluster) -> set[str]:
    return {p.name.split(".")[0] for p in (archive.backup_dir / "wal").rglob("*") if p.is_file()}


def test_s3_outage_fails_the_push_and_nothing_is_lost_once_it_is_back(
        wal_tool: WalTool, archiving_cluster: Callable[..., ArchivingCluster],
        weed_factory: Callable[[], WeedServer], webhook_server: HTTPServer) -> None:
    webhook_server.expect_request("/hook", method="POST").respond_with_data("ok")
    server = weed_factory()
    bucket = server.create_bucket()
    archive = archiving_cluster({**server.s3_env(bucket, "pg"), "WEBHOOK_ENABLED": "true", "WEBHOOK_FORMAT": "json",
                                 "WEBHOOK_URL": webhook_server.url_for("/hook"), "NOTIFICATION_LEVEL": "error"})
    first = archive.switch()
    archive.wait_archived(first)
    assert first in _s3_names(server, bucket) and first in _local_names(archive)

    server.stop()
    failed_before = int(archive.archiver()["failed_count"])
    during = archive.switch()
    deadline = time.monotonic() + WAIT_SECONDS  # a safety net against a hang, not a performance limit
    while int(archive.archiver()["failed_count"]) <= failed_before:
        assert time.monotonic() < deadline, f"the archiver never failed: {archive.archiver()}"
        time.sleep(0.2)
    assert archive.archiver()["last_archived_wal"] < during  # not acknowledged while S3 is down
    assert "is not archived on every destination (s3 failed" in archive.cluster.log_text()
    assert (archive.cluster.data / "pg_wal" / during).exists()

    server.start()
    after = archive.switch()  # a new segment also wakes the archiver up
    archive.wait_archived(after)
    for name in (first, during, after):
        assert name in _s3_names(server, bucket), name
        assert name in _local_names(archive), name

    # archiving failing is an error event, told once (not per retry), and its recovery too
    events = [json.loads(request.get_data()) for request, _ in webhook_server.log if request.path == "/hook"]
    assert [e["event"] for e in events] == ["archive_failed", "archive_recovered"]
    assert events[0]["severity"] == "error" and during in events[0]["error"] and "s3" in events[0]["error"]


def test_wal_fetch_from_s3_only(wal_tool: WalTool, archiving_cluster: Callable[..., ArchivingCluster],
                                s3_server: WeedServer) -> None:
    bucket = s3_server.create_bucket()
    archive = archiving_cluster({**s3_server.s3_env(bucket), "LOCAL_ENABLED": "false"})
    name = archive.switch()
    archive.wait_archived(name)
    assert name in _s3_names(s3_server, bucket)
    work = wal_tool.folder("s3-fetch")
    got = wal_tool.run(archive.env_file, "wal-fetch", name, str(work / "x"), "--system-id", archive.system_id(),
                       "--from", "s3")
    assert got.returncode == 0, got.stderr
    assert (work / "x").stat().st_size == archive.segment_size()
    absent = wal_tool.run(archive.env_file, "wal-fetch", "000000010000000000000099", str(work / "y"),
                          "--system-id", archive.system_id())
    assert absent.returncode == 1, absent.stderr
