"""`sentinel-backup check`: the monitoring entry point (Nagios-style exit codes)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sentinel_backup.cli.app import command, emit, state


@command()
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> int:
    """Check configuration, the server, every destination, backup age, last run and drills.

    Exit 0 when all is well, 4 on a warning, 1 on anything critical.
    """
    from sentinel_backup.checks import overall_exit, run_checks
    settings = state(ctx).settings(machine_output=as_json)
    results = run_checks(settings)
    code = overall_exit(results)
    if as_json:
        emit(json.dumps({"status": {0: "ok", 4: "warning"}.get(code, "critical"),
                         "checks": [r.to_json() for r in results]}, indent=2))
    else:
        for r in results:
            emit(f"{r.status.upper():<9} {r.name:<24} {r.detail}" + (f"  (hint: {r.hint})" if r.hint else ""))
    return code
