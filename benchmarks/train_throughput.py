"""Tokens/s and peak memory of a meta-fine-tuning step: hf-icl's trainer vs transformers' Trainer.

Both sides train the same model with the same adapters on the same episodes (in the same order),
with AdamW at the same learning rate; a step's time includes preparing its batch (hf-icl draws and
renders the episodes on the fly, the Trainer fetches and collates pre-rendered rows). hf-icl runs its own ``train_step`` (loss at label
positions, LM head applied to those rows only). The Trainer is used as a user would: token ids
and labels per episode (every position -100 except the label tokens), padded per batch by
``DataCollatorForSeq2Seq``, the model's own full-vocabulary loss; only the sampler is made
sequential so that both sides see the same batches. Each side runs in its own process, so its
peak RSS is its own (model loading included, the same on both sides).

Cases: ``lora`` — SmolLM2-135M with LoRA r=8 on q_proj/v_proj, projected digits rendered as
text, 4 episodes of 12 examples per step (the headline figures); ``small`` — the small
from-scratch model (embedding renderer) on linear regression with d=5, where the Trainer gets a
read-in/read-out wrapper around the model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"
CASES = {
    "lora": {
        "config": {
            "model": "smollm2-135m",
            "tasks": [{"name": "digits_projected", "classes": [0, 1, 2], "as": "digits3"}],
            "train": {
                "finetune": "lora",
                "batch_size": 4,
                "num_examples": 12,
                "lr": 1e-3,
                "max_grad_norm": None,
                "scheduler": "constant",
            },
        },
        "warmup": 1,
        "timed": 3,
    },
    "small": {
        "config": {
            "small_model": {},
            "tasks": [{"name": "linear_regression", "dim": 5, "render": {"renderer": "embedding"}}],
            "train": {
                "batch_size": 64,
                "num_examples": 20,
                "lr": 1e-3,
                "max_grad_norm": None,
                "scheduler": "constant",
            },
        },
        "warmup": 2,
        "timed": 20,
    },
}


def _config(case: str):
    from hf_icl.config import from_dict
    from hf_icl.training.config import TrainConfig

    return from_dict(TrainConfig, CASES[case]["config"], source=f"case {case}")


def run_ours(case: str) -> list[tuple[int, float]]:
    """(tokens, seconds) per step of hf-icl's train_step."""
    from accelerate import Accelerator

    from hf_icl.training.loop import make_optimizer, train_step
    from hf_icl.training.setup import build_learner

    config = _config(case)
    section = config.train
    accelerator = Accelerator(cpu=True, step_scheduler_with_optimizer=False)
    learner, _, tasks = build_learner(config)
    optimizer, scheduler = make_optimizer(learner, section)
    model, optimizer, scheduler = accelerator.prepare(learner, optimizer, scheduler)
    steps = []
    for step in range(CASES[case]["warmup"] + CASES[case]["timed"]):
        start = time.perf_counter()
        _, tokens = train_step(
            model,
            optimizer,
            scheduler,
            accelerator,
            tasks[0],
            step,
            section,
            step * section.batch_size,
        )
        steps.append((tokens, time.perf_counter() - start))
    return steps


class ReadInOutModel(torch.nn.Module):
    """What a Trainer user writes for continuous inputs: read-in, the model, read-out, MSE."""

    def __init__(self, learner) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        embeds = self.learner.read_in(x, labels, None)
        hidden = self.learner.lm(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1]
        predictions = self.learner.read_out(hidden).squeeze(-1)[:, ::2]
        return {"loss": torch.nn.functional.mse_loss(predictions, labels)}


def trainer_rows(case: str, tasks, section, count: int) -> tuple[list[dict], list[int]]:
    """The episodes of ``count`` steps as Trainer rows, and the tokens of each step."""
    rows, tokens = [], []
    for step in range(count):
        batch = tasks[0].render(
            tasks[0].draw(
                step * section.batch_size, section.batch_size, section.num_examples, "train"
            ),
            False,
        )
        tokens.append(batch.num_tokens)
        if case == "small":
            rows += [
                {"x": x.tolist(), "labels": y.tolist()}
                for x, y in zip(batch.inputs["x"], batch.inputs["labels"])
            ]
            continue
        ids = batch.inputs["input_ids"]
        for b in range(len(ids)):
            mine = batch.rows == b
            length = int(batch.cols[mine].max()) + 2  # through the last label token
            labels = [-100] * length
            for col in batch.cols[mine].tolist():
                labels[col + 1] = int(ids[b, col + 1])
            rows.append({"input_ids": ids[b, :length].tolist(), "labels": labels})
    return rows, tokens


def run_trainer(case: str) -> list[tuple[int, float]]:
    import datasets
    from transformers import (
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    from hf_icl.training.setup import build_learner

    config = _config(case)
    section = config.train
    learner, tokenizer, tasks = build_learner(config)  # same weights, same LoRA initialisation
    count = CASES[case]["warmup"] + CASES[case]["timed"]
    rows, tokens = trainer_rows(case, tasks, section, count)
    model = ReadInOutModel(learner) if case == "small" else learner.lm
    collator = (
        default_data_collator
        if case == "small"
        else DataCollatorForSeq2Seq(tokenizer, padding=True)
    )
    ends: list[float] = []

    class Clock(TrainerCallback):
        """Step end to step end: fetching and collating the batch counts, as streaming and
        rendering the episodes count on hf-icl's side."""

        def on_train_begin(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=section.batch_size,
            max_steps=count,
            learning_rate=section.lr,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            max_grad_norm=0.0,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            train_sampling_strategy="sequential",
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        Trainer(
            model=model,
            args=args,
            train_dataset=datasets.Dataset.from_list(rows),
            data_collator=collator,
            callbacks=[Clock()],
        ).train()
    return list(zip(tokens, [b - a for a, b in zip(ends, ends[1:])]))


def side(case: str, which: str) -> dict:
    steps = (run_ours if which == "ours" else run_trainer)(case)
    timed = steps[CASES[case]["warmup"] :]
    tokens = sum(t for t, _ in timed)
    seconds = sum(s for _, s in timed)
    return {
        "tokens_per_s": tokens / seconds,
        "step_s": seconds / len(timed),
        "tokens_per_step": tokens / len(timed),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
    }


def spawn(case: str, which: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--case", case, "--side", which],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"{case}/{which} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--side", choices=("ours", "trainer"))
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side(args.case, args.side)))
        return
    result = {"load_average_1min": os.getloadavg()[0], "torch": torch.__version__}
    for case in CASES:
        ours, trainer = spawn(case, "ours"), spawn(case, "trainer")
        result[case] = {
            "hf_icl": ours,
            "trainer": trainer,
            "speedup": ours["tokens_per_s"] / trainer["tokens_per_s"],
            "rss_ratio": ours["peak_rss_mb"] / trainer["peak_rss_mb"],
        }
        print(
            f"{case}: {ours['tokens_per_s']:.0f} vs {trainer['tokens_per_s']:.0f} tokens/s, "
            f"peak RSS {ours['peak_rss_mb']:.0f} vs {trainer['peak_rss_mb']:.0f} MB"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    lora = result["lora"]
    print(
        f"RESULT train_throughput speedup={lora['speedup']:.3f} rss_ratio={lora['rss_ratio']:.3f} "
        f"small_speedup={result['small']['speedup']:.3f} "
        f"small_rss_ratio={result['small']['rss_ratio']:.3f}"
    )


if __name__ == "__main__":
    main()
