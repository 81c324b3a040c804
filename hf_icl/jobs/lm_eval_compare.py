"""`hf-icl compare` on lm-eval multiple-choice tasks: ZS, ICL and FT on the same demonstrations.

lm-eval writes every prompt; here each k-shot prompt is cut into the shared part (description
and the k demonstrations) and the document's own text, so the fine-tuning arms train on exactly
the demonstration tokens the ICL prompt holds, and the attention captures read at the last
context token (the position whose next-token distribution scores every choice). Only a demo
list shared by every document (first_n, fixed) can be fine-tuned on once per unit.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from hf_icl.analysis import capture_queries, record_kv_gradients, similarities
from hf_icl.errors import HfIclError
from hf_icl.finetune import TrainingDemo
from hf_icl.lm_eval_entries import LmEvalSource
from hf_icl.lm_eval_tasks import DemoSelection, LmEvalEncoder, fewshot_contexts
from hf_icl.multiple_choice import (
    ChoiceScores,
    lm_eval_requests,
    predictions,
    score_choice_curve,
    score_choices,
)
from hf_icl.samplers import rng_for


@dataclass
class SplitPrompts:
    """The k-shot prompts of every document: shared tokens, then each document's own."""

    prefix: list[int]
    queries: list[list[int]]
    demos: list[TrainingDemo]

    @property
    def demo_positions(self) -> list[int]:
        return [d.start + j for d in self.demos for j in range(len(d.ids) - d.skip)]


def check_compare_source(source: LmEvalSource, where: str) -> None:
    if source.task.output_type != "multiple_choice":
        raise HfIclError(
            f"{where}: compare scores multiple-choice lm-eval tasks; "
            f"{source.task.name!r} is {source.task.output_type}"
        )
    if not source.selection.shared(source.task):
        raise HfIclError(
            f"{where}: compare fine-tunes on one demo list per unit; lm-eval task "
            f"{source.task.name!r} draws each document its own demonstrations "
            "(set demos: {selection: first_n} or fixed)"
        )


def split_prompts(
    tokenizer, source: LmEvalSource, selection: DemoSelection, shots: int
) -> SplitPrompts:
    """lm-eval's k-shot prompts cut at the end of the demonstrations, in tokens."""
    task, docs = source.task, source.docs
    where = f"lm-eval task {task.name!r}"
    prompts = {
        j: fewshot_contexts(task, [d.doc for d in docs], j, selection) for j in range(shots + 1)
    }
    texts = [task.task.doc_to_text(d.doc) for d in docs]
    heads = {
        j: {p[: len(p) - len(t)] for p, t in zip(prompts[j], texts) if p.endswith(t)}
        for j in prompts
    }
    if any(len(h) != 1 for h in heads.values()):
        raise HfIclError(
            f"{where}: compare needs prompts that end with the document's text "
            "after one demo block shared by every document"
        )
    head = {j: next(iter(h)) for j, h in heads.items()}
    cuts = [len(head[j]) for j in range(shots + 1)]
    full = head[shots] + texts[0]
    encoder = LmEvalEncoder(tokenizer)
    enc = tokenizer(full.rstrip(), return_offsets_mapping=True)
    if enc.input_ids != encoder.encode([(full, "x")])[0][0]:
        raise HfIclError(f"{where}: the prompt's tokens differ from lm-eval's")
    offsets = enc.offset_mapping
    n_special = next(i for i, (start, end) in enumerate(offsets) if end > start)
    special = enc.input_ids[:n_special]  # tokens the tokenizer adds (BOS), before any text
    if any(start < c < end for start, end in offsets for c in cuts):
        raise HfIclError(f"{where}: a token straddles a demonstration boundary")
    # per text token: -1 before the demonstrations, i in demonstration i, shots in the query
    owner = [-1] * n_special + [
        sum(start >= c for c in cuts) - 1 for start, _ in offsets[n_special:]
    ]
    demos = []
    for i in range(shots):
        idx = [n for n, o in enumerate(owner) if o == i]
        demos.append(TrainingDemo(special + [enc.input_ids[n] for n in idx], len(special), idx[0]))
    prefix_len = owner.index(shots) if shots in owner else len(owner)
    prefix = enc.input_ids[:prefix_len]
    queries = []
    for ids, _ in encoder.encode([(p, "x") for p in prompts[shots]]):
        if ids[:prefix_len] != prefix or len(ids) == prefix_len:
            raise HfIclError(f"{where}: documents' prompts do not share the demo tokens")
        queries.append(ids[prefix_len:])
    return SplitPrompts(prefix, queries, demos)


def _rows(
    base: dict, arm: str, shots: int, source: LmEvalSource, scores: list[ChoiceScores]
) -> list[dict]:
    rows = []
    for q, (doc, s) in enumerate(zip(source.docs, scores)):
        pred, pred_norm = predictions(s, doc.choices)
        rows.append(
            {
                **base,
                "arm": arm,
                "shots": shots,
                "query": q,
                "query_id": doc.doc_id,
                "pred": pred,
                "pred_norm": pred_norm,
                "gold": doc.gold,
                "scores": [round(v, 6) for v in s.loglikelihoods],
            }
        )
    return rows


def lm_eval_compare_unit(run, source: LmEvalSource, unit, base: dict) -> list[dict]:
    """Every row of one unit: ZS, then per shot count ICL and each FT arm (learning rates as
    set: the sweep needs held-out episodes an lm-eval task does not have)."""
    config, model, tokenizer = run.config, run.model, run.tokenizer
    selection = source.selection_for(unit.seed)
    shots = [0, *config.shots]
    encoder = LmEvalEncoder(tokenizer)
    requests = {k: lm_eval_requests(source.task, source.docs, k, selection, encoder) for k in shots}
    scores = score_choice_curve(model, requests, pack_tokens=config.pack_tokens)
    seed = int(
        rng_for(config.seed, "baselines", source.task.name, unit.seed, unit.order).integers(2**31)
    )
    zs_split = split_prompts(tokenizer, source, selection, 0)
    zs = capture_queries(model, zs_split.prefix, zs_split.queries, pack_tokens=config.pack_tokens)
    rows = _rows(base, "zs", 0, source, scores[0])
    for k in config.shots:
        split = split_prompts(tokenizer, source, selection, k)
        icl = capture_queries(
            model,
            split.prefix,
            split.queries,
            demo_positions=split.demo_positions,
            pack_tokens=config.pack_tokens,
        )
        rows += _rows(base, "icl", k, source, scores[k])
        for arm in run.arms:
            lr = arm.settings.lr
            with (
                record_kv_gradients(model) if arm.dual_form else nullcontext() as tokens,
                arm.fine_tuned(split.demos, lr, seed=unit.seed),
            ):
                ft_scores = score_choices(model, requests[0], pack_tokens=config.pack_tokens)
                ft = capture_queries(
                    model, zs_split.prefix, zs_split.queries, pack_tokens=config.pack_tokens
                )
            importance = tokens.importance(ft.inputs, split.demos) if tokens is not None else None
            sims = similarities(zs, icl, ft, importance, seed)
            rows += [
                {**row, "lr": lr, **sim}
                for row, sim in zip(_rows(base, arm.settings.name, k, source, ft_scores), sims)
            ]
    return rows
