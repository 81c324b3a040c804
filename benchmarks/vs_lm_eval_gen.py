"""hf-icl vs lm-evaluation-harness on a generation-scored task: greedy answers of SmolLM2-135M.

A short-answer reading task written for this benchmark (generated from a fixed seed): a sentence
says who found what and how many, and the question asks for one of those facts, so the answer is
a name, a word or a number copied from the sentence — at most 3 tokens, something a 135M model
learns to do from demonstrations (exact match rises with the shot count; arithmetic, tried
first, gave 0% at every shot count). Demonstrations are 27–35 tokens, `until: ["\\n\\n"]` and
`max_new_tokens: 16` on both sides, float32, 100 queries, k ∈ {0, 1, 2, 4, 8} fixed first-n
demonstrations. lm-eval runs through its Python API (`generate_until`, HFLM) at the best batch
size of a sweep; hf-icl generates every query from the cached demo prefix. Each side runs in its
own process with the model loaded before the clock starts. Forward calls are timed by kind:
prefill (more than one new token) and decode (one token per row); prefix reuse saves only the
prefill, so the decode seconds are reported next to each other. The machine is shared: each
side's CPU seconds and the load average after it are reported with the wall-clock times.

    python benchmarks/vs_lm_eval_gen.py [--queries 100]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_gb, report  # noqa: E402

SHOTS = [0, 1, 2, 4, 8]
UNTIL = ["\n\n"]
MAX_NEW_TOKENS = 16
SWEEP = [8, 16, 32, 64]
SWEEP_SHOTS = 8
SWEEP_QUERIES = 64  # the batch-size sweep runs on the first 64 queries (the machine is shared)
WARM_QUERIES = 32  # hf-icl's warm-up (lm-eval's is its sweep)
BATCH = 512  # hf-icl: a whole curve's prompts decode together (a row holds only its own tokens)
TEMPLATE = "Question: {question}\nAnswer:"
NAMES = ["Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo"]
NAMES += ["Iris", "Jonas", "Keiko", "Liam", "Maya", "Noah", "Olga", "Pedro"]
ITEMS = ["apples", "pencils", "marbles", "stickers", "books", "cookies", "shells", "coins"]
PLACES = ["market", "school", "garden", "library", "park", "harbour"]


def problems(count: int, seed: int = 0) -> list[dict]:
    """Two people find things; the question asks who, what, how many or where."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        (a, b), (x, y) = rng.sample(NAMES, 2), rng.sample(ITEMS, 2)
        place = rng.choice(PLACES)
        na, nb = rng.randint(2, 49), rng.randint(2, 49)
        text = f"{a} found {na} {x} at the {place}; {b} found {nb} {y}."
        question, answer = rng.choice(
            [
                (f"Who found the {y}?", b),
                (f"What did {a} find?", x),
                (f"How many {y} were found?", str(nb)),
                (f"Where were the {x} found?", place),
            ]
        )
        out.append({"question": f"{text} {question}", "answer": answer})
    return out


def task_yaml(folder: Path) -> None:
    (folder / "hf_icl_facts.yaml").write_text(f"""task: hf_icl_facts
dataset_path: json
dataset_kwargs:
  data_files: {{train: {folder / "train.jsonl"}, test: {folder / "test.jsonl"}}}
training_split: train
fewshot_split: train
test_split: test
fewshot_config: {{sampler: first_n}}
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
generation_kwargs: {{until: ["\\n\\n"], max_gen_toks: {MAX_NEW_TOKENS}, do_sample: false}}
metric_list: [{{metric: exact_match, aggregation: mean, higher_is_better: true}}]
metadata: {{version: 1.0}}
""")


class ForwardClock:
    """Seconds, tokens and calls of the model's forward passes, split into prefill and decode."""

    def __init__(self, model) -> None:
        self.seconds = {"prefill": 0.0, "decode": 0.0}
        self.tokens = {"prefill": 0, "decode": 0}
        self.calls = {"prefill": 0, "decode": 0}
        self._start = 0.0
        self._kind = "prefill"
        model.register_forward_pre_hook(self._before, with_kwargs=True)
        model.register_forward_hook(self._after)

    def _before(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._kind = "decode" if ids.shape[1] == 1 else "prefill"
        self.tokens[self._kind] += ids.numel()
        self.calls[self._kind] += 1
        self._start = time.perf_counter()

    def _after(self, module, args, output):
        self.seconds[self._kind] += time.perf_counter() - self._start


@contextmanager
def timed(into: dict, key: str):
    start = time.perf_counter()
    yield
    into[key] = time.perf_counter() - start


def side_lm_eval(workdir: Path) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from hf_icl.models import load_model

    model, tok = load_model("smollm2-135m")
    manager = TaskManager(include_path=str(workdir))

    def curve(
        batch_size: int, shots: list[int], limit: int | None = None
    ) -> tuple[float, float, dict, ForwardClock]:
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size)
        clock = ForwardClock(lm.model)
        start, cpu, outputs = time.perf_counter(), time.process_time(), {}
        for k in shots:
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=["hf_icl_facts"],
                num_fewshot=k,
                task_manager=manager,
                log_samples=True,
                limit=limit,
                random_seed=0,
                numpy_random_seed=0,
                torch_random_seed=0,
                fewshot_random_seed=0,
            )
            samples = sorted(out["samples"]["hf_icl_facts"], key=lambda s: s["doc_id"])
            outputs[k] = [s["resps"][0][0] for s in samples]
        return time.perf_counter() - start, time.process_time() - cpu, outputs, clock

    sweep = {}
    for bs in SWEEP:
        sweep[bs] = curve(bs, [SWEEP_SHOTS], SWEEP_QUERIES)[0]
        model._forward_hooks.clear()
        model._forward_pre_hooks.clear()
    best = min(sweep, key=sweep.get)
    seconds, cpu, outputs, clock = curve(best, SHOTS)
    return {
        "seconds": seconds,
        "outputs": outputs,
        "batch_size": best,
        "sweep_seconds": sweep,
        "forward_seconds": clock.seconds,
        "forward_tokens": clock.tokens,
        "forward_calls": clock.calls,
        "cpu_seconds": cpu,
        "load_average": os.getloadavg(),
    }


def side_hf_icl(workdir: Path) -> dict:
    import numpy as np

    from hf_icl.episode import Episode
    from hf_icl.generation import generate_queries
    from hf_icl.models import load_model
    from hf_icl.render import TextRenderer
    from hf_icl.render.generation import render_generation

    train, test = (read(workdir / f"{s}.jsonl") for s in ("train", "test"))
    episode = Episode(
        task="facts",
        family="generation",
        task_id=0,
        demo_x=[TEMPLATE.format(**r) for r in train[: max(SHOTS)]],
        demo_y=np.array([r["answer"] for r in train[: max(SHOTS)]], dtype=object),
        query_x=[TEMPLATE.format(**r) for r in test],
        query_y=np.array([r["answer"] for r in test], dtype=object),
    )
    model, tok = load_model("smollm2-135m")
    prompts = render_generation(TextRenderer(tok), episode)
    warm = dataclasses.replace(prompts, query_ids=prompts.query_ids[:WARM_QUERIES])
    generate_queries(
        model,
        tok,
        warm,
        [SWEEP_SHOTS],
        until=UNTIL,
        max_new_tokens=MAX_NEW_TOKENS,
        batch_size=BATCH,
    )
    clock = ForwardClock(model)
    start, cpu = time.perf_counter(), time.process_time()
    gens = generate_queries(
        model, tok, prompts, SHOTS, until=UNTIL, max_new_tokens=MAX_NEW_TOKENS, batch_size=BATCH
    )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    demo_tokens = [b - a for a, b in zip(prompts.boundaries, prompts.boundaries[1:])]
    full_tokens = sum(
        prompts.boundaries[k] + len(q)
        for k in SHOTS
        for q in (prompts.query_ids if k else prompts.query_ids_alone)
    )
    return {
        "seconds": seconds,
        "outputs": {k: [g.text for g in gens[k]] for k in SHOTS},
        "answer_tokens": [len(g.tokens) for k in SHOTS for g in gens[k]],
        "targets": prompts.targets,
        "forward_seconds": clock.seconds,
        "forward_tokens": clock.tokens,
        "forward_calls": clock.calls,
        "cpu_seconds": cpu,
        "load_average": os.getloadavg(),
        "full_prompt_tokens": full_tokens,
        "demo_tokens": demo_tokens,
        "target_tokens": [
            len(tok(" " + t, add_special_tokens=False).input_ids) for t in prompts.targets
        ],
        "peak_rss_gb": peak_rss_gb(),
    }


def exact_match(result: dict, targets: list[str]) -> dict[int, float]:
    """Per shot count, the share of outputs equal to the answer after lm-eval-style stripping."""
    return {
        k: sum(o.strip() == t for o, t in zip(result["outputs"][str(k)], targets)) / len(targets)
        for k in SHOTS
    }


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_side(side: str, workdir: Path) -> dict:
    subprocess.run(
        [sys.executable, __file__, "--side", side, "--workdir", str(workdir)], check=True
    )
    return json.loads((workdir / f"{side}.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=["hf_icl", "lm_eval"])
    parser.add_argument("--workdir")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    if args.side:
        workdir = Path(args.workdir)
        result = side_hf_icl(workdir) if args.side == "hf_icl" else side_lm_eval(workdir)
        (workdir / f"{args.side}.json").write_text(json.dumps(result))
        return
    rows = problems(max(SHOTS) + args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for split, part in (("train", rows[: max(SHOTS)]), ("test", rows[max(SHOTS) :])):
            (workdir / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
        task_yaml(workdir)
        ours = run_side("hf_icl", workdir)
        theirs = run_side("lm_eval", workdir)
    sides = {"hf_icl": ours, "lm_eval": theirs}
    pairs = [
        (a, b) for k in SHOTS for a, b in zip(ours["outputs"][str(k)], theirs["outputs"][str(k)])
    ]
    agreement = sum(a == b for a, b in pairs) / len(pairs)
    exact = {side: exact_match(result, ours["targets"]) for side, result in sides.items()}
    prefill_ratio = theirs["forward_tokens"]["prefill"] / ours["forward_tokens"]["prefill"]
    figures = {
        "speedup": round(theirs["seconds"] / ours["seconds"], 2),
        "agreement": round(agreement, 4),
        "token_ratio": round(ours["full_prompt_tokens"] / ours["forward_tokens"]["prefill"], 2),
    }
    details = {
        "hf_icl_seconds": ours["seconds"],
        "lm_eval_seconds": theirs["seconds"],
        "lm_eval_batch_size": theirs["batch_size"],
        "hf_icl_batch_size": BATCH,
        f"lm_eval_sweep_seconds_at_k{SWEEP_SHOTS}_{SWEEP_QUERIES}_queries": theirs["sweep_seconds"],
        "prefill_seconds": {
            "hf_icl": ours["forward_seconds"]["prefill"],
            "lm_eval": theirs["forward_seconds"]["prefill"],
        },
        "decode_seconds": {
            "hf_icl": ours["forward_seconds"]["decode"],
            "lm_eval": theirs["forward_seconds"]["decode"],
        },
        "prefill_tokens": {
            "hf_icl": ours["forward_tokens"]["prefill"],
            "lm_eval_with_padding": theirs["forward_tokens"]["prefill"],
            "full_prompts_without_padding": ours["full_prompt_tokens"],
        },
        "prefill_token_ratio_with_lm_eval_padding": round(prefill_ratio, 2),
        "decode_token_rows": {
            "hf_icl": ours["forward_tokens"]["decode"],
            "lm_eval": theirs["forward_tokens"]["decode"],
        },
        "exact_match": exact,
        "cpu_seconds": {side: result["cpu_seconds"] for side, result in sides.items()},
        "forward_calls": {side: result["forward_calls"] for side, result in sides.items()},
        "load_average_after": {side: result["load_average"] for side, result in sides.items()},
        "demo_tokens": {"min": min(ours["demo_tokens"]), "max": max(ours["demo_tokens"])},
        "answer_tokens_max": max(ours["target_tokens"]),
        "disagreements": [(a, b) for a, b in pairs if a != b][:10],
        "queries": args.queries,
        "shots": SHOTS,
        "until": UNTIL,
        "max_new_tokens": MAX_NEW_TOKENS,
        "hf_icl_peak_rss_gb": ours["peak_rss_gb"],
    }
    for key, value in details.items():
        print(f"{key}: {value}")
    report("vs_lm_eval_gen", figures, details)


if __name__ == "__main__":
    main()
