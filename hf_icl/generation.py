"""Greedy generation for every query after k demonstrations, starting from the cached demo prefix.

The demo prefix is encoded once per demo list (the scorer's prefix cache) and stays one tensor
per layer: the rows of a batch attend to it through `shared_prefix_attention`, each to its own
cut (demo k), so a row's cache holds only its query and what it generated, and prompts of all
shot counts decode in one batch. A batch's queries are encoded in chunks of similar length (little
padding, masked out), then decode token by token, every query at the positions it would have
alone. Queries that stop (a stop string, the model's end-of-sequence token, ``max_new_tokens``)
leave the batch, so decoding never waits for the longest answer. Only the prefill is saved
compared with generating from each full prompt; the tokens are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from hf_icl.attention.shared_prefix import attending_to_shared_prefix
from hf_icl.errors import HfIclError
from hf_icl.kv_cache import cache_kwargs
from hf_icl.packing import build_batch_masks
from hf_icl.render.generation import longest_generation
from hf_icl.scoring import _prefix_cache, context_window

PREFILL_TOKENS = 8192  # query tokens (padding included) encoded per forward


class Prompts(Protocol):
    prefix_ids: list[int]
    boundaries: list[int]
    query_ids: list[list[int]]
    query_ids_alone: list[list[int]]


@dataclass
class Generation:
    tokens: list[int]
    text: str  # decoded without special tokens, cut at the first stop string
    logprobs: np.ndarray | None = None  # (steps, vocab) log-probabilities, when recorded


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """lm-eval's post-processing: the text before the first occurrence of any stop string."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def eos_ids(model, tokenizer) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    return set(ids) or ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def check_generation_length(
    model, prompts: Prompts, max_shots: int, max_new_tokens: int, where: str
) -> None:
    """A prompt plus its longest generation must fit the context window."""
    limit = context_window(model)
    if limit is None:
        return
    longest = longest_generation(prompts, max_shots, max_new_tokens)
    if longest > limit:
        raise HfIclError(
            f"{where}: a prompt with {max_shots} demonstrations plus max_new_tokens "
            f"{max_new_tokens} is {longest} tokens, over the model's context window "
            f"of {limit}; lower shots or scoring.max_new_tokens"
        )


def _query(prompts: Prompts, shots: int, query: int) -> list[int]:
    return prompts.query_ids[query] if shots > 0 else prompts.query_ids_alone[query]


def plan_batches(
    prompts: Prompts, shots: Sequence[int], batch_size: int
) -> list[list[tuple[int, int]]]:
    """(shots, query) pairs in decoding batches: by shot count, so that a batch mostly shares
    one prefix cut and the last queries of one shot count join the first of the next instead of
    decoding as a small batch of their own; within a batch by query length, so that the prefill
    chunks (`prefill_chunks`) need little padding."""
    pairs = sorted(
        ((k, q) for k in set(shots) for q in range(len(prompts.query_ids))),
        key=lambda pair: (pair[0], len(_query(prompts, *pair)), pair[1]),
    )
    batches = [pairs[start : start + batch_size] for start in range(0, len(pairs), batch_size)]
    return [sorted(batch, key=lambda pair: len(_query(prompts, *pair))) for batch in batches]


def prefill_chunks(lengths: Sequence[int], tokens: int) -> list[list[int]]:
    """Consecutive rows per prefill forward: rows × the longest at most `tokens` (≥ 1 row)."""
    chunks: list[list[int]] = [[]]
    longest = 0
    for row, length in enumerate(lengths):
        longest = max(longest, length)
        if chunks[-1] and (len(chunks[-1]) + 1) * longest > tokens:
            chunks.append([])
            longest = length
        chunks[-1].append(row)
    return chunks


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    return F.pad(t, [0, 0] * (t.dim() - 1 - dim) + [width - t.shape[dim], 0])


@dataclass
class _Prefilled:
    """A prefill chunk's rows: their own keys and values per layer, validity and positions."""

    cache: DynamicCache
    valid: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor


class _Batch:
    """Queries decoding after their own cut of the demo prefix: each row's cache (its query and
    generated tokens, left-padded), key validity and positions. The prefix up to the batch's
    longest cut is shared by all rows (`shared_prefix_attention`); a row sees its own cut only.
    Queries are encoded in chunks of similar length, then decode as one batch."""

    def __init__(
        self, model, prefix, cuts: list[int], queries: list[list[int]], pad: int, chunk: int
    ) -> None:
        device, span = model.device, max(cuts)
        self.model = model
        self.prefix = [(k[:, :, :span], v[:, :, :span]) for k, v in prefix] if span else None
        cut = torch.tensor(cuts, device=device)[:, None]
        prefix_pos = torch.arange(span, device=device).expand(len(queries), -1)
        seen = prefix_pos < cut
        chunks = [
            self._prefill(seen[rows], prefix_pos[rows], cut[rows], [queries[r] for r in rows], pad)
            for rows in prefill_chunks([len(q) for q in queries], chunk)
        ]
        width = max(c.valid.shape[1] for c in chunks)
        self.cache = DynamicCache(
            ddp_cache_data=[
                (
                    torch.cat([_left_pad(part.keys, width, 2) for part in parts]),
                    torch.cat([_left_pad(part.values, width, 2) for part in parts]),
                )
                for parts in zip(*(c.cache.layers for c in chunks))  # one model layer's parts
            ]
        )
        own_valid = torch.cat([_left_pad(c.valid, width, 1) for c in chunks])
        self.key_valid = torch.cat([seen, own_valid], 1)
        own_pos = torch.cat([_left_pad(c.positions, width, 1) for c in chunks])
        self.key_pos = torch.cat([prefix_pos, own_pos], 1)
        self.next_pos = own_pos[:, -1] + 1
        self.logits = torch.cat([c.logits for c in chunks])

    def _prefill(self, seen, prefix_pos, cut, queries: list[list[int]], pad: int) -> _Prefilled:
        device, width = self.model.device, max(len(q) for q in queries)
        lengths = torch.tensor([len(q) for q in queries], device=device)[:, None]
        cols = torch.arange(width, device=device)
        offset = width - lengths  # left padding per row
        valid = cols[None, :] >= offset
        q_pos = cut + (cols[None, :] - offset).clamp(min=0)
        own = (cols[:, None] >= cols[None, :])[None] & valid[:, None, :] | torch.eye(
            width, dtype=torch.bool, device=device
        )[None]  # pads see themselves only
        allowed = torch.cat([seen[:, None, :].expand(-1, width, -1), own], 2)
        ids = torch.tensor([[pad] * (width - len(q)) + q for q in queries], device=device)
        cache = DynamicCache()
        k_pos = torch.cat([prefix_pos, q_pos], 1)
        logits = self._forward(ids, q_pos, allowed, k_pos, cache)
        return _Prefilled(cache, valid, q_pos, logits)

    def _forward(self, ids, q_pos, allowed, k_pos, cache: DynamicCache) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            position_ids=q_pos,
            attention_mask=build_batch_masks(self.model, allowed, q_pos, k_pos),
            use_cache=True,
            **cache_kwargs(self.model, cache),
            shared_prefix=self.prefix,
            logits_to_keep=1,
        )
        return out.logits[:, -1]

    def step(self, tokens: torch.Tensor) -> None:
        """Append one generated token per row and compute the next logits."""
        pos = self.next_pos[:, None]
        self.key_valid = torch.cat([self.key_valid, torch.ones_like(pos, dtype=torch.bool)], 1)
        self.key_pos = torch.cat([self.key_pos, pos], 1)
        self.next_pos = self.next_pos + 1
        allowed = self.key_valid[:, None, :]
        self.logits = self._forward(tokens[:, None], pos, allowed, self.key_pos, self.cache)

    def keep(self, rows: torch.Tensor) -> None:
        """Drop finished rows from the batch (cache included)."""
        self.cache.batch_select_indices(rows)
        self.key_valid, self.key_pos = self.key_valid[rows], self.key_pos[rows]
        self.next_pos, self.logits = self.next_pos[rows], self.logits[rows]


def _decode_batch(
    model,
    tokenizer,
    prefix,
    cuts: list[int],
    queries: list[list[int]],
    until: Sequence[str],
    max_new_tokens: int,
    record: bool,
    prefill_tokens: int,
) -> list[Generation]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stops, eos = [s for s in until if s], eos_ids(model, tokenizer)
    batch = _Batch(model, prefix, cuts, queries, pad, prefill_tokens)
    tokens: list[list[int]] = [[] for _ in queries]
    steps: list[list[np.ndarray]] = [[] for _ in queries]
    active = list(range(len(queries)))
    for step in range(max_new_tokens):
        chosen = batch.logits.argmax(-1)  # greedy on the logits, as transformers' generate
        if record:
            logprobs = batch.logits.float().log_softmax(-1).cpu().numpy()
        still = []
        for row, (q, token) in enumerate(zip(active, chosen.tolist())):
            tokens[q].append(token)
            if record:
                steps[q].append(logprobs[row])
            text = tokenizer.decode(tokens[q], skip_special_tokens=False)
            if token not in eos and not any(s in text for s in stops):
                still.append(row)
        if not still or step == max_new_tokens - 1:
            break
        if len(still) < len(active):
            rows = torch.tensor(still, device=model.device)
            batch.keep(rows)
            chosen = chosen[rows]
            active = [active[r] for r in still]
        batch.step(chosen)
    return [
        Generation(
            t,
            cut_at_stop(tokenizer.decode(t, skip_special_tokens=True), until),
            np.stack(s) if record else None,
        )
        for t, s in zip(tokens, steps)
    ]


@torch.inference_mode()
def generate_queries(
    model,
    tokenizer,
    prompts: Prompts,
    shots: Sequence[int],
    *,
    until: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 128,
    record: bool = False,
    where: str = "task",
    prefill_tokens: int = PREFILL_TOKENS,
) -> dict[int, list[Generation]]:
    """Greedy generations of every query after k demos, for each k in shots: `batch_size`
    queries decode together, their prompts encoded `prefill_tokens` tokens at a time."""
    if max_new_tokens <= 0:
        raise HfIclError(f"{where}: scoring.max_new_tokens must be ≥ 1, got {max_new_tokens}")
    max_shots = max(shots)
    if max_shots >= len(prompts.boundaries):
        raise HfIclError(
            f"{where}: {max_shots} shots requested but the episode has only "
            f"{len(prompts.boundaries) - 1} demonstrations"
        )
    check_generation_length(model, prompts, max_shots, max_new_tokens, where)
    prefix = _prefix_cache(model, prompts.prefix_ids[: prompts.boundaries[max_shots]])
    found: dict[tuple[int, int], Generation] = {}
    with attending_to_shared_prefix(model):
        for pairs in plan_batches(prompts, shots, batch_size):
            generations = _decode_batch(
                model,
                tokenizer,
                prefix,
                [prompts.boundaries[k] for k, _ in pairs],
                [_query(prompts, k, q) for k, q in pairs],
                until,
                max_new_tokens,
                record,
                prefill_tokens,
            )
            found.update(zip(pairs, generations))
    queries = range(len(prompts.query_ids))
    return {k: [found[k, q] for q in queries] for k in sorted(set(shots))}
