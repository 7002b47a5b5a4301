"""Shared fixtures. Each real server has its own plugin module under tests/plugins/."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

pytest_plugins = [
    "tests.plugins.archive",
    "tests.plugins.pg",
    "tests.plugins.pgversions",
    "tests.plugins.s3",
    "tests.plugins.webhook",
    "tests.plugins.archive18",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """In CI a skipped test is a failed test: every real server must be there."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run every test: {report.longrepr}"
