"""hf-icl vs lm-evaluation-harness: the whole k-shot curve of SmolLM2-135M on the same task.

Same model (float32), same 2-class sentiment task, same fixed demonstrations in the same order
(lm-eval's `first_n` sampler = the first rows of our train file), same template and delimiters,
100 queries, k ∈ {0, 1, 2, 4, 8, 16, 32}. Each side runs in its own process with the model
already loaded before the clock starts. lm-eval is driven through its Python API with a
batch-size sweep (the best is used for the curve); the seven CLI runs a user would otherwise
make are timed separately (model loading included, as a user pays it).

    python benchmarks/vs_lm_eval.py [--skip-cli] [--queries 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak_gflops, peak_rss_gb, report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tasks" / "data" / "sentiment"
SHOTS = [0, 1, 2, 4, 8, 16, 32]
TEMPLATE = "Review: {text}\nSentiment:"
WORDS = [" negative", " positive"]
SWEEP = [1, 4, 8, 16]
SWEEP_SHOTS = 8


def rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text().splitlines()]


def task_yaml(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hf_icl_sentiment.yaml").write_text(f"""task: hf_icl_sentiment
dataset_path: json
dataset_kwargs:
  data_files: {{train: {DATA / "train.jsonl"}, test: {folder / "test.jsonl"}}}
training_split: train
fewshot_split: train
test_split: test
fewshot_config: {{sampler: first_n}}
output_type: multiple_choice
doc_to_text: "Review: {{{{text}}}}\\nSentiment:"
doc_to_choice: ["negative", "positive"]
doc_to_target: label
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}}]
metadata: {{version: 1.0}}
""")


def lm_eval_predictions(results: dict) -> list[int]:
    samples = sorted(results["samples"]["hf_icl_sentiment"], key=lambda s: s["doc_id"])
    return [max(range(2), key=lambda c: s["filtered_resps"][c][0]) for s in samples]


def side_lm_eval(workdir: Path) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from hf_icl.models import load_model

    model, tok = load_model("smollm2-135m")
    manager = TaskManager(include_path=str(workdir))

    def curve(batch_size: int, shots: list[int]) -> tuple[float, dict]:
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
        start, preds = time.perf_counter(), {}
        for k in shots:
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=["hf_icl_sentiment"],
                num_fewshot=k,
                task_manager=manager,
                log_samples=True,
                random_seed=0,
                numpy_random_seed=0,
                torch_random_seed=0,
                fewshot_random_seed=0,
            )
            preds[k] = lm_eval_predictions(out)
        return time.perf_counter() - start, preds

    sweep = {bs: curve(bs, [SWEEP_SHOTS])[0] for bs in SWEEP}
    best = min(sweep, key=sweep.get)
    seconds, preds = curve(best, SHOTS)
    return {"seconds": seconds, "preds": preds, "sweep_seconds_at_k8": sweep, "batch_size": best}


def side_lm_eval_cli(workdir: Path) -> dict:
    from hf_icl.models import smollm2_gguf

    gguf = smollm2_gguf()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    for k in SHOTS:
        subprocess.run(
            [
                str(Path(sys.executable).parent / "lm_eval"),
                "run",
                "--model",
                "hf",
                "--model_args",
                f"pretrained={gguf.parent},gguf_file={gguf.name},dtype=float32",
                "--tasks",
                "hf_icl_sentiment",
                "--include_path",
                str(workdir),
                "--device",
                "cpu",
                "--batch_size",
                "8",
                "--seed",
                "0",
                "--num_fewshot",
                str(k),
                "--output_path",
                str(workdir / f"cli-{k}"),
            ],
            check=True,
            env=env,
            capture_output=True,
        )
    return {"seconds": time.perf_counter() - start}


def model_flops(model, tokens: int, reads: int) -> float:
    """2·N per token for the non-embedding weights plus the LM head at every read position."""
    cfg = model.config
    embedding = cfg.vocab_size * cfg.hidden_size
    body = sum(p.numel() for p in model.parameters()) - embedding
    return 2 * body * tokens + 2 * embedding * reads


def side_hf_icl(queries: int) -> dict:
    import numpy as np

    from hf_icl.episode import Episode
    from hf_icl.models import ModelSpec, load_model
    from hf_icl.render import TextRenderer
    from hf_icl.scoring import score_queries

    train, test = rows("train")[: max(SHOTS)], rows("test")[:queries]
    episode = Episode(
        task="sentiment",
        family="text_classification",
        task_id=0,
        demo_x=[TEMPLATE.format(**r) for r in train],
        demo_y=np.array([r["label"] for r in train]),
        query_x=[TEMPLATE.format(**r) for r in test],
        query_y=np.array([r["label"] for r in test]),
        num_classes=2,
        label_words=WORDS,
    )
    out = {}
    for dtype in ("float32", "bfloat16"):
        model, tok = load_model(ModelSpec(spec="smollm2-135m", dtype=dtype))
        rendered = TextRenderer(tok).render_episode(episode)
        score_queries(model, rendered, [1])  # warm-up: first-call allocations
        start = time.perf_counter()
        scores = score_queries(model, rendered, SHOTS)
        seconds = time.perf_counter() - start
        tokens = rendered.boundaries[max(SHOTS)] + sum(
            len(q) for k in SHOTS for q in (rendered.query_ids if k else rendered.query_ids_alone)
        )
        flops = model_flops(model, tokens, reads=queries * len(SHOTS))
        peak = matmul_peak_gflops(dtype)
        out[dtype] = {
            "seconds": seconds,
            "preds": {k: scores[k].argmax(1).tolist() for k in SHOTS},
            "tokens": tokens,
            "gflops": flops / seconds / 1e9,
            "peak_gflops": peak,
        }
        del model
    out["gold"] = [r["label"] for r in test]
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def run_side(side: str, workdir: Path, queries: int) -> dict:
    out = workdir / f"{side}.json"
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--side",
            side,
            "--workdir",
            str(workdir),
            "--queries",
            str(queries),
        ],
        check=True,
    )
    return json.loads(out.read_text())


def agreement(a: dict, b: dict) -> float:
    same = total = 0
    for k in SHOTS:
        pa, pb = a[str(k)], b[str(k)]
        same += sum(x == y for x, y in zip(pa, pb))
        total += len(pa)
    return same / total


def accuracy(preds: dict, gold: list[int]) -> dict:
    return {k: sum(p == g for p, g in zip(v, gold)) / len(gold) for k, v in preds.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=["hf_icl", "lm_eval", "lm_eval_cli"])
    parser.add_argument("--workdir")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    if args.side:
        workdir = Path(args.workdir)
        result = {
            "hf_icl": lambda: side_hf_icl(args.queries),
            "lm_eval": lambda: side_lm_eval(workdir),
            "lm_eval_cli": lambda: side_lm_eval_cli(workdir),
        }[args.side]()
        (workdir / f"{args.side}.json").write_text(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "test.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows("test")[: args.queries])
        )
        task_yaml(workdir)
        ours = run_side("hf_icl", workdir, args.queries)
        theirs = run_side("lm_eval", workdir, args.queries)
        cli = None if args.skip_cli else run_side("lm_eval_cli", workdir, args.queries)
    gold = ours["gold"]
    f32, bf16 = ours["float32"], ours["bfloat16"]
    figures = {
        "speedup": round(theirs["seconds"] / f32["seconds"], 2),
        "agreement": round(agreement(f32["preds"], theirs["preds"]), 4),
        "speedup_bf16": round(theirs["seconds"] / bf16["seconds"], 2),
        "agreement_bf16": round(agreement(bf16["preds"], theirs["preds"]), 4),
    }
    details = {
        "hf_icl_seconds": f32["seconds"],
        "hf_icl_bf16_seconds": bf16["seconds"],
        "lm_eval_seconds": theirs["seconds"],
        "lm_eval_batch_size": theirs["batch_size"],
        "lm_eval_sweep_seconds_at_k8": theirs["sweep_seconds_at_k8"],
        "lm_eval_cli_seconds": cli["seconds"] if cli else None,
        "accuracy_hf_icl": accuracy(f32["preds"], gold),
        "accuracy_hf_icl_bf16": accuracy(bf16["preds"], gold),
        "accuracy_lm_eval": accuracy(theirs["preds"], gold),
        "hf_icl_tokens": f32["tokens"],
        "flops_utilisation_float32": f32["gflops"] / f32["peak_gflops"],
        "flops_utilisation_bf16": bf16["gflops"] / bf16["peak_gflops"],
        "gflops": {"float32": f32["gflops"], "bfloat16": bf16["gflops"]},
        "matmul_peak_gflops": {"float32": f32["peak_gflops"], "bfloat16": bf16["peak_gflops"]},
        "hf_icl_peak_rss_gb": ours["peak_rss_gb"],
        "queries": args.queries,
        "shots": SHOTS,
    }
    for key, value in details.items():
        print(f"{key}: {value}")
    report("vs_lm_eval", figures, details)


if __name__ == "__main__":
    main()
