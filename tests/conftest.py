"""Shared fixtures. Each real server has its own plugin module under tests/plugins/."""

pytest_plugins = [
    "tests.plugins.pg",
    "tests.plugins.s3",
    "tests.plugins.webhook",
]
