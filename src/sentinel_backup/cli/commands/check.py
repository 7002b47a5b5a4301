"""`sentinel-backup check`: the monitoring entry point.

Exit codes: human and --json output 0 ok, 4 warning, 1 critical (2: configuration error);
--nagios follows the monitoring-plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from sentinel_backup.cli.app import command, emit, state
from sentinel_backup.errors import ConfigError, SentinelError


@command()
def check(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    nagios: Annotated[bool, typer.Option(
        "--nagios", help="One monitoring-plugin line (Nagios, Icinga, Zabbix, Checkmk); exit 0/1/2/3.")] = False,
) -> int:
    """Check configuration, the server, every destination, backup age, last run and drills.

    Exit 0 when all is well, 4 on a warning, 1 on anything critical. With --nagios: 0 OK,
    1 WARNING, 2 CRITICAL, 3 UNKNOWN (the check itself could not run).
    """
    if as_json and nagios:
        raise ConfigError("--json and --nagios cannot be combined", "choose one output")
    if nagios:
        return _nagios(ctx)
    from sentinel_backup.checks import overall_exit, run_checks
    settings = state(ctx).settings(machine_output=as_json, lean=True)
    results = run_checks(settings)
    code = overall_exit(results)
    if as_json:
        emit(json.dumps({"status": {0: "ok", 4: "warning"}.get(code, "critical"),
                         "checks": [r.to_json() for r in results]}, indent=2))
    else:
        for r in results:
            emit(f"{r.status.upper():<9} {r.name:<24} {r.detail}" + (f"  (hint: {r.hint})" if r.hint else ""))
    return code


def _nagios(ctx: typer.Context) -> int:
    """Whatever happens, one line on stdout and a plugin exit code (logs go to stderr)."""
    from sentinel_backup.checks import nagios_report, nagios_unknown, run_checks
    try:
        line, code = nagios_report(run_checks(state(ctx).settings(machine_output=True, lean=True)))
    except SentinelError as exc:
        line, code = nagios_unknown(exc.describe())
    except Exception as exc:  # a plugin must never exit with a code the monitor misreads
        line, code = nagios_unknown(f"internal error: {type(exc).__name__}: {exc}")
    state(ctx).emit_always(line)  # a monitor always gets its line, --quiet or not
    return code
