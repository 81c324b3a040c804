"""Per-episode cost of each fine-tuning arm relative to ICL on SmolLM2-135M.

One episode of the sentiment task: 16 demonstrations, 50 queries, float32. ICL: scoring the
queries after the 16 demonstrations (`score_queries`, demo-prefix KV reuse). An FT arm:
training on the same 16 demonstrations (batch 1, 1 epoch, SGD), zero-shot scoring of the
queries, and restoring the base weights; no learning-rate sweep. ``ratio`` is the `dai` arm's:
the median over episodes of FT time / ICL time, each pair measured back to back.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch

from hf_icl.finetune import make_arm, training_demos
from hf_icl.finetune_config import ArmSpec, FinetuneConfig
from hf_icl.models import load_model
from hf_icl.render import TextRenderer
from hf_icl.scoring import score_queries
from hf_icl.tasks import load_task

SHOTS = 16
QUERIES = 50
EPISODES = 3
ARMS = ["dai", "lora", "full", "layer_causal"]
RESULTS = Path(__file__).parent / "results" / "ft_vs_icl_cost.json"


def icl_seconds(model, rendered) -> float:
    start = time.perf_counter()
    score_queries(model, rendered, [SHOTS])
    return time.perf_counter() - start


def ft_seconds(model, arm, demos, rendered, lr: float) -> float:
    start = time.perf_counter()
    with arm.fine_tuned(demos, lr):
        score_queries(model, rendered, [0])
    return time.perf_counter() - start


def main() -> None:
    model, tokenizer = load_model("smollm2-135m")
    _, sampler = load_task("sentiment")
    renderer = TextRenderer(tokenizer)
    section = FinetuneConfig()
    arms = {name: make_arm(model, section.settings(ArmSpec(name))) for name in ARMS}
    icl_times: list[float] = []
    ratios: dict[str, list[float]] = {name: [] for name in ARMS}
    for index in range(EPISODES + 1):  # episode 0 only warms up
        episode = sampler.episode(index, SHOTS, QUERIES)
        rendered = renderer.render_episode(episode)
        demos = training_demos(renderer, episode, rendered, SHOTS)
        icl = icl_seconds(model, rendered)
        for name, arm in arms.items():
            ft = ft_seconds(model, arm, demos, rendered, section.lr)
            if index:
                ratios[name].append(ft / icl)
        if index:
            icl_times.append(icl)
    medians = {name: statistics.median(values) for name, values in ratios.items()}
    result = {
        "ratio": medians["dai"],
        "ratios": medians,
        "icl_s": statistics.median(icl_times),
        "shots": SHOTS,
        "num_queries": QUERIES,
        "episodes": EPISODES,
        "threads": torch.get_num_threads(),
        # Other work on the machine inflates every time; ratios measured back to back less so.
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    others = " ".join(f"{name}={medians[name]:.2f}" for name in ARMS[1:])
    print(
        f"RESULT ft_vs_icl_cost ratio={medians['dai']:.2f} {others} "
        f"icl_s={result['icl_s']:.2f} shots={SHOTS} queries={QUERIES}"
    )


if __name__ == "__main__":
    main()
