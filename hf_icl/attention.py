"""Custom attention: momentum attention and attention capture, behind one registration.

A model gets one attention function, registered through transformers' ``AttentionInterface``
as ``hf_icl_<base>`` where ``base`` is the model's own implementation (``sdpa`` or ``eager``).
It calls that implementation unchanged, then applies whichever features are on:

- **momentum** (Dai et al.): each attention output, per head and before ``o_proj``, gains a
  decaying sum of the values before it, ``MoAttn_t = Attn_t + Σ_i η^(pos_t − pos_i) v_i``.
  The ``recursive`` variant is ``(1 − η)·Attn_t + η·MoAttn_(t−1)``, i.e.
  ``(1 − η) Σ_i η^(pos_t − pos_i) Attn_i`` over the same keys plus ``t`` itself.
- **capture**: per layer, at chosen positions, the output of ``o_proj`` and the raw scores.

What the momentum sum covers: the keys query ``t`` may attend to (attention mask True) that lie
before it in position (``include_current`` adds its own value), weighted by η to the position
distance. So padding adds nothing, a sliding-window layer sums over its window only, and prompts
packed into one sequence (block mask, position ids restarting per segment) each get exactly the
sum they would get alone. Plain causal/padding masks use a chunked scan, O(T·chunk·d); other
masks use one masked (T×S) matmul, the same cost class as attention itself.

The keys a layer receives include its cache. The positions of cached tokens (and, for the
recursive variant, their attention outputs) are recorded on the cache object by hooks on the
decoder, so a prefix cache that is cropped, or shared by a batch, gives the same numbers as
a full forward. A cache filled while momentum was off is taken to hold the tokens immediately
before the current ones.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from hf_icl.errors import HfIclError, unknown_name
from hf_icl.kv_cache import find_cache, output_cache

VARIANTS = ("additive", "recursive")
CONFIG_KEY = "hf_icl_momentum"
SCAN_CHUNK = 64
_WRAPPABLE = ("sdpa", "eager")
_STATE = "_hf_icl_attention"
_HISTORY = "_hf_icl_history"


@dataclass
class MomentumConfig:
    """Momentum attention settings, saved as ``model.config.hf_icl_momentum``."""

    eta: float = field(metadata={"help": "decay η in [0, 1): a value k positions back weighs η^k"})
    layers: str | Sequence[int] = field(
        default="all", metadata={"help": '"all" or a list of layer indices'}
    )
    include_current: bool = field(
        default=False, metadata={"help": "also add the query's own value (additive variant)"}
    )
    variant: str = field(
        default="additive",
        metadata={
            "help": "additive: Attn_t + Σ η^(t−i) v_i; recursive: (1−η)·Attn_t + η·MoAttn_(t−1)"
        },
    )

    def validate(self, num_layers: int) -> None:
        """Raise a one-line HfIclError for a setting the model cannot use."""
        eta = self.eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < 1:
            raise HfIclError(f"momentum eta must be a number in [0, 1), got {eta!r}")
        if self.variant not in VARIANTS:
            raise unknown_name("momentum variant", self.variant, VARIANTS)
        if self.include_current and self.variant == "recursive":
            raise HfIclError("momentum include_current applies to the additive variant only")
        if self.layers == "all":
            return
        layers = [] if isinstance(self.layers, str) else list(self.layers)
        valid = all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
        if not layers or not valid or not all(0 <= i < num_layers for i in layers):
            raise HfIclError(
                f"momentum layers must be 'all' or indices in [0, {num_layers}), got {self.layers!r}"
            )

    def applies_to(self, layer_idx: int) -> bool:
        return self.layers == "all" or layer_idx in self.layers

    def to_dict(self) -> dict:
        """A JSON-ready form for the model config."""
        data = asdict(self)
        data["layers"] = self.layers if self.layers == "all" else list(self.layers)
        return data


def decaying_cumsum(
    x: torch.Tensor, eta: float, inclusive: bool, chunk: int = SCAN_CHUNK
) -> torch.Tensor:
    """``y_t = Σ_{i<t} η^(t−i) x_i`` (``i ≤ t`` if inclusive) along dim −2, in O(S·chunk·D).

    Works chunk by chunk so that η is only raised to non-negative powers: a running sum rescaled
    by η^−t would overflow on long sequences.
    """
    *lead, length, dim = x.shape
    num_chunks = -(-length // chunk)
    if length % chunk:
        x = nn.functional.pad(x, (0, 0, 0, num_chunks * chunk - length))
    chunks = x.reshape(*lead, num_chunks, chunk, dim)
    inference = torch.is_inference_mode_enabled()
    within, leaving, across, entering = _scan_weights(
        eta, chunk, num_chunks, inclusive, x.dtype, x.device, inference
    )
    # What each chunk hands to the first position of the next, carried on across chunks.
    carried = across @ (leaving @ chunks).squeeze(-2)
    y = torch.addcmul(within @ chunks, entering, carried[..., None, :])
    return y.reshape(*lead, num_chunks * chunk, dim)[..., :length, :]


@functools.lru_cache(maxsize=64)
def _scan_weights(
    eta: float,
    chunk: int,
    num_chunks: int,
    inclusive: bool,
    dtype: torch.dtype,
    device: torch.device,
    inference: bool,
) -> tuple[torch.Tensor, ...]:
    """The scan's constant matrices, built once per setting instead of once per layer call.

    `inference` only keys the cache: tensors made in inference mode cannot be saved for backward.
    """
    wdtype = torch.promote_types(dtype, torch.float32)
    offset = torch.arange(chunk, device=device, dtype=wdtype)
    index = torch.arange(num_chunks, device=device, dtype=wdtype)
    within = _decay(eta, offset[:, None] - offset[None, :], 0 if inclusive else 1)
    across = _decay(eta, chunk * (index[:, None] - index[None, :] - 1), 0)
    leaving = (eta ** (chunk - offset))[None]
    entering = (eta**offset)[:, None]
    return tuple(w.to(dtype) for w in (within, leaving, across, entering))


def momentum_output(
    attn_output: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    key_positions: torch.Tensor,
    config: MomentumConfig,
    *,
    is_causal: bool = True,
    past_outputs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply momentum to an attention function's output.

    attn_output: (B, T, H, D) as attention functions return it; value: (B, Hkv, S, D), cache
    included, the last T keys being the queries' own tokens; attention_mask: None, bool
    (True = attend) or additive float, (B|1, 1, T, S); key_positions: (B|1, S);
    past_outputs (recursive variant with a cache): raw attention outputs (B|1, H, S − T, D).
    """
    query_len, heads = attn_output.shape[1], attn_output.shape[2]
    allowed = _allowed_keys(attention_mask, query_len, value.shape[2], is_causal, value.device)
    if config.variant == "additive":
        if allowed is not None and allowed.shape[1] > 1:
            value = repeat_kv(value, heads // value.shape[1])
        total = _decayed_sum(
            value, allowed, key_positions, query_len, config.eta, config.include_current
        )
        return _add_to_heads(attn_output, total)
    outputs = attn_output.transpose(1, 2)
    if past_outputs is not None:
        outputs = _cat_rows(past_outputs, outputs, dim=2)
    total = _decayed_sum(outputs, allowed, key_positions, query_len, config.eta, inclusive=True)
    return ((1 - config.eta) * total).transpose(1, 2)


def _add_to_heads(attn_output: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
    """attn_output (B, T, H, D) plus momentum (B, Hkv, T, D) of the kv head each query head uses."""
    batch, length, heads, dim = attn_output.shape
    kv_heads = momentum.shape[1]
    grouped = attn_output.reshape(batch, length, kv_heads, heads // kv_heads, dim)
    return (grouped + momentum.transpose(1, 2)[:, :, :, None]).view(batch, length, heads, dim)


def _decay(eta: float, distance: torch.Tensor, min_distance: int) -> torch.Tensor:
    """η^distance where distance ≥ min_distance, else 0; never a negative power (inf in backward)."""
    return torch.where(distance >= min_distance, eta ** distance.clamp_min(0), 0)


def _allowed_keys(
    mask: torch.Tensor | None, query_len: int, key_len: int, is_causal: bool, device: torch.device
) -> torch.Tensor | None:
    """The mask as bool (True = may attend); None stands for plain causal, as sdpa reads it."""
    if mask is None:
        return (
            None
            if is_causal
            else torch.ones(1, 1, query_len, key_len, dtype=torch.bool, device=device)
        )
    mask = mask[..., :key_len]
    return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2


def _causal(query_len: int, key_len: int, device: torch.device) -> torch.Tensor:
    """(T, S) causal pattern with the queries being the last T keys."""
    keys = torch.arange(key_len, device=device)
    return keys[None, :] <= keys[key_len - query_len :, None]


def _scan_plan(
    allowed: torch.Tensor | None, key_positions: torch.Tensor, query_len: int
) -> tuple[bool, torch.Tensor | None]:
    """Whether the scan gives the exact masked sum, and the keys it must drop (None: none).

    Exact when the mask is plain causal, or causal with padding, and positions advance by one per
    token over the tokens involved, so that index distances are position distances.
    """
    key_len = key_positions.shape[-1]
    index = torch.arange(key_len, device=key_positions.device)
    if allowed is None:
        return bool((key_positions - index == key_positions[:, :1]).all()), None
    if allowed.shape[1] != 1:
        return False, None
    rows = allowed[:, 0]
    keep = rows.any(dim=1)
    if not torch.equal(rows, _causal(query_len, key_len, rows.device) & keep[:, None, :]):
        return False, None
    involved = keep.clone()
    involved[:, key_len - query_len :] |= rows.any(dim=-1)
    offset = key_positions - index
    far = torch.iinfo(offset.dtype).max
    low = torch.where(involved, offset, far).amin(-1)
    high = torch.where(involved, offset, -far).amax(-1)
    return bool(((low == high) | ~involved.any(-1)).all()), keep


def _decayed_sum(
    x: torch.Tensor,
    allowed: torch.Tensor | None,
    key_positions: torch.Tensor,
    query_len: int,
    eta: float,
    inclusive: bool,
) -> torch.Tensor:
    """Σ over allowed keys i of η^(pos_t − pos_i) x_i for each of the last T positions: (B, Hx, T, D)."""
    exact, keep = _scan_plan(allowed, key_positions, query_len) if query_len > 1 else (False, None)
    if exact:
        kept = x if keep is None else x * keep[:, None, :, None].to(x.dtype)
        return decaying_cumsum(kept, eta, inclusive)[..., -query_len:, :]
    key_len = key_positions.shape[-1]
    if allowed is None:
        allowed = _causal(query_len, key_len, x.device)[None, None]
    wdtype = torch.promote_types(x.dtype, torch.float32)
    query_positions = key_positions[:, key_len - query_len :]
    distance = (query_positions[:, :, None] - key_positions[:, None, :]).to(wdtype)[:, None]
    weights = torch.where(allowed, _decay(eta, distance, 0 if inclusive else 1), 0)
    return weights.to(x.dtype) @ x


def _cat_rows(past: torch.Tensor, new: torch.Tensor, dim: int) -> torch.Tensor:
    """Concatenate along `dim`, broadcasting a single past row (a prefix shared by a batch)."""
    batch = max(past.shape[0], new.shape[0])
    if {past.shape[0], new.shape[0]} - {1, batch}:
        raise RuntimeError(
            f"momentum: the cache holds {past.shape[0]} rows but the batch has {new.shape[0]}; "
            "expand a cache only from a single row"
        )
    return torch.cat([past.expand(batch, *past.shape[1:]), new.expand(batch, *new.shape[1:])], dim)


def _preceding_positions(query_positions: torch.Tensor, count: int) -> torch.Tensor:
    """Positions of `count` cached tokens assumed to come right before the current ones."""
    steps = torch.arange(-count, 0, device=query_positions.device, dtype=query_positions.dtype)
    return query_positions[:, :1] + steps


@dataclass
class _History:
    """What the tokens in a cache were: positions, and raw attention outputs (recursive variant)."""

    positions: torch.Tensor
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)

    def first(self, length: int) -> _History:
        """The history of a cache cropped to `length` tokens."""
        outputs = {layer: out[:, :, :length] for layer, out in self.outputs.items()}
        return _History(self.positions[:, :length], outputs)


@dataclass
class _ForwardContext:
    """One decoder forward: the cache it starts from and what it adds to it."""

    past_length: int
    history: _History | None
    new_positions: torch.Tensor | None = None
    new_outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    key_positions: dict[int, torch.Tensor] = field(default_factory=dict)

    def cached_positions(self, query_positions: torch.Tensor, count: int) -> torch.Tensor:
        """Positions of the last `count` cached tokens (a sliding layer keeps only its window)."""
        if self.history is None:
            return _preceding_positions(query_positions, count)
        if count > self.past_length:
            raise RuntimeError(
                f"momentum: a layer received {count} cached keys of {self.past_length}"
            )
        return self.history.positions[:, self.past_length - count :]

    def cached_outputs(self, layer: int, count: int) -> torch.Tensor:
        outputs = self.history.outputs.get(layer) if self.history is not None else None
        if outputs is None:
            raise RuntimeError(
                "recursive momentum with a KV cache needs a cache filled while it was enabled"
            )
        return outputs[:, :, self.past_length - count :]

    def extended_history(self) -> _History:
        cached = self.cached_positions(self.new_positions, self.past_length)
        positions = _cat_rows(cached, self.new_positions, dim=-1)
        outputs = {
            layer: _cat_rows(self.cached_outputs(layer, self.past_length), new, dim=2)
            if self.past_length
            else new
            for layer, new in self.new_outputs.items()
        }
        return _History(positions, outputs)


@dataclass
class AttentionCapture:
    """Per-layer records at chosen positions of the last forward inside `capture_attention`.

    ``outputs[layer]``: (B, [P,] hidden), the self-attention output after ``o_proj`` and before
    the residual (momentum included). ``scores[layer]``: (B, [P,] heads, keys), raw scores
    q·k·scaling to every key the layer receives (cache included; a sliding-window layer with a
    cache receives only its window), before softcapping and masking. CPU, float32.
    """

    positions: torch.Tensor
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    scores: dict[int, torch.Tensor] = field(default_factory=dict)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """x[b, positions[b]] for x of shape (B, T, ...)."""
        positions = self.positions.to(x.device)
        if positions.shape[0] != x.shape[0]:
            raise HfIclError(
                f"capture positions have {positions.shape[0]} rows, the batch has {x.shape[0]}"
            )
        if int(positions.max()) >= x.shape[1] or int(positions.min()) < 0:
            raise HfIclError(
                f"capture positions must lie in [0, {x.shape[1]}), got {positions.tolist()}"
            )
        batch = torch.arange(x.shape[0], device=x.device).view(-1, *[1] * (positions.dim() - 1))
        return x[batch, positions]

    def record_output(
        self, layer: int, module: nn.Module, args: tuple, output: torch.Tensor
    ) -> None:
        self.outputs[layer] = self._rows(output).detach().float().cpu()

    def record_scores(
        self, layer: int, query: torch.Tensor, key: torch.Tensor, scaling: float
    ) -> None:
        query = self._rows(query.transpose(1, 2))
        key = repeat_kv(key, query.shape[-2] // key.shape[1])
        scores = torch.einsum("b...hd,bhsd->b...hs", query, key) * scaling
        self.scores[layer] = scores.detach().float().cpu()


@dataclass
class _State:
    """Shared by the decoder and its attention modules while a feature is on."""

    base: str
    hooks: list = field(default_factory=list)
    momentum: MomentumConfig | None = None
    capture: AttentionCapture | None = None
    forward: _ForwardContext | None = None


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
    key_positions = _key_positions(context, positions, output.shape[1], cached, value.device)
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
        key_positions,
        config,
        is_causal=getattr(module, "is_causal", True) if is_causal is None else is_causal,
        past_outputs=past_outputs,
    )
    if config.variant == "recursive" and context is not None:
        context.new_outputs[layer] = output.transpose(1, 2)
    return result


def _key_positions(
    context: _ForwardContext | None,
    query_positions: torch.Tensor | None,
    query_len: int,
    cached: int,
    device: torch.device,
) -> torch.Tensor:
    """Positions of every key a layer receives: its `cached` tokens, then the current ones."""
    if context is not None and cached in context.key_positions:
        return context.key_positions[cached]
    if query_positions is None:  # the models read here pass them; keep the model's default
        start = context.past_length if context is not None else cached
        query_positions = torch.arange(start, start + query_len, device=device)[None]
    if context is None:
        return _cat_rows(_preceding_positions(query_positions, cached), query_positions, dim=-1)
    if context.new_positions is None:
        context.new_positions = query_positions
    positions = _cat_rows(context.cached_positions(query_positions, cached), query_positions, -1)
    # Every layer of one forward gets the same position ids; sliding layers fewer cached keys.
    context.key_positions[cached] = positions
    return positions


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


def _attention_modules(model: nn.Module) -> list[nn.Module]:
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
    getattr(decoder, _STATE).forward = _ForwardContext(past_length, history)


def _close_forward(decoder: nn.Module, args: tuple, kwargs: dict, output) -> None:
    """After the decoder ran: record what the cache now holds."""
    state = getattr(decoder, _STATE)
    context, state.forward = state.forward, None
    cache = output_cache(output)
    if context is not None and context.new_positions is not None and cache is not None:
        setattr(cache, _HISTORY, context.extended_history())


def _install(model: PreTrainedModel) -> _State:
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
    for module in [decoder, *_attention_modules(model)]:
        setattr(module, _STATE, state)
    model.set_attn_implementation(name)
    return state


def _release_if_idle(model: PreTrainedModel, state: _State) -> None:
    """With no feature left on, give the model back its original implementation."""
    if state.momentum is not None or state.capture is not None:
        return
    for hook in state.hooks:
        hook.remove()
    for module in [model.get_decoder(), *_attention_modules(model)]:
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
    config = MomentumConfig(eta, layers, include_current, variant)
    config.validate(model.config.num_hidden_layers)
    _install(model).momentum = config
    setattr(model.config, CONFIG_KEY, config.to_dict())
    return config


def disable_momentum(model: PreTrainedModel) -> None:
    """Turn momentum off; without capture the original attention implementation is restored."""
    if hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)
    state = getattr(model.get_decoder(), _STATE, None)
    if state is not None:
        state.momentum = None
        _release_if_idle(model, state)


def restore_from_config(model: PreTrainedModel) -> MomentumConfig | None:
    """Re-enable the momentum a loaded model's config records; loading alone leaves it off."""
    saved = getattr(model.config, CONFIG_KEY, None)
    return enable_momentum(model, **saved) if saved else None


@contextmanager
def capture_attention(
    model: PreTrainedModel, positions: torch.Tensor | Sequence
) -> Iterator[AttentionCapture]:
    """Record o_proj outputs and raw scores at `positions` ((B,) or (B, P) indices into the input)."""
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.dim() not in (1, 2) or positions.numel() == 0:
        raise HfIclError(
            f"capture positions must be (batch,) or (batch, n) indices, got shape {tuple(positions.shape)}"
        )
    state = _install(model)
    if state.capture is not None:
        raise HfIclError("capture_attention is already active on this model")
    capture = AttentionCapture(positions)
    handles = [
        module.o_proj.register_forward_hook(
            functools.partial(capture.record_output, module.layer_idx)
        )
        for module in _attention_modules(model)
    ]
    state.capture = capture
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()
        state.capture = None
        _release_if_idle(model, state)
