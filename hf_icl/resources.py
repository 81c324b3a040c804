"""Locate the built-in `tasks/`, `eval_configs/` and `accelerate_configs/` folders, editable
install or wheel."""

from __future__ import annotations

from pathlib import Path

from hf_icl.errors import HfIclError, unknown_name

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


def find_config(name: str | Path) -> Path:
    """A run config by path, or by the name of a built-in one (`quickstart`)."""
    path = Path(name)
    if path.is_file():
        return path
    builtin = builtin_dir("eval_configs") / f"{path.stem}.yaml"
    if path.parent == Path(".") and builtin.is_file():
        return builtin
    if path.suffix in (".yaml", ".yml"):
        raise HfIclError(f"config {str(name)!r}: no such file")
    raise unknown_name("config", str(name), builtin_names("eval_configs"))
