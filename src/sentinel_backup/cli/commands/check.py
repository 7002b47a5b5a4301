"""`sentinel-backup check`: configuration and connectivity, no backup taken."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ...checks import run_checks
from ...errors import EXIT_FAILURE
from ..app import app, emit, state


@app.command()
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> int:
    """Check the configuration, the server and every destination."""
    settings = state(ctx).settings()
    results = run_checks(settings)
    if as_json:
        emit(json.dumps([r.to_json() for r in results], indent=2))
    else:
        for r in results:
            emit(f"{'OK ' if r.ok else 'FAIL'} {r.name:<22} {r.detail}")
    return 0 if all(r.ok for r in results) else EXIT_FAILURE
