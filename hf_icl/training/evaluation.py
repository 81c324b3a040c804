"""Evaluation while training: learning curves by position on seen and unseen tasks.

Each evaluation draws fixed episodes (the same at every step) from the meta-training tasks
("seen": split 'train', episode indices far beyond the training stream) and from unseen tasks
("unseen": split 'test'). An episode is one sequence; position k's prediction uses the k
examples before it (the sequential protocol), so the curve shows learning within the episode
and its slope is the within-episode improvement. Metric: accuracy over the label tokens, or,
for a regression read-out, squared error divided by the task's error scale (Garg's
normalisation: predicting 0 scores about 1). Processes split the episodes and gather them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hf_icl.episode import Episode
from hf_icl.models import LabelBatch
from hf_icl.training.tasks import TrainTask

SPLIT_NAMES = {"train": "seen", "test": "unseen"}


def batch_values(outputs: torch.Tensor, batch: LabelBatch, scales: torch.Tensor) -> torch.Tensor:
    """(episodes, positions) per-label metric: 1/0 correct, or normalised squared error."""
    values = torch.zeros(int(batch.rows.max()) + 1, int(batch.examples.max()) + 1)
    last = outputs[-1].float()
    if batch.candidates is None:
        per_label = (last - batch.targets).pow(2) / scales[batch.rows]
    else:
        predicted = last[:, batch.candidates].argmax(-1)
        gold = (batch.targets[:, None] == batch.candidates[None]).float().argmax(-1)
        per_label = (predicted == gold).float()
    values[batch.rows.cpu(), batch.examples.cpu()] = per_label.cpu()
    return values


def _my_share(count: int, rank: int, world: int) -> list[int]:
    """Equal numbers of episodes per process (FSDP needs every process in every forward);
    past the end, a process repeats the last episode and its result is dropped."""
    per_process = math.ceil(count / world)
    return [min(rank + world * j, count - 1) for j in range(per_process)]


def curve_values(
    model, task: TrainTask, episodes: list[Episode], accelerator, batch_size: int
) -> np.ndarray:
    """(episodes, positions) metric values, computed by all processes together."""
    from accelerate.utils import gather_object

    mine = _my_share(len(episodes), accelerator.process_index, accelerator.num_processes)
    rows = []
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        picked = [episodes[i] for i in chunk]
        batch = task.render(picked, False).to(accelerator.device)
        scales = torch.tensor(
            [float(ep.meta.get("error_scale", 1.0)) for ep in picked], device=accelerator.device
        )
        outputs = model(batch.rows, batch.cols, **batch.inputs)
        values = batch_values(outputs, batch, scales)
        rows += [(i, values[j].tolist()) for j, i in enumerate(chunk)]
    gathered = dict(gather_object(rows))
    return np.array([gathered[i] for i in range(len(episodes))])


def summarise(curve: np.ndarray) -> dict:
    """Mean over positions, mean of the last quarter, and the within-episode slope."""
    positions = np.arange(len(curve))
    tail = curve[-max(1, len(curve) // 4) :]
    slope = float(np.polyfit(positions, curve, 1)[0]) if len(curve) > 1 else 0.0
    return {"mean": float(curve.mean()), "final": float(tail.mean()), "slope": slope}


def evaluate_learner(model, tasks: list[TrainTask], section, accelerator, step: int) -> list[dict]:
    """One metrics row per task × split (seen, unseen) with the full curve."""
    model.eval()
    lm_config = accelerator.unwrap_model(model).lm.config
    trained_loops = getattr(lm_config, "loops", None)
    runs = [(split, None) for split in ("train", "test")] + [
        ("test", b) for b in getattr(lm_config, "eval_loops", [])
    ]
    rows = []
    try:
        with torch.no_grad():
            for task in tasks:
                for split, loops in runs:
                    if task.eval_only and split == "train":
                        continue
                    name = SPLIT_NAMES[split] + ("" if loops is None else f", {loops} loops")
                    if trained_loops is not None:  # test-time loops of a looped model
                        lm_config.loops = loops or trained_loops
                    episodes = task.eval_episodes(split, section.eval_episodes, section.eval_length)
                    values = curve_values(
                        model, task, episodes, accelerator, section.eval_batch_size
                    )
                    curve = values.mean(0)
                    rows.append(
                        {
                            "kind": "eval",
                            "step": step,
                            "task": task.name,
                            "split": name,
                            "metric": task.metric,
                            **summarise(curve),
                            "curve": [round(float(v), 5) for v in curve],
                        }
                    )
    finally:
        if trained_loops is not None:
            lm_config.loops = trained_loops
    if section.diagnostics:
        from hf_icl.training.diagnostics import diagnostic_rows

        rows += diagnostic_rows(accelerator.unwrap_model(model), tasks, section, step)
    model.train()
    return rows


def baseline_curves(specs: list, tasks: list[TrainTask], section) -> list[dict]:
    """The baselines' curves on the same unseen evaluation episodes the model is scored on."""
    from hf_icl.baselines import make_baseline  # scikit-learn: imported only when needed
    from hf_icl.baselines.planning import applies, position_episode, split_spec

    rows = []
    for i, spec in enumerate(specs):
        name, params = split_spec(spec, i)
        for task in tasks:
            episodes = task.eval_episodes("test", section.eval_episodes, section.eval_length)
            baseline = make_baseline(name, **params)
            if not applies(baseline, episodes[0]):
                continue
            # tuning needs queries: the last example of each meta-train episode is its query;
            # one query per episode, so take enough episodes for a stable choice
            held_out = task.eval_episodes(
                "train", max(4 * section.eval_episodes, 256), section.eval_length
            )
            baseline.tune([position_episode(ep, len(ep.demo_y) - 1) for ep in held_out])
            curve = np.array(
                [_baseline_value(baseline, episodes, k) for k in range(len(episodes[0].demo_y))]
            )
            rows.append(
                {
                    "kind": "baseline",
                    "baseline": baseline.label,
                    "task": task.name,
                    "split": "unseen",
                    **summarise(curve),
                    "curve": [round(float(v), 5) for v in curve],
                }
            )
    return rows


def _baseline_value(baseline, episodes: list[Episode], k: int) -> float:
    from hf_icl.baselines.planning import position_episode

    preds = baseline.predict([position_episode(ep, k) for ep in episodes], k)
    gold = np.array([ep.demo_y[k] for ep in episodes])
    pred = np.array([p.pred[0] for p in preds])
    if episodes[0].is_regression:
        scales = np.array([float(ep.meta.get("error_scale", 1.0)) for ep in episodes])
        return float(np.mean((pred - gold) ** 2 / scales))
    return float(np.mean(pred == gold))
