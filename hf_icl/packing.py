"""Queries packed into block-masked rows after a shared demo prefix, and the masks for them.

Each packed query sees the prefix and its own earlier tokens, at the positions it would have
alone, so one forward scores many queries with exactly the numbers of separate prompts. The
scorer keeps the prefix in a KV cache; the ICL-vs-FT analysis puts it in the row itself. Custom
4D masks are used as-is by transformers, so sliding-window layers get their window here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pack_rows(lengths: Sequence[int], pack_tokens: int) -> list[list[int]]:
    """Indices of consecutive items per row, each row at most `pack_tokens` long (≥ 1 item)."""
    rows: list[list[int]] = [[]]
    size = 0
    for i, length in enumerate(lengths):
        if rows[-1] and size + length > pack_tokens:
            rows.append([])
            size = 0
        rows[-1].append(i)
        size += length
    return rows if rows[0] else []


def packed_row(
    prefix_len: int, lengths: Sequence[int], device: torch.device, *, with_prefix: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query positions, key positions, allowed (queries × keys)) for segments of `lengths`
    after a prefix of `prefix_len` tokens; `with_prefix` also gives the prefix's own rows."""
    segment = torch.repeat_interleave(
        torch.arange(len(lengths), device=device), torch.tensor(list(lengths), device=device)
    )
    local = torch.cat([torch.arange(n, device=device) for n in lengths])
    q_pos = prefix_len + local
    k_pos = torch.cat([torch.arange(prefix_len, device=device), q_pos])
    same = (segment[:, None] == segment[None, :]) & (local[:, None] >= local[None, :])
    sees_prefix = torch.ones(len(local), prefix_len, dtype=torch.bool, device=device)
    allowed = torch.cat([sees_prefix, same], 1)
    if with_prefix:
        causal = torch.ones(prefix_len, prefix_len, dtype=torch.bool, device=device).tril()
        blind = torch.zeros(prefix_len, len(local), dtype=torch.bool, device=device)
        allowed = torch.cat([torch.cat([causal, blind], 1), allowed], 0)
        q_pos = k_pos
    return q_pos, k_pos, allowed


def packed_tree_row(
    prefix_lens: Sequence[int],
    trunks: Sequence[int],
    branches: Sequence[Sequence[int]],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(query positions, key positions, allowed) for segments that fork: segment i sees the
    first ``prefix_lens[i]`` cached tokens, then ``trunks[i]`` tokens (a query), then branches
    of ``branches[i]`` tokens that each see the prefix, the trunk and themselves only (one
    query's answer choices, scored without re-encoding the query)."""
    seg, branch, depth = [], [], []
    for i, (trunk, forks) in enumerate(zip(trunks, branches)):
        seg += [i] * (trunk + sum(forks))
        branch += [-1] * trunk
        depth += list(range(trunk))
        for j, n in enumerate(forks):
            branch += [j] * n
            depth += range(trunk, trunk + n)
    seg_t, branch_t, depth_t = (torch.tensor(v, device=device) for v in (seg, branch, depth))
    starts = torch.tensor(list(prefix_lens), device=device)[seg_t]
    cached = max(prefix_lens)
    q_pos = starts + depth_t
    k_pos = torch.cat([torch.arange(cached, device=device), q_pos])
    sees_prefix = torch.arange(cached, device=device)[None, :] < starts[:, None]
    same = (
        (seg_t[:, None] == seg_t[None, :])
        & (depth_t[:, None] >= depth_t[None, :])
        & ((branch_t[None, :] == -1) | (branch_t[None, :] == branch_t[:, None]))
    )
    return q_pos, k_pos, torch.cat([sees_prefix, same], 1)


def grouped_row(
    groups: Sequence[tuple[int, Sequence[tuple[int, int]]]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, allowed) of a row of independent groups, each a prefix encoded in the row
    followed by segments ``(cut, length)`` that see the prefix's first ``cut`` tokens and
    themselves (one query's prompts for several shot counts, sharing its demonstrations)."""
    group, segment, pos, limit = [], [], [], []
    for g, (prefix_len, segments) in enumerate(groups):
        group += [g] * prefix_len
        segment += [-1] * prefix_len
        pos += range(prefix_len)
        limit += range(1, prefix_len + 1)
        for s, (cut, length) in enumerate(segments):
            group += [g] * length
            segment += [s] * length
            pos += range(cut, cut + length)
            limit += [cut] * length
    g_t, s_t, p_t, l_t = (torch.tensor(v, device=device) for v in (group, segment, pos, limit))
    prefix_seen = (s_t[None, :] == -1) & (p_t[None, :] < l_t[:, None])
    own = (s_t[:, None] == s_t[None, :]) & (s_t[:, None] >= 0) & (p_t[None, :] <= p_t[:, None])
    return p_t, (g_t[:, None] == g_t[None, :]) & (prefix_seen | own)


def causal(length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, allowed) of one plain causal sequence."""
    positions = torch.arange(length, device=device)
    return positions, positions[:, None] >= positions[None, :]


def sliding_window(model) -> tuple[list[str], int | None]:
    config = model.config.get_text_config()
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return list(layer_types), getattr(config, "sliding_window", None)


def build_masks(model, allowed: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor):
    """4D boolean masks from an (S, K) allowed matrix; a dict when some layers slide."""
    return build_batch_masks(model, allowed[None], q_pos[None], k_pos[None])


def build_batch_masks(model, allowed: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor):
    """`build_masks` for a batch of rows at once: allowed (B, S, K), positions (B, S), (B, K)."""
    layer_types, window = sliding_window(model)
    full = allowed[:, None]
    if "sliding_attention" not in layer_types or window is None:
        return full
    near = (q_pos[:, :, None] - k_pos[:, None, :]) < window
    return {"full_attention": full, "sliding_attention": (allowed & near)[:, None]}
