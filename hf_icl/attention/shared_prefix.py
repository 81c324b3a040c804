"""Attention to a demo prefix that a whole batch shares, held once instead of once per row.

Generation decodes many queries after the same demonstrations. Copying the prefix's keys and
values into every row of the batch costs memory, and every decoding step reads each copy again;
here the prefix stays a batch-1 tensor per layer and the scores of all rows against it are one
matrix product per key head. Each row also attends to its own cached tokens (its query and what
it generated so far) in the same softmax. The mask covers ``[prefix | own keys]`` for every
row, so a row sees only its own cut of the prefix, and sliding-window layers their window
(``hf_icl.packing.build_batch_masks``).

The model's own attention is replaced while `attending_to_shared_prefix` is open; the prefix
reaches this function as the ``shared_prefix`` keyword of the model's forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

from hf_icl.errors import HfIclError

NAME = "hf_icl_shared_prefix"
Prefix = Sequence[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (1, heads, L, dim)


def shared_prefix_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    scaling: float | None = None,
    softcap: float | None = None,
    shared_prefix: Prefix | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Softmax attention over the shared prefix's keys and each row's own keys (boolean mask
    ``(batch, 1, queries, prefix + own)``); grouped key heads are never repeated."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    scale = dim**-0.5 if scaling is None else scaling
    q = (query * scale).reshape(batch, kv_heads, heads // kv_heads * length, dim)
    scores = q @ key.transpose(-1, -2)
    prefix_len = 0
    if shared_prefix is not None:
        prefix_keys, prefix_values = shared_prefix[module.layer_idx]
        prefix_len = prefix_keys.shape[2]
        scores = torch.cat([torch.einsum("bhqd,hkd->bhqk", q, prefix_keys[0]), scores], -1)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    grouped = scores.view(batch, kv_heads, heads // kv_heads, length, -1)
    scores = torch.where(attention_mask[:, :, None], grouped, float("-inf")).flatten(2, 3)
    probs = scores.float().softmax(-1).to(value.dtype)
    out = probs[..., prefix_len:] @ value
    if shared_prefix is not None:
        out = out + torch.einsum("bhqk,hkd->bhqd", probs[..., :prefix_len], prefix_values[0])
    return out.reshape(batch, heads, length, dim).transpose(1, 2).contiguous(), None


@contextmanager
def attending_to_shared_prefix(model: PreTrainedModel) -> Iterator[None]:
    """The model attends through `shared_prefix_attention` inside the block, through its own
    implementation again after it."""
    own = model.config._attn_implementation
    if own.startswith("hf_icl_"):
        raise HfIclError(
            f"generation from a shared demo prefix computes attention itself, but the model "
            f"uses {own!r} (momentum attention or attention capture); turn those off"
        )
    if NAME not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(NAME, shared_prefix_attention)
        AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(own)
