"""Packages whose public names load on first use, so that importing them stays light (a config
check must not import torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, homes: dict[str, str]) -> tuple[Callable, Callable]:
    """`__getattr__` and `__dir__` for `package`, whose name N lives in module `homes[N]`
    (relative to the package, or absolute when it starts with 'hf_icl.')."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        home = homes[name]
        module = importlib.import_module(
            home if home.startswith("hf_icl.") else f"{package}.{home}"
        )
        namespace[name] = value = getattr(module, name)
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *homes])

    return __getattr__, __dir__
