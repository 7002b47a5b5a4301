"""Start-up: two costs every command paid before it did any work, cut at the one entry point.

- pydantic looks for plugins (``importlib.metadata`` entry points of every installed
  distribution) the first time it builds a model: tens of milliseconds for a feature this
  tool does not use. ``PYDANTIC_DISABLE_PLUGINS`` (pydantic's own switch) turns the search
  off unless the user set it.
- Typer (0.2x) coerces each parameter through a pydantic ``TypeAdapter`` it builds on first
  use, also for a parameter the command line did not give (value None), where its own
  coercion then returns None unchanged: the first such parameter imports ``typer._adapters``
  and all of pydantic, and each builds a schema. :func:`lazy_typer_coercion` skips that
  build for an absent, optional value and keeps the rest of Typer's handling (required
  check, callback). Given values are coerced by Typer as before. With a Typer that has no
  such class the patch does nothing (a missed saving, never a behaviour change).

``python -X importtime -m sentinel_backup check`` shows what is left (docs/performance.md).
"""

from __future__ import annotations

import os
from typing import Any


def no_pydantic_plugins() -> None:
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def lazy_typer_coercion() -> None:
    try:
        from typer.core import _TyperParameter
    except ImportError:  # another Typer: nothing to patch
        return
    original = getattr(_TyperParameter, "process_value", None)
    if original is None or getattr(original, "sentinel_lean", False):
        return

    def process_value(self: Any, ctx: Any, value: Any) -> Any:
        absent = value is None and not self.required and not (self.multiple or self.nargs == -1)
        if absent and getattr(self, "_runtime_param", None) is None:
            # Typer: coerce(None) is None; an optional parameter is not missing; then its callback.
            return self.callback(ctx, self, value) if self.callback is not None else value
        return original(self, ctx, value)

    process_value.sentinel_lean = True  # type: ignore[attr-defined]
    _TyperParameter.process_value = process_value  # type: ignore[method-assign]
