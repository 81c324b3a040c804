"""The meta-training loop: Accelerate, episodes streamed from task samplers, loss at labels.

Data: optimizer step s trains on the global batch s of one task (tasks take turns); its
episodes are ``batch_size`` consecutive episodes of the task's stream, drawn from the task's
seed and the episode index, so the stream position is the step count. Every process draws the
whole batch (the sampler guarantees per-batch properties such as bias_fraction) and trains on
its own slice of each accumulation step; the loss is a sum over label positions divided by the
batch's total number of labels, so gradients do not depend on the number of processes.

Resume: checkpoints (trainable weights, optimizer, scheduler, RNG states, step) are complete
by construction (see checkpoints.py). A rerun loads the newest complete checkpoint and drops
later lines of metrics.jsonl, so a killed and resumed run ends with the same weights and logs
as an uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from hf_icl.errors import HfIclError
from hf_icl.models import loss_sum
from hf_icl.results import RunFolder
from hf_icl.runtime import JobOptions
from hf_icl.training.checkpoints import Checkpoints, load_newest
from hf_icl.training.config import TrainConfig, TrainSection
from hf_icl.training.evaluation import evaluate_learner
from hf_icl.training.setup import build_learner
from hf_icl.training.tasks import PreparedTasks, TrainTask


@dataclass
class Progress:
    """Checkpointed with the model: the step (= data stream position) and the sums since the
    last metrics line (loss and tokens summed over processes; seconds of training)."""

    step: int = 0
    loss: float = 0.0
    tokens: int = 0
    steps: int = 0
    seconds: float = 0.0

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def check_environment(section: TrainSection) -> None:
    """What this machine cannot run, checked before the run folder is written. An FSDP launch
    (``accelerate launch`` sets ACCELERATE_USE_FSDP) needs a GPU: accelerate selects FSDP only
    for GPU runs, so with ``cpu=True`` it would silently train as DDP, every process holding
    the whole model."""
    if torch.cuda.is_available():
        return
    if section.mixed_precision == "fp16":
        raise HfIclError("train.mixed_precision: fp16 needs a GPU; use bf16 on CPU")
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes", "on"):
        raise HfIclError(
            "accelerate launch asked for FSDP (ACCELERATE_USE_FSDP) but this machine "
            "has no GPU, and accelerate runs FSDP only on GPUs (on CPU it would "
            "silently be DDP); launch with accelerate_configs/ddp_2proc.yaml instead"
        )


def make_accelerator(section: TrainSection, folder: RunFolder):
    """CPU or GPU from what is available; TensorBoard only if it is installed."""
    from accelerate import Accelerator

    check_environment(section)
    cuda = torch.cuda.is_available()
    tracker = "tensorboard" if importlib.util.find_spec("tensorboard") else None
    return Accelerator(
        cpu=not cuda,
        mixed_precision=section.mixed_precision,
        step_scheduler_with_optimizer=False,
        log_with=tracker,
        project_dir=str(folder.path),
    )


def keep_trainable(models: list, weights: list, output_dir: str) -> None:
    """Checkpoints hold only trainable tensors (a LoRA checkpoint of SmolLM2 is a few MB):
    frozen weights are rebuilt from the model spec on resume."""
    for i, model in enumerate(models):
        if i < len(weights):
            names = {n for n, p in model.named_parameters() if p.requires_grad}
            weights[i] = OrderedDict((k, v) for k, v in weights[i].items() if k in names)


def resume(accelerator, checkpoints: Checkpoints, folder: RunFolder) -> bool:
    """Load the newest complete checkpoint; keep only the metrics lines up to its step."""
    step = load_newest(accelerator, checkpoints)
    if accelerator.is_main_process:
        kept = [r for r in folder.read_jsonl("metrics.jsonl") if r["step"] <= step]
        folder.write_text("metrics.jsonl", "".join(_line(r) for r in kept))
    accelerator.wait_for_everyone()
    return step >= 0


def _line(row: dict) -> str:
    return json.dumps(row, sort_keys=True) + "\n"


def my_slices(count: int, accumulation: int, rank: int, world: int) -> list[slice]:
    """This process's episodes of each accumulation step of a global batch of ``count``."""
    per_pass = count // accumulation
    size = per_pass // world
    if size * world != per_pass:
        raise HfIclError(
            f"train.batch_size: {count} episodes do not split into "
            f"{accumulation} accumulation steps × {world} processes"
        )
    return [
        slice(a * per_pass + rank * size, a * per_pass + (rank + 1) * size)
        for a in range(accumulation)
    ]


def train_step(
    model,
    optimizer,
    scheduler,
    accelerator,
    task: TrainTask,
    step: int,
    section: TrainSection,
    episode_first: int,
) -> tuple[torch.Tensor, int]:
    """One optimizer step on one global batch; returns (this process's loss share, tokens)."""
    dims, num_examples = task.stage(step, section)
    episodes = task.draw(episode_first, section.batch_size, num_examples, "train", dims)
    final_only = section.loss_on == "final"
    labels = section.batch_size * (1 if final_only else num_examples)
    world = accelerator.num_processes
    slices = my_slices(
        section.batch_size, section.gradient_accumulation_steps, accelerator.process_index, world
    )
    loss_share, tokens = torch.zeros((), device=accelerator.device), 0
    for a, part in enumerate(slices):
        batch = task.render(episodes[part], final_only).to(accelerator.device)
        last = a == len(slices) - 1
        with nullcontext() if last else accelerator.no_sync(model):
            outputs = model(batch.rows, batch.cols, **batch.inputs)
            # DDP averages gradients over processes: scale so that they sum instead.
            loss = loss_sum(outputs, batch.targets) * world / labels
            accelerator.backward(loss)
        loss_share += loss.detach() / world
        tokens += batch.num_tokens
    if section.max_grad_norm is not None:
        accelerator.clip_grad_norm_(model.parameters(), section.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_share, tokens


def make_optimizer(model, section: TrainSection):
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    if section.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=section.lr, weight_decay=section.weight_decay)
    else:
        optimizer = torch.optim.AdamW(
            params,
            lr=section.lr,
            betas=tuple(section.adam_betas),
            eps=section.adam_epsilon,
            weight_decay=section.weight_decay,
        )
    scheduler = get_scheduler(
        section.scheduler,
        optimizer,
        num_warmup_steps=section.warmup_steps,
        num_training_steps=section.steps,
    )
    return optimizer, scheduler


def log_rows(accelerator, folder: RunFolder, rows: list[dict]) -> None:
    if not accelerator.is_main_process:
        return
    folder.append_jsonl("metrics.jsonl", rows)
    for row in rows:
        prefix = "train/"
        if row["kind"] == "eval":
            prefix = f"eval/{row['task']}/{row['split']}/"
        elif row["kind"] == "diagnostics":
            prefix = f"diagnostics/{row['task']}/{row['name']}/"
        scalars = {
            prefix + k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"
        }
        accelerator.log(scalars, step=row["step"])


def train_line(progress: Progress, scheduler) -> dict:
    """The metrics line of the steps since the last one; resets the sums."""
    row = {
        "kind": "train",
        "step": progress.step,
        "loss": progress.loss / progress.steps,
        "lr": scheduler.get_last_lr()[0],
        "tokens": progress.tokens,
        "tokens_per_s": round(progress.tokens / max(progress.seconds, 1e-9), 1),
    }
    progress.loss, progress.tokens, progress.steps, progress.seconds = 0.0, 0, 0, 0.0
    return row


def train(
    config: TrainConfig,
    folder: RunFolder,
    options: JobOptions,
    prepared: PreparedTasks | None = None,
) -> dict | None:
    """Run (or resume) meta-training into ``folder``; the main process returns the results.
    ``prepared``: the tasks the train job's prepare built and checked (else built here)."""
    from hf_icl.training.report import finish, push_model, tracker_config

    if folder.file("results.json").is_file():  # written last: the run is complete
        if options.shard.rank != 0:
            return None
        if options.push_to_hub:
            push_model(folder.file("model"), options.push_to_hub, options.private)
        return json.loads(folder.file("results.json").read_text(encoding="utf-8"))
    section = config.train
    accelerator = make_accelerator(section, folder)
    my_slices(
        section.batch_size, section.gradient_accumulation_steps, 0, accelerator.num_processes
    )  # a batch that does not split fails before loading
    learner, tokenizer, tasks = build_learner(config, prepared)
    optimizer, scheduler = make_optimizer(learner, section)
    model, optimizer, scheduler = accelerator.prepare(learner, optimizer, scheduler)
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    accelerator.register_save_state_pre_hook(keep_trainable)
    checkpoints = Checkpoints(folder.file("checkpoints"), section.keep_checkpoints)
    if not resume(accelerator, checkpoints, folder):
        log_rows(accelerator, folder, evaluate_learner(model, tasks, section, accelerator, 0))
    if accelerator.log_with:
        accelerator.init_trackers("runs", config=tracker_config(config))
    trained = [t for t in tasks if not t.eval_only]
    bar = tqdm(
        total=section.steps,
        initial=progress.step,
        desc="train",
        unit="step",
        disable=not (options.progress and accelerator.is_main_process),
    )
    while progress.step < section.steps:
        step = progress.step
        task = trained[step % len(trained)]
        first = (step // len(trained)) * section.batch_size
        started = time.perf_counter()
        loss, tokens = train_step(
            model, optimizer, scheduler, accelerator, task, step, section, first
        )
        totals = accelerator.reduce(
            torch.stack([loss, torch.tensor(float(tokens), device=loss.device)]), "sum"
        )
        progress.step, progress.steps = step + 1, progress.steps + 1
        progress.loss += float(totals[0])
        progress.tokens += int(totals[1])
        progress.seconds += time.perf_counter() - started
        bar.update()
        bar.set_postfix(
            loss=f"{float(totals[0]):.4f}",
            tok_s=f"{progress.tokens / max(progress.seconds, 1e-9):.0f}",
        )
        if progress.step % section.log_every == 0 or progress.step == section.steps:
            log_rows(accelerator, folder, [train_line(progress, scheduler)])
        if progress.step % section.eval_every == 0 or progress.step == section.steps:
            log_rows(
                accelerator,
                folder,
                evaluate_learner(model, tasks, section, accelerator, progress.step),
            )
        if section.checkpoint_every and progress.step % section.checkpoint_every == 0:
            checkpoints.save(accelerator, progress.step)
    bar.close()
    results = finish(config, folder, options, accelerator, model, tokenizer, tasks)
    accelerator.end_training()
    return results
