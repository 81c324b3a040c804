"""Config dataclasses loaded from YAML, validated with one-line errors, overridable with --set.

Every config class is a plain dataclass; a field's ``metadata`` may carry ``help`` (shown in
docs/CLI) and ``choices`` (allowed values). ``from_dict`` validates recursively and reports the
file, the dotted key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml

from hf_icl.errors import ConfigError, did_you_mean

T = TypeVar("T")


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    choices: tuple | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with help text and optional allowed values."""
    metadata = {"help": help, "choices": choices}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _where(source: str, key: str) -> str:
    return f"{source}: {key}" if key else source


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, source: str, key: str) -> Any:
    """Check/convert one value against a type hint; raise ConfigError naming the key."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error is the informative one
            return _convert(value, options[0], source, key)
        for arg in options:
            try:
                return _convert(value, arg, source, key)
            except ConfigError:
                continue
        raise ConfigError(f"{_where(source, key)}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(
                f"{_where(source, key)}: invalid value {value!r}{did_you_mean(value, get_args(tp))}; "
                f"allowed: {', '.join(map(str, get_args(tp)))}"
            )
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{_where(source, key)}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_convert(v, item_tp, source, f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{_where(source, key)}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (Any, Any)
        return {k: _convert(v, val_tp, source, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        shorthand = getattr(tp, "string_field", None)
        if shorthand and isinstance(value, str):  # `models: [smollm2-135m]`
            value = {shorthand: value}
        return from_dict(tp, value, source, key)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if (
        isinstance(tp, type)
        and not isinstance(value, tp)
        or (tp in (int, float) and isinstance(value, bool))
    ):
        raise ConfigError(f"{_where(source, key)}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Any, source: str = "config", prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, validating keys, types and choices."""
    if not isinstance(data, dict):
        raise ConfigError(f"{_where(source, prefix)}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        moved = getattr(cls, "moved_keys", {}).get(key)
        if moved:
            raise ConfigError(
                f"{source}: {dotted!r} has moved to {moved!r}; write "
                f"{moved.replace('.', ': {')}: ...{'}' * moved.count('.')} instead"
            )
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown key {dotted!r}{did_you_mean(key, fields)}; "
                f"allowed: {', '.join(sorted(fields))}"
            )
        value = _convert(value, hints[key], source, dotted)
        choices = fields[key].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(
                f"{source}: {dotted}: invalid value {value!r}{did_you_mean(value, choices)}; "
                f"allowed: {', '.join(map(str, choices))}"
            )
        kwargs[key] = value
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{source}: missing required key {where}{missing[0]!r}")
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(
            f"{_where(source, _field_key(str(err), fields, prefix))}: "
            f"{_field_message(str(err), fields)}"
        ) from None
    if getattr(cls, "resolved_as_written", False):  # to_dict gives back only the written keys
        obj.written_keys = tuple(kwargs)
    return obj


def _field_key(message: str, fields: dict, prefix: str) -> str:
    """A check's message 'field: ...' names the key, so the location can be 'prefix.field'."""
    head, sep, _ = message.partition(": ")
    if sep and head.split(".")[0] in fields:
        return f"{prefix}.{head}" if prefix else head
    return prefix


def _field_message(message: str, fields: dict) -> str:
    head, sep, rest = message.partition(": ")
    return rest if sep and head.split(".")[0] in fields else message


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict/list tree (for config.yaml and results)."""
    if dataclasses.is_dataclass(obj):
        names = getattr(obj, "written_keys", None) or [f.name for f in dataclasses.fields(obj)]
        return {name: to_dict(getattr(obj, name)) for name in names}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


_INDEX = re.compile(r"^\d+$")
_KEY = re.compile(r"^[^\s.=]+$")
_SET_FORMAT = (
    "expected key=value with a dotted key (list indices allowed) and a YAML value, "
    "e.g. models.0.dtype=bfloat16 or shots=[0,4]"
)


def apply_overrides(data: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``key.sub.0=value`` overrides (value parsed as YAML) to a nested dict in place."""
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"{source} {item!r}: {_SET_FORMAT}")
        _check_key(path, f"{source} {item!r}")
        set_path(data, path, _override_value(item, raw, source), source)
    return data


def _override_value(item: str, raw: str, source: str) -> Any:
    """The YAML value of one override ('' stays an empty string)."""
    if not raw:
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(
            f"{source} {item!r}: the value {raw!r} is not valid YAML ({problem}); "
            "write lists as [0,4] and quote text that holds YAML syntax, e.g. "
            "key='\"a: b\"'"
        ) from None


def _check_key(path: str, where: str) -> None:
    """Dotted keys: non-empty parts without spaces or '=' (list indices are digits)."""
    bad = next((part for part in path.split(".") if not _KEY.match(part)), None)
    if bad is not None:
        what = "an empty key part" if not bad else f"key part {bad!r} holds spaces"
        raise ConfigError(f"{where}: {what}; {_SET_FORMAT}")


def set_path(data: dict, path: str, value: Any, source: str = "--set") -> None:
    """Set ``value`` at a dotted ``path`` (list indices allowed) of a nested dict, in place."""
    _check_key(path, f"{source} {path!r}")
    parts = path.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not _INDEX.match(part) or int(part) >= len(node):
                allowed = f"0..{len(node) - 1}" if node else "none: the list is empty"
                raise ConfigError(
                    f"{source} {path}: {where!r} is not an index of a list of "
                    f"length {len(node)} (indices: {allowed})"
                )
            idx = int(part)
            if last:
                node[idx] = value
            else:
                if isinstance(node[idx], str):  # `tasks: [sentiment]` → mapping form
                    node[idx] = {"name": node[idx]}
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(
                f"{source} {path}: {'.'.join(parts[:i])!r} is "
                f"{type(node).__name__} {node!r}, not a mapping or list"
            )
