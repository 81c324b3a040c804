"""Label-position log-probabilities with demo-prefix KV reuse.

`queries` protocol: the demo prefix (all demonstrations of one ordered list) is encoded once;
for every shot count k, queries are packed into sequences after the prefix's first k demos with
a block mask (each query sees prefix[:boundary_k] and itself), so no per-query cache copies and
no re-encoding of demonstrations. `sequential` protocol: one forward per episode gives every
label position. Sliding-window layers get their window applied here because custom masks are
used as-is by transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from hf_icl.errors import HfIclError
from hf_icl.kv_cache import cache_kwargs
from hf_icl.packing import build_masks, causal, pack_rows, packed_row
from hf_icl.render.text import RenderedEpisode, RenderedSequence


@dataclass
class Segment:
    """One packed piece: a query (plus candidate tokens for multi-token labels)."""

    ids: list[int]
    query: int
    candidate: int | None  # None: single-token candidates, all read at the last position


def context_window(model) -> int | None:
    return getattr(model.config.get_text_config(), "max_position_embeddings", None)


def _prefix_cache(model, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Encode the demo prefix once; returns per-layer (keys, values)."""
    if not ids:
        return []
    device = model.device
    pos, allowed = causal(len(ids), device)
    cache = DynamicCache()
    model(
        input_ids=torch.tensor([ids], device=device),
        position_ids=pos[None],
        attention_mask=build_masks(model, allowed, pos, pos),
        **cache_kwargs(model, cache),
        use_cache=True,
        logits_to_keep=1,
    )
    return [(layer.keys, layer.values) for layer in cache.layers]


def _segments(rendered: RenderedEpisode, shots: int, extra: list[list[int]]) -> list[Segment]:
    queries = rendered.query_ids if shots > 0 else rendered.query_ids_alone
    queries = list(queries) + extra
    if all(len(c) == 1 for c in rendered.candidates):
        return [Segment(q, i, None) for i, q in enumerate(queries)]
    return [
        Segment(q + c[:-1], i, j)
        for i, q in enumerate(queries)
        for j, c in enumerate(rendered.candidates)
    ]


def _forward_row(
    model,
    prefix: list[tuple[torch.Tensor, torch.Tensor]],
    length: int,
    row: list[Segment],
    read: list[list[int]],
) -> torch.Tensor:
    """Forward one packed row after prefix[:length]; return log-probs at the read positions."""
    device = model.device
    ids = [t for seg in row for t in seg.ids]
    q_pos, k_pos, allowed = packed_row(length, [len(seg.ids) for seg in row], device)
    cache = (
        DynamicCache(ddp_cache_data=[(k[:, :, :length], v[:, :, :length]) for k, v in prefix])
        if prefix and length
        else None
    )
    starts = np.cumsum([0] + [len(seg.ids) for seg in row])
    flat = [int(starts[i] + p) for i, positions in enumerate(read) for p in positions]
    out = model(
        input_ids=torch.tensor([ids], device=device),
        position_ids=q_pos[None],
        attention_mask=build_masks(model, allowed, q_pos, k_pos),
        **cache_kwargs(model, cache),
        use_cache=cache is not None,
        logits_to_keep=torch.tensor(flat, device=device),
    )
    return out.logits[0].float().log_softmax(-1)


def _row_reads(row: list[Segment], candidates: list[list[int]]) -> list[list[int]]:
    """Positions within each segment whose next-token distribution scores a label token."""
    reads = []
    for seg in row:
        if seg.candidate is None:
            reads.append([len(seg.ids) - 1])
        else:
            n = len(candidates[seg.candidate])
            reads.append(list(range(len(seg.ids) - n, len(seg.ids))))
    return reads


def _score_segments(
    model,
    prefix,
    length: int,
    segments: list[Segment],
    candidates: list[list[int]],
    num_queries: int,
    pack_tokens: int,
    length_normalise: bool,
) -> np.ndarray:
    scores = np.zeros((num_queries, len(candidates)), dtype=np.float64)
    for indices in pack_rows([len(seg.ids) for seg in segments], pack_tokens):
        row = [segments[i] for i in indices]
        reads = _row_reads(row, candidates)
        logp = _forward_row(model, prefix, length, row, reads)
        at = 0
        for seg, positions in zip(row, reads):
            rows = logp[at : at + len(positions)]
            at += len(positions)
            if seg.candidate is None:
                cand = torch.tensor([c[0] for c in candidates], device=rows.device)
                scores[seg.query] = rows[0, cand].double().cpu().numpy()
            else:
                tokens = torch.tensor(candidates[seg.candidate], device=rows.device)
                lp = rows.gather(1, tokens[:, None]).sum().item()
                scores[seg.query, seg.candidate] = lp / len(tokens) if length_normalise else lp
    return scores


def check_length(model, rendered: RenderedEpisode, max_shots: int, where: str) -> None:
    """Refuse a prompt longer than the context window, saying what to shorten."""
    limit = context_window(model)
    if limit is None:
        return
    tail = max(len(q) for q in rendered.query_ids) + max(len(c) for c in rendered.candidates)
    if tail > limit:
        raise HfIclError(
            f"{where}: a query alone is {tail} tokens, beyond the model's context "
            f"window of {limit} tokens; shorten the template or the inputs"
        )
    longest = rendered.boundaries[max_shots] + tail
    if longest > limit:
        fit = max(
            (k for k, end in enumerate(rendered.boundaries) if end + tail <= limit), default=0
        )
        raise HfIclError(
            f"{where}: prompt of {longest} tokens at {max_shots} shots exceeds the "
            f"model's context window of {limit} tokens; at most {fit} shots fit"
        )


@torch.inference_mode()
def score_queries(
    model,
    rendered: RenderedEpisode,
    shots: list[int],
    *,
    pack_tokens: int = 768,
    length_normalise: bool = False,
    calibrate: bool = False,
    where: str = "task",
) -> dict[int, np.ndarray]:
    """Log-scores (Q, C) of every query's label candidates after k demos, for each k in shots."""
    max_shots = max(shots)
    if max_shots >= len(rendered.boundaries):
        raise HfIclError(
            f"{where}: {max_shots} shots requested but the episode has only "
            f"{len(rendered.boundaries) - 1} demonstrations"
        )
    check_length(model, rendered, max_shots, where)
    prefix = _prefix_cache(model, rendered.prefix_ids[: rendered.boundaries[max_shots]])
    num_queries = len(rendered.query_ids)
    out = {}
    for k in sorted(set(shots)):
        extra = []
        if calibrate:
            if rendered.content_free_ids is None:
                raise HfIclError(f"{where}: calibrate needs a content-free input")
            extra = [rendered.content_free_ids[0 if k > 0 else 1]]
        segments = _segments(rendered, k, extra)
        scores = _score_segments(
            model,
            prefix,
            rendered.boundaries[k],
            segments,
            rendered.candidates,
            num_queries + len(extra),
            pack_tokens,
            length_normalise,
        )
        if calibrate:
            scores = scores[:num_queries] - _log_normalise(scores[num_queries:])
        out[k] = scores
    return out


def _log_normalise(scores: np.ndarray) -> np.ndarray:
    return scores - np.logaddexp.reduce(scores, axis=-1, keepdims=True)


@torch.inference_mode()
def score_sequences(
    model, sequences: list[RenderedSequence], batch_size: int = 8
) -> list[np.ndarray]:
    """Per sequence, log-scores (N, C) at every label position, one forward per batch."""
    for seq in sequences:
        if any(len(c) != 1 for c in seq.candidates):
            raise HfIclError(
                "the sequential protocol needs single-token label words; "
                "use protocol: queries for multi-token labels"
            )
        limit = context_window(model)
        if limit is not None and len(seq.ids) > limit:
            raise HfIclError(
                f"sequence of {len(seq.ids)} tokens exceeds the model's context "
                f"window of {limit} tokens; use fewer shots"
            )
    device = model.device
    results = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        width = max(len(s.ids) for s in batch)
        pad = 0
        ids = torch.tensor([s.ids + [pad] * (width - len(s.ids)) for s in batch], device=device)
        keep = sorted({p for s in batch for p in s.label_positions})
        column = {p: i for i, p in enumerate(keep)}
        pos, allowed = causal(width, device)  # right padding never reaches earlier positions
        logits = model(
            input_ids=ids,
            position_ids=pos[None].expand(len(batch), -1),
            attention_mask=build_masks(model, allowed, pos, pos),
            logits_to_keep=torch.tensor(keep, device=device),
        ).logits
        logp = logits.float().log_softmax(-1)
        for b, seq in enumerate(batch):
            cand = torch.tensor([c[0] for c in seq.candidates], device=device)
            cols = torch.tensor([column[p] for p in seq.label_positions], device=device)
            results.append(logp[b, cols][:, cand].double().cpu().numpy())
    return results
