"""Scoring a demo plan: every query after its own k-shot demonstrations, for every k.

Shot counts whose prompts extend one another form a chain: the longest prompt's demonstrations
are encoded once and each shorter prompt reads a cut of them. A plan shared by all queries
goes through `score_queries` per chain (one KV-cached prefix, queries packed after it). A
per-query plan (retrieval, per_query_random) puts each query's chain in a row — its
demonstrations, then the query once per shot count, each copy seeing only its first k demos —
and packs several queries' groups into one forward with a block mask; prompts that are not
prefixes of one another (``nearest_last``, random orders) become further chains. Every score
equals scoring that prompt alone from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hf_icl.demos import DemoPlan
from hf_icl.errors import HfIclError
from hf_icl.packing import build_masks, grouped_row, pack_rows
from hf_icl.render.text import RenderedEpisode, TextRenderer
from hf_icl.scoring import Segment, _row_reads, check_length, score_queries


def chains(prompts: dict[int, list[int]]) -> list[tuple[list[int], list[int]]]:
    """(demo rows, shot counts) per chain: each shot count's prompt is a prefix of its chain."""
    out: list[tuple[list[int], list[int]]] = []
    for k in sorted(prompts, reverse=True):
        rows = prompts[k]
        chain = next((c for c in out if c[0][:k] == rows), None)
        if chain is None:
            out.append((list(rows), [k]))
        else:
            chain[1].insert(0, k)
    return out


@dataclass
class Group:
    """One query's chain in a packed row: its demo tokens, then one segment per piece."""

    prefix: list[int]
    pieces: list[tuple[Segment, int, int]]  # (segment, cut, shot count); query -1: content-free

    @property
    def length(self) -> int:
        return len(self.prefix) + sum(len(seg.ids) for seg, _, _ in self.pieces)


def _group(rendered: RenderedEpisode, shots: list[int], query: int, calibrate: bool) -> Group:
    pieces = []
    for k in shots:
        texts = [(rendered.query_ids if k else rendered.query_ids_alone)[0]]
        if calibrate:
            texts.append(rendered.content_free_ids[0 if k else 1])
        for i, ids in enumerate(texts):
            slot = query if i == 0 else -1
            if all(len(c) == 1 for c in rendered.candidates):
                pieces.append((Segment(ids, slot, None), rendered.boundaries[k], k))
            else:
                pieces += [
                    (Segment(ids + c[:-1], slot, j), rendered.boundaries[k], k)
                    for j, c in enumerate(rendered.candidates)
                ]
    return Group(rendered.prefix_ids[: rendered.boundaries[max(shots)]], pieces)


BATCH_ROWS = 8  # packed rows per forward: larger matmuls without a quadratic block-mask waste


def _row_inputs(model, row: list[Group], cands: list[list[list[int]]]):
    """Token ids, positions, 4D masks and per-segment read positions of one packed row."""
    ids, reads, starts = [], [], []
    for g, c in zip(row, cands):
        ids += g.prefix
        for seg, _, _ in g.pieces:
            starts.append(len(ids))
            ids += seg.ids
        reads += _row_reads([seg for seg, _, _ in g.pieces], c)
    pos, allowed = grouped_row(
        [(len(g.prefix), [(cut, len(seg.ids)) for seg, cut, _ in g.pieces]) for g in row],
        model.device,
    )
    return ids, pos, allowed, [[s + p for p in r] for s, r in zip(starts, reads)]


def _padded(model, rows: list[tuple]):
    """Rows stacked into one batch, right-padded; a padding token sees only itself."""
    width = max(len(ids) for ids, _, _, _ in rows)
    device = model.device
    ids = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    pos = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    masks = []
    for b, (row_ids, row_pos, allowed, _) in enumerate(rows):
        n = len(row_ids)
        ids[b, :n] = torch.tensor(row_ids, device=device)
        pos[b, :n] = row_pos
        full = torch.eye(width, dtype=torch.bool, device=device)
        full[:n, :n] = allowed
        masks.append(build_masks(model, full, pos[b], pos[b]))
    if isinstance(masks[0], dict):
        return ids, pos, {key: torch.cat([m[key] for m in masks]) for key in masks[0]}
    return ids, pos, torch.cat(masks)


PLAIN_ROWS = 16  # lone prompts per forward (length-sorted, so padding stays small)


def _plain(group: Group) -> bool:
    """A lone prompt read at its last token: nothing to share, so no block mask is needed."""
    return len(group.pieces) == 1 and group.pieces[0][0].candidate is None


def _score_plain(
    model,
    groups: list[Group],
    candidates: list[list[list[int]]],
    indices: list[int],
    out: dict[int, np.ndarray],
) -> None:
    """Lone prompts in length-sorted, right-padded batches under the model's own causal mask,
    logits only at each prompt's last token: what the best from-scratch scorer does."""
    device = model.device
    order = sorted(indices, key=lambda i: groups[i].length)
    for first in range(0, len(order), PLAIN_ROWS):
        batch = order[first : first + PLAIN_ROWS]
        seqs = [groups[i].prefix + groups[i].pieces[0][0].ids for i in batch]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
        last = sorted({len(s) - 1 for s in seqs})
        column = {p: j for j, p in enumerate(last)}
        logits = model(
            input_ids=ids, attention_mask=mask, logits_to_keep=torch.tensor(last, device=device)
        ).logits
        logp = logits.float().log_softmax(-1)
        for b, i in enumerate(batch):
            seg, _, k = groups[i].pieces[0]
            cand = torch.tensor([c[0] for c in candidates[i]], device=device)
            out[k][seg.query][:] = logp[b, column[len(seqs[b]) - 1], cand].double().cpu().numpy()


def _score_groups(
    model,
    groups: list[Group],
    candidates: list[list[list[int]]],
    out: dict[int, np.ndarray],
    free: dict[tuple[int, int], np.ndarray],
    pack_tokens: int,
    length_normalise: bool,
) -> None:
    """Forward packed rows of groups, a batch of rows at a time; fill out[k][query] and
    free[(group, k)] (content-free)."""
    device = model.device
    plain = [i for i, g in enumerate(groups) if _plain(g)]
    _score_plain(model, groups, candidates, plain, out)
    alone = set(plain)
    rest = sorted(
        (i for i in range(len(groups)) if i not in alone), key=lambda i: -groups[i].length
    )
    packed = [
        [rest[j] for j in row] for row in pack_rows([groups[i].length for i in rest], pack_tokens)
    ]
    for first in range(0, len(packed), BATCH_ROWS):
        batch = packed[first : first + BATCH_ROWS]
        rows = [
            _row_inputs(model, [groups[i] for i in idx], [candidates[i] for i in idx])
            for idx in batch
        ]
        keep = sorted({p for *_, reads in rows for r in reads for p in r})
        column = {p: j for j, p in enumerate(keep)}
        ids, pos, masks = _padded(model, rows)
        logits = model(
            input_ids=ids,
            position_ids=pos,
            attention_mask=masks,
            logits_to_keep=torch.tensor(keep, device=device),
        ).logits
        logp = logits.float().log_softmax(-1)
        for b, idx in enumerate(batch):
            reads = iter(rows[b][3])
            for i in idx:
                cands = candidates[i]
                for seg, _, k in groups[i].pieces:
                    at = torch.tensor([column[p] for p in next(reads)], device=device)
                    picked = logp[b, at]
                    target = (
                        out[k][seg.query]
                        if seg.query >= 0
                        else free.setdefault((i, k), np.zeros(len(cands)))
                    )
                    if seg.candidate is None:
                        cand = torch.tensor([c[0] for c in cands], device=device)
                        target[:] = picked[0, cand].double().cpu().numpy()
                    else:
                        tokens = torch.tensor(cands[seg.candidate], device=device)
                        lp = picked.gather(1, tokens[:, None]).sum().item()
                        target[seg.candidate] = lp / len(tokens) if length_normalise else lp


def _log_normalise(scores: np.ndarray) -> np.ndarray:
    return scores - np.logaddexp.reduce(scores, axis=-1, keepdims=True)


def query_groups(
    model,
    renderer: TextRenderer,
    plan: DemoPlan,
    shots: list[int],
    calibrate: bool = False,
    where: str = "task",
) -> tuple[list[Group], list[list[list[int]]]]:
    """Each query's chains as row groups, with their label candidates (per-query plans)."""
    groups, candidates = [], []
    for q in range(plan.episode.num_queries):
        for rows, ks in chains({k: plan.rows(q, k) for k in shots}):
            rendered = renderer.render_episode(plan.episode_for(rows, [q]))
            if calibrate and rendered.content_free_ids is None:
                raise HfIclError(f"{where}: calibrate needs a content-free input")
            if model is not None:
                check_length(model, rendered, max(ks), where)
            groups.append(_group(rendered, ks, q, calibrate))
            candidates.append(rendered.candidates)
    return groups, candidates


@torch.inference_mode()
def score_plan(
    model,
    renderer: TextRenderer,
    plan: DemoPlan,
    shots: list[int],
    *,
    pack_tokens: int = 768,
    length_normalise: bool = False,
    calibrate: bool = False,
    where: str = "task",
) -> dict[int, np.ndarray]:
    """Log-scores (Q, C) of every query's label candidates after its own k demos, per k."""
    num_queries = plan.episode.num_queries
    shots = sorted(set(shots))
    if plan.shared:
        out: dict[int, np.ndarray] = {}
        for rows, ks in chains({k: plan.rows(0, k) for k in shots}):
            rendered = renderer.render_episode(plan.episode_for(rows, list(range(num_queries))))
            out.update(
                score_queries(
                    model,
                    rendered,
                    ks,
                    pack_tokens=pack_tokens,
                    length_normalise=length_normalise,
                    calibrate=calibrate,
                    where=where,
                )
            )
        return out
    groups, candidates = query_groups(model, renderer, plan, shots, calibrate, where)
    width = max(len(c) for c in candidates)
    out = {k: np.zeros((num_queries, width)) for k in shots}
    free: dict[tuple[int, int], np.ndarray] = {}
    _score_groups(model, groups, candidates, out, free, pack_tokens, length_normalise)
    if calibrate:
        for (i, k), scores in free.items():
            q = groups[i].pieces[0][0].query
            out[k][q] -= _log_normalise(scores)
    return out
