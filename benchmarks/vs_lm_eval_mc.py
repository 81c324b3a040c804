"""hf-icl vs lm-evaluation-harness on a multiple-choice lm-eval task with per-document choices.

An lm-eval task YAML (four numeric answers per question, several tokens each under SmolLM2),
SmolLM2-135M float32, 100 documents, k ∈ {0, 1, 2, 4, 8, 16}, fixed first-n demonstrations
(`fewshot_config: {sampler: first_n}`). hf-icl loads the same YAML through lm-eval's
TaskManager and scores the whole curve in one call; lm-eval runs through its Python API at its
best batch size (a sweep on the first 25 documents at 8 shots picks it, or --batch-size
skips the sweep). Each side runs in its own process with the model loaded before the clock
starts; wall time and CPU time (all threads) are both measured: on a shared machine the CPU-time
ratio is the steadier one.

    python benchmarks/vs_lm_eval_mc.py [--docs 100] [--batch-size B]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_gb, report  # noqa: E402

SHOTS = [0, 1, 2, 4, 8, 16]
SWEEP = [4, 8, 16, 32]
SWEEP_SHOTS, SWEEP_DOCS = 8, 25
TASK = "arith_mc"


def rows(count: int, seed: int) -> list[dict]:
    """Sums of two numbers below 500 with four numeric choices, the answer at a random index."""
    rnd = random.Random(seed)
    out = []
    for _ in range(count):
        a, b = rnd.randint(10, 499), rnd.randint(10, 499)
        right = a + b
        wrong = rnd.sample([right + d for d in (-100, -10, -1, 1, 10, 100)], 3)
        choices = [str(n) for n in wrong]
        answer = rnd.randint(0, 3)
        choices.insert(answer, str(right))
        out.append({"a": a, "b": b, "choices": choices, "answer": answer})
    return out


def write_task(folder: Path, docs: int) -> None:
    for split, count, seed in (("train", max(SHOTS), 0), ("test", docs, 1)):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows(count, seed))
        )
    (folder / f"{TASK}.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files: {{train: {folder / "train.jsonl"}, test: {folder / "test.jsonl"}}}
training_split: train
fewshot_split: train
test_split: test
fewshot_config: {{sampler: first_n}}
output_type: multiple_choice
doc_to_text: "Question: What is {{{{a}}}} + {{{{b}}}}?\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
  - {{metric: acc_norm, aggregation: mean, higher_is_better: true}}
metadata: {{version: 1.0}}
""")


def side_lm_eval(folder: Path, docs: int, batch_size: int | None) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from hf_icl.models import load_model

    model, tok = load_model("smollm2-135m")
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    tokens = {"count": 0}
    original = HFLM._loglikelihood_tokens

    def counting(self, requests, *args, **kwargs):
        tokens["count"] += sum(len(ctx + cont) - 1 for _, ctx, cont in requests)
        return original(self, requests, *args, **kwargs)

    HFLM._loglikelihood_tokens = counting

    def curve(batch_size: int, shots: list[int], limit: int) -> tuple[float, dict]:
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
        start, cpu, out = time.perf_counter(), time.process_time(), {}
        for k in shots:
            res = lm_eval.simple_evaluate(
                model=lm,
                tasks=[TASK],
                num_fewshot=k,
                limit=limit,
                task_manager=manager,
                log_samples=True,
                verbosity="ERROR",
            )
            samples = sorted(res["samples"][TASK], key=lambda s: s["doc_id"])
            out[k] = [[r[0][0] for r in s["resps"]] for s in samples]
        out["cpu_seconds"] = time.process_time() - cpu
        return time.perf_counter() - start, out

    sweep = {} if batch_size else {bs: curve(bs, [SWEEP_SHOTS], SWEEP_DOCS)[0] for bs in SWEEP}
    best = batch_size or min(sweep, key=sweep.get)
    tokens["count"] = 0
    seconds, lls = curve(best, SHOTS, docs)
    return {
        "seconds": seconds,
        "cpu_seconds": lls.pop("cpu_seconds"),
        "lls": lls,
        "batch_size": best,
        "tokens": tokens["count"],
        "sweep_seconds": sweep,
    }


def side_hf_icl(folder: Path, docs: int) -> dict:
    from hf_icl.lm_eval_tasks import DemoSelection, LmEvalEncoder, load_lm_eval_tasks, mc_documents
    from hf_icl.models import load_model
    from hf_icl.multiple_choice import lm_eval_requests, score_lm_eval_task, scored_tokens

    model, tok = load_model("smollm2-135m")
    task = load_lm_eval_tasks(str(folder / f"{TASK}.yaml"))[0]
    documents = mc_documents(task, docs)
    score_lm_eval_task(model, tok, task, documents[:4], [1], DemoSelection())  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    curve = score_lm_eval_task(model, tok, task, documents, SHOTS, DemoSelection())
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    encoder = LmEvalEncoder(tok)
    requests = {k: lm_eval_requests(task, documents, k, DemoSelection(), encoder) for k in SHOTS}
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "lls": {k: [s.loglikelihoods for s in v] for k, v in curve.items()},
        "tokens": scored_tokens(requests),
        "gold": [d.gold for d in documents],
        "choices": [d.choices for d in documents],
        "peak_rss_gb": peak_rss_gb(),
    }


def run_side(side: str, folder: Path, docs: int, batch_size: int | None) -> dict:
    subprocess.run(
        [sys.executable, __file__, "--side", side, "--workdir", str(folder), "--docs", str(docs)]
        + (["--batch-size", str(batch_size)] if batch_size else []),
        check=True,
    )
    return json.loads((folder / f"{side}.json").read_text())


def predictions(lls: list[float], choices: list[str]) -> tuple[int, int]:
    norm = [ll / len(c) for ll, c in zip(lls, choices)]
    return max(range(len(lls)), key=lls.__getitem__), max(range(len(norm)), key=norm.__getitem__)


def compare(ours: dict, theirs: dict) -> dict:
    same = same_norm = total = 0
    worst = 0.0
    acc = {"hf_icl": {}, "lm_eval": {}}
    acc_norm = {"hf_icl": {}, "lm_eval": {}}
    for k in SHOTS:
        right = {"hf_icl": [0, 0], "lm_eval": [0, 0]}
        for a, b, choices, gold in zip(
            ours["lls"][str(k)], theirs["lls"][str(k)], ours["choices"], ours["gold"]
        ):
            pa, pb = predictions(a, choices), predictions(b, choices)
            same += pa[0] == pb[0]
            same_norm += pa[1] == pb[1]
            total += 1
            worst = max(worst, max(abs(x - y) for x, y in zip(a, b)))
            for side, p in (("hf_icl", pa), ("lm_eval", pb)):
                right[side][0] += p[0] == gold
                right[side][1] += p[1] == gold
        for side in right:
            acc[side][k] = right[side][0] / len(ours["gold"])
            acc_norm[side][k] = right[side][1] / len(ours["gold"])
    return {
        "agreement": same / total,
        "agreement_norm": same_norm / total,
        "max_abs_loglikelihood_diff": worst,
        "acc": acc,
        "acc_norm": acc_norm,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=["hf_icl", "lm_eval"])
    parser.add_argument("--workdir")
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, help="lm-eval's batch size (skips the sweep)")
    args = parser.parse_args()
    if args.side:
        folder = Path(args.workdir)
        result = (
            side_hf_icl(folder, args.docs)
            if args.side == "hf_icl"
            else side_lm_eval(folder, args.docs, args.batch_size)
        )
        (folder / f"{args.side}.json").write_text(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_task(folder, args.docs)
        ours = run_side("hf_icl", folder, args.docs, args.batch_size)
        theirs = run_side("lm_eval", folder, args.docs, args.batch_size)
    agree = compare(ours, theirs)
    figures = {
        "speedup": round(theirs["seconds"] / ours["seconds"], 2),
        "agreement": round(agree["agreement"], 4),
        "token_ratio": round(theirs["tokens"] / ours["tokens"], 2),
    }
    details = {
        "hf_icl_seconds": ours["seconds"],
        "lm_eval_seconds": theirs["seconds"],
        "hf_icl_cpu_seconds": ours["cpu_seconds"],
        "lm_eval_cpu_seconds": theirs["cpu_seconds"],
        "speedup_cpu_time": round(theirs["cpu_seconds"] / ours["cpu_seconds"], 2),
        "lm_eval_batch_size": theirs["batch_size"],
        "lm_eval_sweep_seconds": theirs["sweep_seconds"],
        "lm_eval_sweep": f"{SWEEP_DOCS} documents at {SWEEP_SHOTS} shots"
        if theirs["sweep_seconds"]
        else "none (--batch-size)",
        "agreement_acc_norm": agree["agreement_norm"],
        "max_abs_loglikelihood_diff": agree["max_abs_loglikelihood_diff"],
        "acc": agree["acc"],
        "acc_norm": agree["acc_norm"],
        "hf_icl_tokens": ours["tokens"],
        "lm_eval_tokens": theirs["tokens"],
        "hf_icl_peak_rss_gb": ours["peak_rss_gb"],
        "documents": args.docs,
        "shots": SHOTS,
        "model": "smollm2-135m float32",
    }
    for key, value in details.items():
        print(f"{key}: {value}")
    report("vs_lm_eval_mc", figures, details)


if __name__ == "__main__":
    main()
