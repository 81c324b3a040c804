"""Attention to a batch-shared prefix equals attention over each row's own copy of the prefix."""

import pytest
import torch
from torch import nn

from hf_icl.attention.shared_prefix import shared_prefix_attention


def layer(index: int) -> nn.Module:
    module = nn.Module()
    module.layer_idx = index
    return module


def copied_prefix_attention(query, key, value, mask, prefix, scale, softcap=None):
    """The reference: every row gets the prefix in front of its keys, heads repeated for GQA."""
    batch, heads = query.shape[:2]
    keys = torch.cat([prefix[0].expand(batch, -1, -1, -1), key], 2)
    values = torch.cat([prefix[1].expand(batch, -1, -1, -1), value], 2)
    groups = heads // key.shape[1]
    keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
    scores = query @ keys.transpose(-1, -2) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return (probs @ values).transpose(1, 2)


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_shared_prefix_equals_a_copy_per_row(softcap):
    torch.manual_seed(0)
    batch, heads, kv_heads, length, own, prefix_len, dim = 3, 6, 2, 4, 5, 7, 8
    query = torch.randn(batch, heads, length, dim)
    key, value = torch.randn(2, batch, kv_heads, own, dim)
    prefix = [
        (torch.randn(1, kv_heads, prefix_len, dim), torch.randn(1, kv_heads, prefix_len, dim))
    ]
    mask = torch.rand(batch, 1, length, prefix_len + own) < 0.5
    mask[..., -1] = True  # every query sees at least one key
    out, weights = shared_prefix_attention(
        layer(0), query, key, value, mask, scaling=0.3, softcap=softcap, shared_prefix=prefix
    )
    reference = copied_prefix_attention(query, key, value, mask, prefix[0], 0.3, softcap)
    assert weights is None and out.shape == (batch, length, heads, dim)
    assert torch.allclose(out, reference, atol=1e-6)
    moved = [(prefix[0][0] + 1.0, prefix[0][1])]  # the prefix's keys count
    other, _ = shared_prefix_attention(
        layer(0), query, key, value, mask, scaling=0.3, softcap=softcap, shared_prefix=moved
    )
    assert (other - out).abs().max() > 1e-2


def test_without_a_prefix_rows_attend_to_their_own_keys_only():
    torch.manual_seed(1)
    query, key, value = torch.randn(2, 4, 3, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    mask = torch.ones(5, 5, dtype=torch.bool).tril()[-3:].expand(2, 1, -1, -1)
    out, _ = shared_prefix_attention(layer(0), query, key, value, mask)
    reference = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1), attn_mask=mask
    )
    assert torch.allclose(out, reference.transpose(1, 2), atol=1e-6)
