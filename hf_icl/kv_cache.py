"""Where a KV cache goes in and comes out, whatever transformers release is installed.

transformers 5.24 renamed the cache argument of every forward from ``past_key_values`` to
``cache`` (the old name warns until 5.40) and model outputs now carry it as ``.cache``. Code
that hands a cache to a model asks `cache_kwargs`; code that looks for one (hooks) asks
`find_cache`, which goes by type, not by name, so the next rename cannot hide it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from transformers import Cache

_NAMES = ("cache", "past_key_values")


@functools.lru_cache(maxsize=256)
def _argument_name(forward: Callable) -> str:
    parameters = inspect.signature(forward).parameters
    return next((name for name in _NAMES if name in parameters), _NAMES[-1])


def cache_argument(forward: Callable) -> str:
    """The keyword under which ``forward`` (a model's, a layer's, a mask builder) takes the cache."""
    return _argument_name(getattr(forward, "__func__", forward))


def cache_kwargs(model: Any, cache: Cache | None) -> dict[str, Cache | None]:
    """``{name: cache}`` for ``model(...)`` under the name this release expects."""
    return {cache_argument(model.forward): cache}


def find_cache(values: Iterable[Any]) -> Cache | None:
    """The first KV cache among call arguments or output fields."""
    return next((v for v in values if isinstance(v, Cache)), None)


def output_cache(output: Any) -> Cache | None:
    """The cache a model or decoder returned (``.cache``, ``.past_key_values`` or a tuple item)."""
    if isinstance(output, dict):
        return find_cache(output.values())
    if isinstance(output, tuple):
        return find_cache(output)
    return find_cache(getattr(output, name, None) for name in _NAMES)
