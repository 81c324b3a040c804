"""Locate the built-in `tasks/`, `eval_configs/` and `accelerate_configs/` folders, editable
install or wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def builtin_dir(kind: str) -> Path:
    """`tasks`, `eval_configs` or `accelerate_configs`: the wheel ships them under hf_icl/_builtin/, a checkout at the top."""
    packaged = _PACKAGE / "_builtin" / kind
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent / kind


def builtin_names(kind: str) -> list[str]:
    folder = builtin_dir(kind)
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
