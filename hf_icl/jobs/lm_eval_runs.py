"""lm-eval task entries in an evaluate run: their prompts checked against the context window
before the run, and one unit's rows (every document at every shot count).

Light on purpose: no torch until a unit is scored.
"""

from __future__ import annotations

from hf_icl.lm_eval_entries import LmEvalSource
from hf_icl.tasks import Entry


def check_lm_eval_prompts(
    tokenizer, limit: int | None, source: LmEvalSource, shots: list[int], where: Entry
) -> None:
    """Every prompt (seed 0) tokenized as lm-eval does; the longest must fit the window."""
    from hf_icl.lm_eval_tasks import LmEvalEncoder
    from hf_icl.multiple_choice import check_window, lm_eval_requests

    if source.task.output_type == "generate_until":
        from hf_icl.jobs.generation_rows import check_lm_eval_generation

        return check_lm_eval_generation(tokenizer, limit, source, shots, where)
    if limit is None:
        return
    encoder = LmEvalEncoder(tokenizer)
    for k in sorted(set(shots)):
        requests = lm_eval_requests(source.task, source.docs, k, source.selection_for(0), encoder)
        check_window(source.task, source.docs, requests, k, limit, f"{where}: ")


def lm_eval_unit_rows(
    model,
    tokenizer,
    source: LmEvalSource,
    shots: list[int],
    seed: int,
    base: dict,
    pack_tokens: int,
    scoring=None,
) -> list[dict]:
    """One unit's rows: each document at each shot count, with lm-eval's acc and acc_norm
    predictions and every choice's log-likelihood (generate_until: the filtered answer)."""
    from hf_icl.multiple_choice import predictions, score_lm_eval_task

    if source.task.output_type == "generate_until":
        from hf_icl.jobs.generation_rows import lm_eval_generation_rows

        return lm_eval_generation_rows(model, tokenizer, source, shots, seed, base, scoring)

    curve = score_lm_eval_task(
        model,
        tokenizer,
        source.task,
        source.docs,
        shots,
        source.selection_for(seed),
        pack_tokens=pack_tokens,
    )
    unconditional = None
    if "acc_mutual_info" in source.task.task._metric_fn_list:
        from hf_icl.multiple_choice import unconditional_scores

        unconditional = unconditional_scores(
            model, tokenizer, source.task, source.docs, pack_tokens=pack_tokens
        )
    rows = []
    for k in shots:
        for q, (doc, scores) in enumerate(zip(source.docs, curve[k])):
            pred, pred_norm = predictions(scores, doc.choices)
            row = {
                **base,
                "shots": k,
                "query": q,
                "query_id": doc.doc_id,
                "gold": doc.gold,
                "pred": pred,
                "pred_norm": pred_norm,
                "loglikelihoods": [round(v, 6) for v in scores.loglikelihoods],
                "greedy": scores.greedy,
            }
            if unconditional is not None:  # lm-eval's acc_mutual_info: log p(c|ctx) - log p(c)
                prior = unconditional[q].loglikelihoods
                gain = [a - b for a, b in zip(scores.loglikelihoods, prior)]
                row["pred_mutual_info"] = max(range(len(gain)), key=gain.__getitem__)
                row["loglikelihoods_unconditional"] = [round(v, 6) for v in prior]
            rows.append(row)
    return rows
