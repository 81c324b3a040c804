"""One attention function, registered through transformers' ``AttentionInterface`` as
``hf_icl_<base>`` (``base``: the model's own sdpa or eager), that calls the original unchanged
and then applies whichever features are on; decoder hooks keep the cache history; switching the
last feature off gives the model back its own implementation.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from hf_icl.attention.history import ForwardContext, key_positions
from hf_icl.attention.momentum import momentum_output
from hf_icl.attention.settings import CONFIG_KEY, MomentumConfig
from hf_icl.errors import HfIclError
from hf_icl.kv_cache import find_cache, output_cache

if TYPE_CHECKING:
    from hf_icl.attention.capture import AttentionCapture

_WRAPPABLE = ("sdpa", "eager")
_STATE = "_hf_icl_attention"
_HISTORY = "_hf_icl_history"


@dataclass
class _State:
    """Shared by the decoder and its attention modules while a feature is on."""

    base: str
    hooks: list = field(default_factory=list)
    momentum: MomentumConfig | None = None
    capture: AttentionCapture | None = None
    forward: ForwardContext | None = None


def _attention(module: nn.Module, query, key, value, attention_mask, *, base: str, **kwargs):
    """The registered function: the model's own attention, then the features that are on."""
    output, weights = _base_function(module, base)(
        module, query, key, value, attention_mask, **kwargs
    )
    state = getattr(module, _STATE, None)
    if state is None:
        return output, weights
    if state.capture is not None:
        scaling = kwargs.get("scaling")
        scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        state.capture.record_scores(module.layer_idx, query, key, scaling)
    if state.momentum is not None and state.momentum.applies_to(module.layer_idx):
        output = _layer_momentum(module, state, output, value, attention_mask, kwargs)
    return output, weights


def _base_function(module: nn.Module, base: str):
    # Models keep their own eager function in their modeling file; it is not in the registry.
    if base == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[base]


def _layer_momentum(module, state: _State, output, value, attention_mask, kwargs) -> torch.Tensor:
    """Momentum for one layer call, with key positions and past outputs from the cache's history."""
    context, config, layer = state.forward, state.momentum, module.layer_idx
    cached = value.shape[2] - output.shape[1]
    positions = kwargs.get("position_ids")
    keys_at = key_positions(context, positions, output.shape[1], cached, value.device)
    past_outputs = None
    if config.variant == "recursive" and cached:
        if context is None:
            raise RuntimeError("recursive momentum with a KV cache needs the decoder hooks")
        past_outputs = context.cached_outputs(layer, cached)
    is_causal = kwargs.get("is_causal")
    result = momentum_output(
        output,
        value,
        attention_mask,
        keys_at,
        config,
        is_causal=getattr(module, "is_causal", True) if is_causal is None else is_causal,
        past_outputs=past_outputs,
    )
    if config.variant == "recursive" and context is not None:
        context.new_outputs[layer] = output.transpose(1, 2)
    return result


def _implementation_name(base: str) -> str:
    """Register (once) the wrapper of `base` with the mask format `base` expects."""
    if base not in _WRAPPABLE:
        raise HfIclError(
            f"momentum/capture wrap the sdpa or eager attention, but the model uses {base!r}; "
            "load it with attn_implementation='sdpa'"
        )
    name = f"hf_icl_{base}"
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, functools.partial(_attention, base=base))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


def attention_modules(model: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in model.modules()
        if isinstance(getattr(m, "layer_idx", None), int) and hasattr(m, "o_proj")
    ]


def _open_forward(decoder: nn.Module, args: tuple, kwargs: dict) -> None:
    """Before the decoder runs: tell the layers what its cache holds."""
    cache = find_cache([*args, *kwargs.values()])
    past_length = cache.get_seq_length() if cache is not None else 0
    history = getattr(cache, _HISTORY, None)
    if history is not None:
        # Shorter: tokens were added while momentum was off; longer: the cache was cropped.
        known = history.positions.shape[-1] >= past_length
        history = history.first(past_length) if known else None
    getattr(decoder, _STATE).forward = ForwardContext(past_length, history)


def _close_forward(decoder: nn.Module, args: tuple, kwargs: dict, output) -> None:
    """After the decoder ran: record what the cache now holds."""
    state = getattr(decoder, _STATE)
    context, state.forward = state.forward, None
    cache = output_cache(output)
    if context is not None and context.new_positions is not None and cache is not None:
        setattr(cache, _HISTORY, context.extended_history())


def install(model: PreTrainedModel) -> _State:
    """Switch the model to the wrapper (once) and return the shared state."""
    decoder = model.get_decoder()
    state = getattr(decoder, _STATE, None)
    if state is not None:
        return state
    state = _State(base=model.config._attn_implementation)
    name = _implementation_name(state.base)
    state.hooks = [
        decoder.register_forward_pre_hook(_open_forward, with_kwargs=True),
        decoder.register_forward_hook(_close_forward, with_kwargs=True),
    ]
    for module in [decoder, *attention_modules(model)]:
        setattr(module, _STATE, state)
    model.set_attn_implementation(name)
    return state


def release_if_idle(model: PreTrainedModel, state: _State) -> None:
    """With no feature left on, give the model back its original implementation."""
    if state.momentum is not None or state.capture is not None:
        return
    for hook in state.hooks:
        hook.remove()
    for module in [model.get_decoder(), *attention_modules(model)]:
        delattr(module, _STATE)
    model.set_attn_implementation(state.base)


def enable_momentum(
    model: PreTrainedModel,
    eta: float,
    layers: str | Sequence[int] = "all",
    include_current: bool = False,
    variant: str = "additive",
) -> MomentumConfig:
    """Turn momentum attention on (or change its settings) and record it in ``model.config``."""
    try:
        config = MomentumConfig(eta, layers, include_current, variant)
    except ValueError as err:
        raise HfIclError(f"momentum {err}") from None
    config.check_layers(model.config.num_hidden_layers)
    install(model).momentum = config
    setattr(model.config, CONFIG_KEY, config.to_dict())
    return config


def disable_momentum(model: PreTrainedModel) -> None:
    """Turn momentum off; without capture the original attention implementation is restored."""
    if hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)
    state = getattr(model.get_decoder(), _STATE, None)
    if state is not None:
        state.momentum = None
        release_if_idle(model, state)


def restore_from_config(model: PreTrainedModel) -> MomentumConfig | None:
    """Re-enable the momentum a loaded model's config records; loading alone leaves it off."""
    saved = getattr(model.config, CONFIG_KEY, None)
    return enable_momentum(model, **saved) if saved else None
