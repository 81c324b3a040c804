"""User-facing errors: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HfIclError(Exception):
    """An error caused by the user's input (config, spec, data), reported without a traceback."""


class ConfigError(HfIclError):
    """A config file or override is invalid."""


def did_you_mean(value: str, allowed: Iterable[str]) -> str:
    """Return ' (did you mean X?)' when a close match exists, else ''."""
    matches = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def unknown_name(kind: str, value: str, allowed: Iterable[str], where: str = "") -> HfIclError:
    """Build the standard 'unknown X' error with the allowed names and a suggestion."""
    allowed = sorted(allowed)
    prefix = f"{where}: " if where else ""
    return HfIclError(
        f"{prefix}unknown {kind} {value!r}{did_you_mean(value, allowed)}; "
        f"allowed: {', '.join(allowed)}"
    )
