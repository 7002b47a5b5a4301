"""The one shape of a check result, for verification reports, drills and ``check``:
a name, a status (ok / warning / critical), a detail line, an optional hint and, for
monitoring plugins, an optional measured value (:class:`Perf`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OK, WARNING, CRITICAL = "ok", "warning", "critical"
RANK = {OK: 0, WARNING: 1, CRITICAL: 2}


@dataclass(frozen=True)
class Perf:
    """A measured value for monitoring-plugin performance data (``'label'=value unit;warn;crit;min``)."""

    label: str
    value: float
    unit: str = ""
    warn: float | None = None
    crit: float | None = None
    minimum: float | None = 0

    def render(self) -> str:
        def number(x: float | None) -> str:
            return "" if x is None else f"{x:g}" if x != int(x) else str(int(x))

        label = self.label.replace("'", "''")
        return (f"'{label}'={number(self.value)}{self.unit};{number(self.warn)};{number(self.crit)};"
                f"{number(self.minimum)}")


@dataclass
class Check:
    name: str
    status: str
    detail: str = ""
    hint: str | None = None
    perf: Perf | None = None  # for --nagios performance data; not in --json

    @classmethod
    def of(cls, name: str, ok: bool, detail: str = "", hint: str | None = None) -> Check:
        """A pass/fail finding: ok, or critical."""
        return cls(name, OK if ok else CRITICAL, detail, hint)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "ok": self.ok, "detail": self.detail, "hint": self.hint}


def failures(checks: list[Check]) -> str:
    """``name: detail; ...`` of the checks that did not pass."""
    return "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)
