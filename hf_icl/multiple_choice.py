"""Multiple-choice scoring: per-document choices of any length after a cached demo prefix.

Each document's context is encoded once; its choices fork from the context's last token and
each sees the prefix, the context and itself only (`packing.packed_tree_row`), so a document
with C choices costs its query plus its choices' tokens, not C full prompts. The demo prefix is
encoded once for every shot count: each prompt reuses the cache up to the longest token prefix
it shares with the longest prompt, so whatever the tokenizer does at a boundary, the tokens
scored are exactly the prompt's own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from hf_icl.errors import HfIclError
from hf_icl.kv_cache import cache_kwargs
from hf_icl.lm_eval_tasks import (
    DemoSelection,
    LmEvalEncoder,
    LmEvalTask,
    McDocument,
    fewshot_contexts,
    mc_continuations,
)
from hf_icl.packing import build_batch_masks, pack_rows, packed_tree_row
from hf_icl.scoring import _prefix_cache, context_window


@dataclass
class ChoiceRequest:
    """One prompt: its context tokens and each choice's continuation tokens."""

    context: list[int]
    continuations: list[list[int]]


@dataclass
class ChoiceScores:
    """Per choice: summed log-likelihood and whether every token was the greedy one."""

    loglikelihoods: list[float]
    greedy: list[bool]


@dataclass
class _Segment:
    request: int
    cached: int  # prompt tokens read from the prefix cache
    trunk: list[int]  # the rest of the context
    branches: list[list[int]]  # each continuation without its last token

    @property
    def length(self) -> int:
        return len(self.trunk) + sum(len(b) for b in self.branches)


def _shared(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    mismatch = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(mismatch[0]) if len(mismatch) else n


def _segment(i: int, req: ChoiceRequest, prefix: list[int]) -> _Segment:
    """The prompt minus what the prefix cache holds (at least its last context token)."""
    if not req.context or any(not c for c in req.continuations):
        raise HfIclError(f"prompt {i}: empty context or continuation")
    cached = min(_shared(req.context, prefix), len(req.context) - 1)
    return _Segment(i, cached, req.context[cached:], [c[:-1] for c in req.continuations])


def _curve_prefix(requests: dict[int, list[ChoiceRequest]]) -> list[int]:
    """The first prompt at the most shots: the others share as much of it as they can."""
    top = requests[max(requests)]
    return top[0].context[:-1] if top else []


def check_window(
    task: LmEvalTask,
    docs: list[McDocument],
    requests: list[ChoiceRequest],
    shots: int,
    limit: int | None,
    where: str = "",
) -> None:
    """A prompt the model cannot read whole is refused, where lm-eval would cut its left end:
    one line naming the task, the document, the shot count and the window."""
    if limit is None:
        return
    for doc, req in zip(docs, requests):
        length = len(req.context) + max(len(c) for c in req.continuations) - 1  # tokens read
        if length > limit:
            raise HfIclError(
                f"{where}lm-eval task {task.name!r}: document {doc.doc_id} at {shots} shots "
                f"is {length} tokens (context and longest choice), over the model's context "
                f"window of {limit}; lower shots"
            )


LOGITS_BYTES = 256 * 2**20  # kept logits per forward: packed rows are batched up to this


@dataclass
class _Layout:
    """A packed row with every token that predicts a continuation token moved to its end, in
    read order: positions and the mask carry the structure, so the order in the row is free,
    and a batch of left-padded rows then reads the same last positions."""

    ids: list[int]
    positions: torch.Tensor
    allowed: torch.Tensor  # tokens × (cached + tokens)
    cached: int
    reads: int


def _reads(row: list[_Segment]) -> int:
    return sum(1 + sum(len(b) for b in s.branches) for s in row)


def _layout(row: list[_Segment], device: torch.device) -> _Layout:
    q_pos, _, allowed = packed_tree_row(
        [s.cached for s in row],
        [len(s.trunk) for s in row],
        [[len(b) for b in s.branches] for s in row],
        device,
    )
    cached = max(s.cached for s in row)
    ids, reads = [], []
    for seg in row:  # per segment: its trunk's last token, then each branch's tokens
        reads.append(len(ids) + len(seg.trunk) - 1)
        ids += seg.trunk
        for branch in seg.branches:
            reads += range(len(ids), len(ids) + len(branch))
            ids += branch
    read = set(reads)
    order = torch.tensor([i for i in range(len(ids)) if i not in read] + reads, device=device)
    columns = torch.cat([torch.arange(cached, device=device), cached + order])
    return _Layout(
        [ids[i] for i in order.tolist()],
        q_pos[order],
        allowed[order][:, columns],
        cached,
        len(reads),
    )


def _batches(rows: list[list[_Segment]], vocab: int) -> list[list[list[_Segment]]]:
    """Consecutive packed rows, as many per forward as `LOGITS_BYTES` allows."""
    batches: list[list[list[_Segment]]] = []
    most = 0
    for row in rows:
        most = max(most, _reads(row))
        if batches and (len(batches[-1]) + 1) * most * vocab * 4 <= LOGITS_BYTES:
            batches[-1].append(row)
        else:
            batches.append([row])
            most = _reads(row)
    return batches


def _forward(model, cache: list[tuple[torch.Tensor, torch.Tensor]], rows: list[list[_Segment]]):
    """Per row, the log-probs at its read positions (`_layout`), the rows left-padded into one
    batch over the prefix cache; a padding token sees only itself."""
    device = model.device
    laid = [_layout(row, device) for row in rows]
    width, cached = max(len(r.ids) for r in laid), max(r.cached for r in laid)
    keep = max(r.reads for r in laid)
    ids = torch.zeros(len(laid), width, dtype=torch.long, device=device)
    pos = torch.zeros_like(ids)
    allowed = torch.zeros(len(laid), width, cached + width, dtype=torch.bool, device=device)
    for b, row in enumerate(laid):
        pad = width - len(row.ids)
        ids[b, pad:] = torch.tensor(row.ids, device=device)
        pos[b, pad:] = row.positions
        allowed[b, pad:, : row.cached] = row.allowed[:, : row.cached]
        allowed[b, pad:, cached + pad :] = row.allowed[:, row.cached :]
        allowed[b, range(pad), range(cached, cached + pad)] = True
    prefix = torch.arange(cached, device=device).expand(len(laid), -1)
    past = (
        DynamicCache(
            ddp_cache_data=[
                (
                    k[:, :, :cached].expand(len(laid), -1, -1, -1),
                    v[:, :, :cached].expand(len(laid), -1, -1, -1),
                )
                for k, v in cache
            ]
        )
        if cache and cached
        else None
    )
    logits = model(
        input_ids=ids,
        position_ids=pos,
        attention_mask=build_batch_masks(model, allowed, pos, torch.cat([prefix, pos], 1)),
        **cache_kwargs(model, past),
        use_cache=past is not None,
        logits_to_keep=keep,
    ).logits
    return [logits[b, keep - r.reads :].float().log_softmax(-1) for b, r in enumerate(laid)]


def _row_scores(
    logp: torch.Tensor, row: list[_Segment], requests: list[ChoiceRequest]
) -> list[ChoiceScores]:
    """Every continuation token of a row read with one gather and one argmax: a choice's first
    token is predicted at its segment's trunk row, the rest along its own branch."""
    rows, tokens, at = [], [], 0
    for seg in row:
        trunk, at = at, at + 1
        for cont, branch in zip(requests[seg.request].continuations, seg.branches):
            rows += [trunk, *range(at, at + len(branch))]
            at += len(branch)
            tokens += cont
    index = torch.tensor(rows, device=logp.device)
    target = torch.tensor(tokens, device=logp.device)
    values = logp[index, target].tolist()
    hits = (logp.argmax(-1)[index] == target).tolist()
    scores, start = [], 0
    for seg in row:
        lls, greedy = [], []
        for cont in requests[seg.request].continuations:
            lls.append(sum(values[start : start + len(cont)]))
            greedy.append(all(hits[start : start + len(cont)]))
            start += len(cont)
        scores.append(ChoiceScores(lls, greedy))
    return scores


@torch.inference_mode()
def score_choices(
    model,
    requests: list[ChoiceRequest],
    *,
    prefix: list[int] | None = None,
    cache=None,
    pack_tokens: int = 768,
) -> list[ChoiceScores]:
    """Log-likelihood of every continuation after its context, reusing ``prefix``'s KV cache
    (or a ``cache`` already computed for it) wherever a context starts with it."""
    prefix = prefix or []
    if cache is None:
        cache = _prefix_cache(model, prefix) if prefix else []
    segments = [_segment(i, req, prefix) for i, req in enumerate(requests)]
    results: list[ChoiceScores | None] = [None] * len(requests)
    rows = [
        [segments[i] for i in idx] for idx in pack_rows([s.length for s in segments], pack_tokens)
    ]
    for batch in _batches(rows, model.config.get_text_config().vocab_size):
        for row, logp in zip(batch, _forward(model, cache, batch)):
            for seg, scores in zip(row, _row_scores(logp, row, requests)):
                results[seg.request] = scores
    return results  # type: ignore[return-value]


def score_choice_curve(
    model, requests: dict[int, list[ChoiceRequest]], *, pack_tokens: int = 768
) -> dict[int, list[ChoiceScores]]:
    """Every shot count's prompts with one prefix encoding (`_curve_prefix`), packed together so
    that no shot count leaves a row half empty."""
    counts = sorted(requests)
    flat = [req for k in counts for req in requests[k]]
    scores = score_choices(model, flat, prefix=_curve_prefix(requests), pack_tokens=pack_tokens)
    out, start = {}, 0
    for k in counts:
        out[k] = scores[start : start + len(requests[k])]
        start += len(requests[k])
    return out


def unconditional_scores(
    model, tokenizer, task: LmEvalTask, docs: list[McDocument], *, pack_tokens: int = 768
) -> list[ChoiceScores]:
    """Each choice's log-likelihood after an empty context (lm-eval's prefix token alone), for
    lm-eval's acc_mutual_info; it does not depend on the shot count."""
    encoder = LmEvalEncoder(tokenizer)
    requests = []
    for doc in docs:
        pairs = encoder.encode([("", cont) for cont in mc_continuations(task, doc)])
        if len({tuple(c) for c, _ in pairs}) != 1:  # a continuation's first token became context
            raise HfIclError(
                f"lm-eval task {task.name!r}: document {doc.doc_id}: a choice starts "
                "with the prefix token; acc_mutual_info cannot share one context"
            )
        requests.append(ChoiceRequest(pairs[0][0], [p[1] for p in pairs]))
    return score_choices(model, requests, pack_tokens=pack_tokens)


def predictions(scores: ChoiceScores, choices: list[str]) -> tuple[int, int]:
    """lm-eval's acc and acc_norm predictions: argmax of the summed log-likelihood, and of it
    divided by the choice's length in characters."""
    lls = np.asarray(scores.loglikelihoods, dtype=np.float64)
    lengths = np.array([float(len(c)) for c in choices])
    return int(np.argmax(lls)), int(np.argmax(lls / lengths))


def lm_eval_requests(
    task: LmEvalTask,
    docs: list[McDocument],
    shots: int,
    selection: DemoSelection,
    encoder: LmEvalEncoder,
) -> list[ChoiceRequest]:
    """Each document's prompt after ``shots`` demonstrations, as lm-eval tokenizes it."""
    contexts = fewshot_contexts(task, [d.doc for d in docs], shots, selection)
    requests = []
    for context, doc in zip(contexts, docs):
        pairs = encoder.encode([(context, cont) for cont in mc_continuations(task, doc)])
        requests.append(ChoiceRequest(pairs[0][0], [p[1] for p in pairs]))
    return requests


def score_lm_eval_task(
    model,
    tokenizer,
    task: LmEvalTask,
    docs: list[McDocument],
    shots: list[int],
    selection: DemoSelection,
    *,
    pack_tokens: int = 768,
) -> dict[int, list[ChoiceScores]]:
    """The whole k-shot curve of a multiple-choice lm-eval task, log-likelihoods as lm-eval's."""
    encoder = LmEvalEncoder(tokenizer)
    requests = {k: lm_eval_requests(task, docs, k, selection, encoder) for k in shots}
    for k in shots:
        check_window(task, docs, requests[k], k, context_window(model))
    return score_choice_curve(model, requests, pack_tokens=pack_tokens)


def scored_tokens(requests: dict[int, list[ChoiceRequest]]) -> int:
    """Tokens `score_choice_curve` runs through the model: the shared prefix once, then each
    prompt's unshared context and its choices (all but their last token)."""
    prefix = _curve_prefix(requests)
    return len(prefix) + sum(
        _segment(i, req, prefix).length for reqs in requests.values() for i, req in enumerate(reqs)
    )
