"""`hf-icl evaluate`: whole k-shot learning curves in one run, resumable and shardable.

A unit is model × task × seed × demo order with all shot counts; its samples are appended to
the results folder when it finishes, so a rerun skips it.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hf_icl.config import from_dict
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.models import load_model
from hf_icl.render import RenderOptions, TextRenderer
from hf_icl.results import RunFolder
from hf_icl.samplers import TaskSampler, rng_for
from hf_icl.scoring import score_queries, score_sequences
from hf_icl.tasks import TaskDef, load_task


@dataclass
class TaskRun:
    """A task ready to evaluate: definition, sampler and renderer options."""

    definition: TaskDef
    sampler: TaskSampler
    render: RenderOptions

    @property
    def name(self) -> str:
        return self.definition.name


@dataclass(frozen=True)
class Unit:
    model: int  # index into config.models
    task: int
    seed: int
    order: int

    def key(self, config: EvaluateConfig, tasks: list[TaskRun]) -> str:
        return f"{config.models[self.model].label}|{tasks[self.task].name}|{self.seed}|{self.order}"


def prepare_tasks(config: EvaluateConfig) -> list[TaskRun]:
    runs = []
    for i, ref in enumerate(config.tasks):
        definition, sampler = load_task(ref, where=f"tasks.{i}")
        render = from_dict(RenderOptions, definition.render, source=definition.source,
                           prefix="render")
        if render.renderer != "text":
            raise HfIclError(f"{definition.source}: render.renderer {render.renderer!r} needs a "
                             "trained read-in; evaluate pretrained LLMs with renderer: text")
        runs.append(TaskRun(definition, sampler, render))
    names = [t.name for t in runs]
    if len(set(names)) != len(names):
        raise HfIclError(f"tasks: duplicate task name in {names}; give one an alias with 'as:'")
    return runs


def units_of(config: EvaluateConfig, tasks: list[TaskRun]) -> list[Unit]:
    return [Unit(m, t, s, o) for m in range(len(config.models)) for t in range(len(tasks))
            for s in range(config.num_seeds) for o in range(config.demo_orders)]


def draw_episode(config: EvaluateConfig, task: TaskRun, seed: int, order: int) -> Episode:
    """The same episode for every model: it depends only on task, seed and order."""
    max_shots = max(config.shots)
    if config.protocol == "sequential":
        episode = task.sampler.episode(seed, max_shots + 1, 0, split="test")
    else:
        episode = task.sampler.episode(seed, max_shots, config.num_queries, split="test")
    if order == 0:
        return episode
    perm = rng_for(config.seed, "order", task.name, seed, order).permutation(episode.num_demos)
    return episode.with_demos([int(i) for i in perm])


def _prediction(renderer: TextRenderer, episode: Episode, scores: np.ndarray) -> dict[str, Any]:
    """Turn one row of candidate scores into a prediction (expected value for regression)."""
    if not episode.is_regression:
        return {"pred": int(np.argmax(scores))}
    probs = np.exp(scores - np.logaddexp.reduce(scores))
    centres = renderer.bin_centres()
    return {"pred": float(probs @ centres), "pred_argmax": float(centres[int(np.argmax(scores))])}


def _gold(episode: Episode, y) -> Any:
    return float(y) if episode.is_regression else int(y)


def _base_row(unit: Unit, key: str, model: str, task: TaskRun, episode: Episode) -> dict:
    row = {"unit": key, "model": model, "task": task.name, "seed": unit.seed,
           "order": unit.order}
    if episode.is_regression:
        row["scale"] = float(episode.meta.get("error_scale", 1.0))
    return row


def score_unit_queries(model, renderer: TextRenderer, config: EvaluateConfig, task: TaskRun,
                       episode: Episode, base: dict) -> list[dict]:
    rendered = renderer.render_episode(episode)
    scores = score_queries(model, rendered, config.shots, pack_tokens=config.pack_tokens,
                           length_normalise=task.render.length_normalise,
                           calibrate=task.render.calibrate, where=f"task {task.name!r}")
    rows = []
    for k in config.shots:
        for q in range(episode.num_queries):
            rows.append({**base, "shots": k, "query": q,
                         "query_id": episode.query_ids[q] if episode.query_ids else q,
                         "demo_ids": episode.demo_ids[:k],
                         **_prediction(renderer, episode, scores[k][q]),
                         "gold": _gold(episode, episode.query_y[q]),
                         "scores": [round(float(v), 6) for v in scores[k][q]]})
    return rows


def score_unit_sequential(model, renderer: TextRenderer, config: EvaluateConfig, task: TaskRun,
                          episode: Episode, base: dict) -> list[dict]:
    sequence = renderer.render_sequence(episode)
    scores = score_sequences(model, [sequence], batch_size=1)[0]
    return [{**base, "shots": k, "query": k,
             **_prediction(renderer, episode, scores[k]),
             "gold": _gold(episode, episode.demo_y[k]),
             "scores": [round(float(v), 6) for v in scores[k]]} for k in config.shots]


def _done_units(folder: RunFolder, expected: dict[str, int]) -> set[str]:
    """Units whose every sample is in samples.jsonl (a torn unit is redone)."""
    counts: dict[str, int] = {}
    for row in folder.read_jsonl("samples.jsonl"):
        counts[row["unit"]] = counts.get(row["unit"], 0) + 1
    return {u for u, n in counts.items() if expected.get(u) == n}


def _drop_partial(folder: RunFolder, done: set[str]) -> None:
    rows = folder.read_jsonl("samples.jsonl")
    kept = [r for r in rows if r["unit"] in done]
    if len(kept) != len(rows) or folder.file("samples.jsonl").exists():
        folder.file("samples.jsonl").unlink(missing_ok=True)
        if kept:
            folder.append_jsonl("samples.jsonl", kept)


def rows_per_unit(config: EvaluateConfig) -> int:
    per_shot = 1 if config.protocol == "sequential" else config.num_queries
    return per_shot * len(config.shots)


def run_units(config: EvaluateConfig, tasks: list[TaskRun], folder: RunFolder,
              units: list[Unit], progress: bool = True) -> None:
    """Score every given unit not yet in samples.jsonl, appending each as it finishes."""
    per_unit = rows_per_unit(config)
    done = _done_units(folder, {u.key(config, tasks): per_unit for u in units})
    _drop_partial(folder, done)
    todo = [u for u in units if u.key(config, tasks) not in done]
    bar = tqdm(total=len(todo), desc="units", disable=not progress or not todo, unit="unit")
    for m, spec in enumerate(config.models):
        mine = [u for u in todo if u.model == m]
        if not mine:
            continue
        bar.set_postfix_str(f"loading {spec.label}")
        model, tokenizer = load_model(spec)
        for unit in mine:
            task = tasks[unit.task]
            bar.set_postfix_str(f"{spec.label} · {task.name} · seed {unit.seed}")
            renderer = TextRenderer(tokenizer, task.render)
            episode = draw_episode(config, task, unit.seed, unit.order)
            base = _base_row(unit, unit.key(config, tasks), spec.label, task, episode)
            score = score_unit_sequential if config.protocol == "sequential" else score_unit_queries
            folder.append_jsonl("samples.jsonl", score(model, renderer, config, task, episode, base))
            bar.update()
        del model
        gc.collect()
    bar.close()


def resolve_models(config: EvaluateConfig) -> None:
    labels = [m.label for m in config.models]
    if len(set(labels)) != len(labels):
        raise HfIclError(f"models: duplicate model label in {labels}; set 'name' to tell them apart")


def evaluate(config: EvaluateConfig, folder: RunFolder, progress: bool = True) -> dict:
    """Run (or resume) an evaluation into ``folder``; return the results dict."""
    from hf_icl.report import write_reports

    resolve_models(config)
    tasks = prepare_tasks(config)
    units = units_of(config, tasks)
    run_units(config, tasks, folder, units, progress)
    return write_reports(config, tasks, folder, [u.key(config, tasks) for u in units])

