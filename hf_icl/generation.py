"""Greedy generation for every query after k demonstrations, starting from the cached demo prefix.

The demo prefix is encoded once per demo list (the scorer's prefix cache); for each shot count
a batch of queries gets that cache cut at demo k, its own query tokens (left-padded, masked out)
and then decodes token by token, every query at the positions it would have alone. Queries that
stop (a stop string, the model's end-of-sequence token, ``max_new_tokens``) leave the batch, so
decoding never waits for the longest answer. Only the prefill is saved compared with generating
from each full prompt; the tokens are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from transformers import DynamicCache

from hf_icl.errors import HfIclError
from hf_icl.kv_cache import cache_kwargs
from hf_icl.packing import build_masks
from hf_icl.render.generation import longest_generation
from hf_icl.scoring import _prefix_cache, context_window


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


class _Batch:
    """A batch of queries decoding after prefix[:length]: its cache, key validity and positions."""

    def __init__(self, model, prefix, length: int, queries: list[list[int]], pad: int) -> None:
        device, size = model.device, len(queries)
        width = max(len(q) for q in queries)
        self.model, self.lengths = model, torch.tensor([len(q) for q in queries], device=device)
        self.cache = (
            DynamicCache(
                ddp_cache_data=[
                    (
                        k[:, :, :length].expand(size, -1, -1, -1).contiguous(),
                        v[:, :, :length].expand(size, -1, -1, -1).contiguous(),
                    )
                    for k, v in prefix
                ]
            )
            if prefix and length
            else DynamicCache()
        )
        cols = torch.arange(width, device=device)
        offset = width - self.lengths[:, None]  # left padding per row
        valid = cols[None, :] >= offset
        q_pos = length + (cols[None, :] - offset).clamp(min=0)
        self.key_valid = torch.cat(
            [torch.ones(size, length, dtype=torch.bool, device=device), valid], 1
        )
        self.key_pos = torch.cat([torch.arange(length, device=device).expand(size, -1), q_pos], 1)
        own = (cols[:, None] >= cols[None, :])[None] & valid[:, None, :] | torch.eye(
            width, dtype=torch.bool, device=device
        )[None]  # pads see themselves only
        allowed = torch.cat(
            [torch.ones(size, width, length, dtype=torch.bool, device=device), own], 2
        )
        ids = torch.tensor([[pad] * (width - len(q)) + q for q in queries], device=device)
        self.next_pos = length + self.lengths
        self.logits = self._forward(ids, q_pos, allowed)

    def _forward(
        self, ids: torch.Tensor, q_pos: torch.Tensor, allowed: torch.Tensor
    ) -> torch.Tensor:
        masks = [
            build_masks(self.model, allowed[b], q_pos[b], self.key_pos[b]) for b in range(len(ids))
        ]
        mask = (
            {name: torch.cat([m[name] for m in masks]) for name in masks[0]}
            if isinstance(masks[0], dict)
            else torch.cat(masks)
        )
        out = self.model(
            input_ids=ids,
            position_ids=q_pos,
            attention_mask=mask,
            use_cache=True,
            **cache_kwargs(self.model, self.cache),
            logits_to_keep=1,
        )
        return out.logits[:, -1].float().log_softmax(-1)

    def step(self, tokens: torch.Tensor) -> None:
        """Append one generated token per row and compute the next distributions."""
        pos = self.next_pos[:, None]
        self.key_valid = torch.cat([self.key_valid, torch.ones_like(pos, dtype=torch.bool)], 1)
        self.key_pos = torch.cat([self.key_pos, pos], 1)
        self.next_pos = self.next_pos + 1
        self.logits = self._forward(tokens[:, None], pos, self.key_valid[:, None, :])

    def keep(self, rows: torch.Tensor) -> None:
        """Drop finished rows from the batch (cache included)."""
        self.cache.batch_select_indices(rows)
        self.key_valid, self.key_pos = self.key_valid[rows], self.key_pos[rows]
        self.next_pos, self.logits = self.next_pos[rows], self.logits[rows]


def _decode_batch(
    model,
    tokenizer,
    prefix,
    length: int,
    queries: list[list[int]],
    until: Sequence[str],
    max_new_tokens: int,
    record: bool,
) -> list[Generation]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stops, eos = [s for s in until if s], eos_ids(model, tokenizer)
    batch = _Batch(model, prefix, length, queries, pad)
    tokens: list[list[int]] = [[] for _ in queries]
    steps: list[list[np.ndarray]] = [[] for _ in queries]
    active = list(range(len(queries)))
    for step in range(max_new_tokens):
        chosen = batch.logits.argmax(-1)
        still = []
        for row, (q, token) in enumerate(zip(active, chosen.tolist())):
            tokens[q].append(token)
            if record:
                steps[q].append(batch.logits[row].cpu().numpy())
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
    batch_size: int = 32,
    record: bool = False,
    where: str = "task",
) -> dict[int, list[Generation]]:
    """Greedy generations of every query after k demos, for each k in shots."""
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
    out = {}
    for k in sorted(set(shots)):
        queries = prompts.query_ids if k > 0 else prompts.query_ids_alone
        out[k] = [
            g
            for start in range(0, len(queries), batch_size)
            for g in _decode_batch(
                model,
                tokenizer,
                prefix,
                prompts.boundaries[k],
                queries[start : start + batch_size],
                until,
                max_new_tokens,
                record,
            )
        ]
    return out
