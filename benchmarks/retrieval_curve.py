"""Retrieved demonstrations per query: hf-icl's whole curve vs a strong from-scratch scorer.

SmolLM2-135M float32, the offline sentiment task, `topk` selection (all-MiniLM-L6-v2),
k ∈ {0, 1, 2, 4, 8, 16}, 100 queries. Each query has its own demonstrations, so only the
cross-k prefix can be reused: hf-icl encodes a query's 16 demonstrations once and reads every
shot count from them (`nearest_first`); with `nearest_last` the prompts share no prefix.
The baseline encodes each k-shot prompt once, computes logits only at the label position
(single-token labels share one distribution) and runs length-sorted batches at the best size
from {1, 4, 8, 16} (chosen by timing each on a 32-prompt sample, then timed on all prompts).
Selection cost (encoding + search) is timed separately. Both sides score identical token ids.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import peak_rss_gb, report

SHOTS = [0, 1, 2, 4, 8, 16]
BATCH_SIZES = [1, 4, 8, 16]


def plan_for(order: str, queries: int):
    from hf_icl.demos import DemoOptions, SelectionContext, demo_pool, plan_demos
    from hf_icl.tasks import load_task

    _, sampler = load_task("sentiment")
    episode = sampler.episode(0, max(SHOTS), queries)
    ctx = SelectionContext(
        "sentiment",
        demo_pool(sampler, episode),
        episode,
        max(SHOTS),
        0,
        DemoOptions(selection="topk", order=order),
    )
    return plan_demos(ctx, SHOTS)


def prompts(renderer, plan) -> list[tuple[int, int, list[int], list[int]]]:
    """(query, k, prompt ids, candidate ids) of every k-shot prompt, tokenized as hf-icl does."""
    out = []
    for q in range(plan.episode.num_queries):
        for k in SHOTS:
            rendered = renderer.render_episode(plan.episode_for(plan.rows(q, k), [q]))
            query = rendered.query_ids[0] if k else rendered.query_ids_alone[0]
            ids = rendered.prefix_ids[: rendered.boundaries[k]] + query
            out.append((q, k, ids, [c[0] for c in rendered.candidates]))
    return out


@torch.inference_mode()
def from_scratch(model, items, batch_size: int) -> dict[tuple[int, int], int]:
    """Length-sorted right-padded batches; logits only at each prompt's last position."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][2]))
    preds = {}
    for start in range(0, len(order), batch_size):
        batch = [items[i] for i in order[start : start + batch_size]]
        width = max(len(ids) for _, _, ids, _ in batch)
        ids = torch.tensor([p + [0] * (width - len(p)) for _, _, p, _ in batch])
        mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for _, _, p, _ in batch])
        last = sorted({len(p) - 1 for _, _, p, _ in batch})
        column = {pos: i for i, pos in enumerate(last)}
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=torch.tensor(last)).logits
        for b, (q, k, p, cands) in enumerate(batch):
            preds[(q, k)] = int(torch.argmax(logits[b, column[len(p) - 1], cands]))
    return preds


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()

    from hf_icl.demo_scoring import query_groups, score_plan
    from hf_icl.models import ModelSpec, load_model
    from hf_icl.render import TextRenderer

    model, tok = load_model(ModelSpec(spec="smollm2-135m", dtype="float32"))
    renderer = TextRenderer(tok)
    plan_for("nearest_first", 2)  # loads the encoder: not part of the selection cost
    first, select_seconds = timed(plan_for, "nearest_first", args.queries)
    last = plan_for("nearest_last", args.queries)

    score_plan(model, renderer, plan_for("nearest_first", 2), SHOTS)  # warm-up
    hf = {}
    for name, plan in (("nearest_first", first), ("nearest_last", last)):
        scores, seconds = timed(score_plan, model, renderer, plan, SHOTS)
        groups, _ = query_groups(None, renderer, plan, SHOTS)
        hf[name] = {
            "seconds": seconds,
            "tokens": sum(g.length for g in groups),
            "preds": {
                (q, k): int(np.argmax(scores[k][q])) for k in SHOTS for q in range(args.queries)
            },
        }
        print(f"hf-icl {name}: {seconds:.1f} s, {hf[name]['tokens']} tokens", flush=True)

    items = prompts(renderer, first)
    sample = [items[i] for i in np.linspace(0, len(items) - 1, 32).astype(int)]
    from_scratch(model, sample[:4], 4)  # warm-up
    sweep = {b: timed(from_scratch, model, sample, b)[1] for b in BATCH_SIZES}
    best = min(sweep, key=sweep.get)
    print(
        "baseline batch-size sweep (32 prompts): "
        + ", ".join(f"{b}: {s:.1f} s" for b, s in sweep.items()),
        flush=True,
    )
    base_preds, base_seconds = timed(from_scratch, model, items, best)
    base_tokens = sum(len(ids) for _, _, ids, _ in items)
    print(f"baseline (batch {best}): {base_seconds:.1f} s, {base_tokens} tokens", flush=True)

    last_items = prompts(renderer, last)
    last_preds, last_base_seconds = timed(from_scratch, model, last_items, best)
    agree = float(
        np.mean([base_preds[key] == hf["nearest_first"]["preds"][key] for key in base_preds])
    )
    agree_last = float(
        np.mean([last_preds[key] == hf["nearest_last"]["preds"][key] for key in last_preds])
    )
    gold = first.episode.query_y
    accuracy = {
        order: {
            k: float(np.mean([hf[order]["preds"][(q, k)] == gold[q] for q in range(args.queries)]))
            for k in SHOTS
        }
        for order in hf
    }
    ratio = base_tokens / hf["nearest_first"]["tokens"]
    speedup = base_seconds / hf["nearest_first"]["seconds"]
    report(
        "retrieval_curve",
        {
            "speedup": round(speedup, 2),
            "agreement": round(agree, 4),
            "token_ratio": round(ratio, 2),
            "speedup_nearest_last": round(last_base_seconds / hf["nearest_last"]["seconds"], 2),
        },
        {
            "queries": args.queries,
            "shots": SHOTS,
            "selection": "topk (all-MiniLM-L6-v2)",
            "selection_seconds": round(select_seconds, 2),
            "hf_icl_seconds": {o: round(hf[o]["seconds"], 1) for o in hf},
            "hf_icl_tokens": {o: hf[o]["tokens"] for o in hf},
            "baseline_seconds": {
                "nearest_first": round(base_seconds, 1),
                "nearest_last": round(last_base_seconds, 1),
            },
            "baseline_tokens": {
                "nearest_first": base_tokens,
                "nearest_last": sum(len(i[2]) for i in last_items),
            },
            "baseline_batch_size": best,
            "batch_size_sweep_seconds": {str(b): round(s, 2) for b, s in sweep.items()},
            "share_of_token_ratio": round(speedup / ratio, 3),
            "agreement_nearest_last": round(agree_last, 4),
            "accuracy": accuracy,
            "peak_rss_gb": round(peak_rss_gb(), 2),
            "threads": torch.get_num_threads(),
        },
    )


if __name__ == "__main__":
    main()
