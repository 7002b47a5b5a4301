"""Webhook receiver fixtures: a real HTTP server on 127.0.0.1 (pytest-httpserver).

- ``webhook_server``: a threaded receiver, cleared for each test; its ``log`` holds every
  request. Use ``webhook_server.url_for("/path")`` as a webhook URL.
- ``hanging_url``: a receiver whose handler never answers within any short client timeout
  (it waits on an event released at teardown, so no thread outlives the test for long).
- ``closed_url``: a URL on 127.0.0.1 where nothing listens (connection refused).
- ``sleeps`` / ``fast_transport``: a Transport whose sleeps are recorded, not slept.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from sentinel_backup.notify import Transport


@pytest.fixture(scope="session")
def _webhook_session_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        if server.is_running():
            server.stop()


@pytest.fixture
def webhook_server(_webhook_session_server: HTTPServer) -> Iterator[HTTPServer]:
    server = _webhook_session_server
    server.clear()
    yield server
    server.clear()


@pytest.fixture
def hanging_url(webhook_server: HTTPServer) -> Iterator[str]:
    release = threading.Event()

    def hang(request: Request) -> Response:
        release.wait(timeout=10)
        return Response("too late", status=200)

    webhook_server.expect_request("/hang").respond_with_handler(hang)
    try:
        yield webhook_server.url_for("/hang")
    finally:
        release.set()


@pytest.fixture
def closed_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def fast_transport(sleeps: list[float]) -> Transport:
    """Short timeout, recorded sleeps: retries cost no wall time."""
    return Transport(timeout=0.5, sleep=sleeps.append)
