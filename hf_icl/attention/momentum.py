"""Momentum attention maths (Dai et al.): a decaying sum of past values per head.

``MoAttn_t = Attn_t + Σ_i η^(pos_t − pos_i) v_i`` over the keys query ``t`` may attend to that
lie before it; the ``recursive`` variant is ``(1 − η)·Attn_t + η·MoAttn_(t−1)``. Plain
causal/padding masks use a chunked scan, O(T·chunk·d); other masks one masked (T×S) matmul.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from transformers.integrations.sdpa_attention import repeat_kv

from hf_icl.attention.settings import MomentumConfig

SCAN_CHUNK = 64


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
        outputs = cat_rows(past_outputs, outputs, dim=2)
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


def scan_plan(
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
    exact, keep = scan_plan(allowed, key_positions, query_len) if query_len > 1 else (False, None)
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


def cat_rows(past: torch.Tensor, new: torch.Tensor, dim: int) -> torch.Tensor:
    """Concatenate along `dim`, broadcasting a single past row (a prefix shared by a batch)."""
    batch = max(past.shape[0], new.shape[0])
    if {past.shape[0], new.shape[0]} - {1, batch}:
        raise RuntimeError(
            f"momentum: the cache holds {past.shape[0]} rows but the batch has {new.shape[0]}; "
            "expand a cache only from a single row"
        )
    return torch.cat([past.expand(batch, *past.shape[1:]), new.expand(batch, *new.shape[1:])], dim)
