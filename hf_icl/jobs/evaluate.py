"""`hf-icl evaluate`: whole k-shot learning curves in one run, resumable and shardable.

A unit is model × task × seed × demo order with all shot counts; its samples are appended to
the results folder when it finishes, so a rerun skips it.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.jobs.baselines import (
    BaselineRun,
    append_units,
    baseline_rows,
    plan_baselines,
    tune_baseline,
)
from hf_icl.jobs.evaluate_config import EvaluateConfig, split_task_models
from hf_icl.jobs.samples import position_row, query_row, rounded
from hf_icl.models import ModelSpec, check_model_spec, load_model
from hf_icl.render import RenderedEpisode, RenderOptions, TextRenderer
from hf_icl.results import RunFolder
from hf_icl.runtime import JobOptions, Shard
from hf_icl.samplers import TaskSampler, rng_for
from hf_icl.scoring import score_queries, score_sequences
from hf_icl.tasks import Entry, TaskDef, load_task, located, parse_section


@dataclass
class TaskRun:
    """A task ready to evaluate: definition, sampler and renderer options."""

    definition: TaskDef
    sampler: TaskSampler
    render: RenderOptions
    models: frozenset[int] | None = None  # indices into config.models; None = all

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


def prepare_tasks(config: EvaluateConfig, source: str = "config") -> list[TaskRun]:
    """Every task entry loaded and checked; errors name ``source`` and the entry (tasks.i)."""
    runs = []
    for i, ref in enumerate(config.tasks):
        where = Entry(source, f"tasks.{i}")
        ref, models = split_task_models(ref, [m.label for m in config.models], where.key)
        definition, sampler = load_task(ref, where)
        render = parse_section(definition, RenderOptions, "render", definition.render, where)
        if render.renderer != "text":
            raise HfIclError(f"{where}: render.renderer {render.renderer!r} needs a trained "
                             "read-in; evaluate pretrained LLMs with renderer: text")
        runs.append(TaskRun(definition, sampler, render, models))
    names = [t.name for t in runs]
    if len(set(names)) != len(names):
        raise HfIclError(f"{source}: tasks: duplicate task name in {names}; give one an alias "
                         "with 'as:'")
    return runs


def first_episodes(config: EvaluateConfig, tasks: list[TaskRun], source: str) -> list[Episode]:
    """Each task's first episode (seed 0, order 0), after checking shots against its pool."""
    needed = max(config.shots) + (1 if config.protocol == "sequential" else 0)
    episodes = []
    for i, task in enumerate(tasks):
        where = Entry(source, f"tasks.{i}")
        pool = task.sampler.max_demos()
        if pool is not None and needed > pool:
            raise HfIclError(f"{where}: shots: {max(config.shots)} demonstrations requested but "
                             f"task {task.name!r} has {pool} examples to draw them from; "
                             "lower shots")
        with located(where):
            episodes.append(draw_episode(config, task, 0, 0))
    return episodes


def prompt_length(rendered: RenderedEpisode, shots: int) -> int:
    """Tokens of the longest prompt after ``shots`` demonstrations, label included."""
    return rendered.boundaries[shots] + max(len(q) for q in rendered.query_ids) + \
        max(len(c) for c in rendered.candidates)


def check_prompt_length(rendered: RenderedEpisode, shots: int, limit: int, where: Entry) -> None:
    """An over-long template and too many shots are different mistakes: say which."""
    if prompt_length(rendered, 0) > limit:
        raise HfIclError(f"{where}: template too long: a prompt without demonstrations is "
                         f"{prompt_length(rendered, 0)} tokens, over the model's context window "
                         f"of {limit}; shorten the template or the inputs")
    if prompt_length(rendered, shots) > limit:
        fit = max(k for k in range(shots + 1) if prompt_length(rendered, k) <= limit)
        raise HfIclError(f"{where}: shots: a prompt with {shots} demonstrations is "
                         f"{prompt_length(rendered, shots)} tokens, over the model's context "
                         f"window of {limit}; at most {fit} fit")


def tokenizer_and_window(spec: ModelSpec):
    """The spec's tokenizer and context window, without loading its weights."""
    from hf_icl import models

    tiny = spec.spec.startswith("tiny-random-")
    source = models.resolve_source("smollm2-135m" if tiny else spec.spec)
    tokenizer = models._load_tokenizer(source, spec)
    if tiny:
        config = models.tiny_config(spec.spec.removeprefix("tiny-random-"), len(tokenizer))
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(source, revision=spec.revision,
                                                trust_remote_code=spec.trust_remote_code)
        except (OSError, ValueError):
            return tokenizer, None  # loading the model reports it
    return tokenizer, getattr(config.get_text_config(), "max_position_embeddings", None)


def check_prompts(config: EvaluateConfig, tasks: list[TaskRun], episodes: list[Episode],
                  source: str) -> None:
    """Label words and prompt lengths with each model's real tokenizer (weights not loaded)."""
    seen: set[tuple] = set()
    for m, spec in enumerate(config.models):
        key = (spec.spec, spec.revision, spec.trust_remote_code, spec.spec.startswith("tiny-random-"))
        if key in seen:
            continue
        seen.add(key)
        with located(f"{source}: models.{m}"):
            tokenizer, limit = tokenizer_and_window(spec)
        for i, (task, episode) in enumerate(zip(tasks, episodes)):
            if task.models is not None and m not in task.models:
                continue
            where = Entry(source, f"tasks.{i}")
            renderer = TextRenderer(tokenizer, task.render)
            with located(where):
                if config.protocol == "sequential":
                    sequence = renderer.render_sequence(episode)
                    if limit is not None and len(sequence.ids) > limit:
                        raise HfIclError(f"shots: a sequence of {len(episode.demo_y)} examples "
                                         f"is {len(sequence.ids)} tokens, over the model's "
                                         f"context window of {limit}; lower shots")
                    continue
                rendered = renderer.render_episode(episode)
            if limit is not None:
                check_prompt_length(rendered, max(config.shots), limit, where)


def check_models(config: EvaluateConfig, source: str) -> None:
    """Model specs are known, present and loadable, checked without loading them."""
    resolve_models(config, source)
    for m, spec in enumerate(config.models):
        check_model_spec(spec, f"{source}: models.{m}")


@dataclass
class EvaluatePlan:
    """What validation built, reused by the run so nothing is loaded twice."""

    tasks: list[TaskRun]
    baselines: list[BaselineRun]


def prepare(config: EvaluateConfig, source: str = "config",
            options: JobOptions | None = None) -> EvaluatePlan:
    """Every check an evaluation needs before its folder exists: models, tasks, shots against
    each pool, baselines, label words and prompt lengths with each model's tokenizer."""
    check_models(config, source)
    tasks = prepare_tasks(config, source)
    episodes = first_episodes(config, tasks, source)
    with located(source):
        baselines = plan_baselines(config, tasks, episodes)
    check_prompts(config, tasks, episodes, source)
    return EvaluatePlan(tasks, baselines)


def units_of(config: EvaluateConfig, tasks: list[TaskRun]) -> list[Unit]:
    return [Unit(m, t, s, o) for m in range(len(config.models)) for t in range(len(tasks))
            if tasks[t].models is None or m in tasks[t].models
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


def _base_row(seed: int, order: int, key: str, model: str, task: TaskRun,
              episode: Episode) -> dict:
    row = {"unit": key, "model": model, "task": task.name, "seed": seed, "order": order}
    if episode.is_regression:
        row["scale"] = float(episode.meta.get("error_scale", 1.0))
    return row


def score_unit_queries(model, renderer: TextRenderer, config: EvaluateConfig, task: TaskRun,
                       episode: Episode, base: dict) -> list[dict]:
    rendered = renderer.render_episode(episode)
    scores = score_queries(model, rendered, config.shots, pack_tokens=config.pack_tokens,
                           length_normalise=task.render.length_normalise,
                           calibrate=task.render.calibrate, where=f"task {task.name!r}")
    return [{**query_row(base, episode, k, q), **_prediction(renderer, episode, scores[k][q]),
             "scores": rounded(scores[k][q])}
            for k in config.shots for q in range(episode.num_queries)]


def score_unit_sequential(model, renderer: TextRenderer, config: EvaluateConfig, task: TaskRun,
                          episode: Episode, base: dict) -> list[dict]:
    sequence = renderer.render_sequence(episode)
    scores = score_sequences(model, [sequence], batch_size=1)[0]
    return [{**position_row(base, episode, k), **_prediction(renderer, episode, scores[k]),
             "scores": rounded(scores[k])} for k in config.shots]


def merge_parts(folder: RunFolder, shard: Shard | None = None) -> None:
    """Fold the per-process logs of a sharded run into samples.jsonl (complete lines only).

    Given the shard, every part log is first recorded as the run's own (the other processes
    write them without touching the run marker)."""
    if shard is not None:
        for rank in range(shard.world):
            folder.file(Shard(rank, shard.world).log)
    parts = sorted(folder.path.glob("samples.part-*.jsonl"))
    if not parts:
        return
    rows = folder.read_jsonl("samples.jsonl")
    for part in parts:
        rows += folder.read_jsonl(part.name)
    folder.write_jsonl("samples.jsonl", rows)
    for part in parts:
        part.unlink()


def done_units(folder: RunFolder, expected: dict[str, int]) -> set[str]:
    """Units whose every sample is in samples.jsonl (a torn unit is redone)."""
    counts: dict[str, int] = {}
    for row in folder.read_jsonl("samples.jsonl"):
        counts[row["unit"]] = counts.get(row["unit"], 0) + 1
    return {u for u, n in counts.items() if expected.get(u) == n}


def drop_partial(folder: RunFolder, done: set[str]) -> None:
    """Keep only finished units, so appends after a crash start from a clean log."""
    folder.truncate_torn("samples.jsonl")
    rows = folder.read_jsonl("samples.jsonl")
    kept = [r for r in rows if r["unit"] in done]
    if len(kept) != len(rows):
        folder.write_jsonl("samples.jsonl", kept)


def rows_per_unit(config: EvaluateConfig) -> int:
    per_shot = 1 if config.protocol == "sequential" else config.num_queries
    return per_shot * len(config.shots)


def run_model_units(config: EvaluateConfig, tasks: list[TaskRun], folder: RunFolder,
                    todo: list[Unit], log: str, progress: bool = True) -> None:
    """Score every given unit, appending each one's samples as it finishes."""
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
            base = _base_row(unit.seed, unit.order, unit.key(config, tasks), spec.label, task, episode)
            score = score_unit_sequential if config.protocol == "sequential" else score_unit_queries
            folder.append_jsonl(log, score(model, renderer, config, task, episode, base))
            bar.update()
        del model
        gc.collect()
    bar.close()


def baseline_unit_keys(config: EvaluateConfig, tasks: list[TaskRun],
                       runs: list[BaselineRun]) -> list[list[str]]:
    pairs = [(s, o) for s in range(config.num_seeds) for o in range(config.demo_orders)]
    return [[f"{run.label}|{tasks[run.task].name}|{s}|{o}" for s, o in pairs] for run in runs]


def run_baseline_units(config: EvaluateConfig, tasks: list[TaskRun], folder: RunFolder,
                       runs: list[BaselineRun], keys: list[list[str]], done: set[str],
                       log: str, progress: bool = True) -> None:
    pairs = [(s, o) for s in range(config.num_seeds) for o in range(config.demo_orders)]
    pending = [(run, run_keys) for run, run_keys in zip(runs, keys)
               if any(key not in done for key in run_keys)]
    bar = tqdm(pending, desc="baselines", unit="run", disable=not progress or not pending)
    with single_thread():
        for run, run_keys in bar:
            bar.set_postfix_str(f"{run.baseline.label} · {tasks[run.task].name}")
            todo = [i for i, key in enumerate(run_keys) if key not in done]
            task = tasks[run.task]
            tune_baseline(config, run, task.sampler)
            episodes = [draw_episode(config, task, *pairs[i]) for i in todo]
            bases = [_base_row(pairs[i][0], pairs[i][1], run_keys[i], run.label, task, ep)
                     for i, ep in zip(todo, episodes)]
            append_units(folder, log, baseline_rows(config, run, episodes, bases))


@contextmanager
def single_thread():
    """Small per-episode learners run far faster on one thread than contending for two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_models(config: EvaluateConfig, source: str = "config") -> None:
    labels = [m.label for m in config.models]
    if len(set(labels)) != len(labels):
        raise HfIclError(f"{source}: models: duplicate model label in {labels}; set 'name' to tell them apart")


def evaluate(config: EvaluateConfig, folder: RunFolder, progress: bool = True,
             shard: Shard | None = None, plan: EvaluatePlan | None = None) -> dict | None:
    """Run (or resume) an evaluation into ``folder``; the main process returns the results.

    With several processes each scores every world-th unit into its own log; the main process
    runs the baselines, merges the logs and writes the reports, so files equal a 1-process run.
    """
    from hf_icl.report import write_reports

    shard = shard or Shard()
    plan = plan or prepare(config)
    tasks, runs = plan.tasks, plan.baselines
    units = units_of(config, tasks)
    model_keys = [u.key(config, tasks) for u in units]
    base_keys = baseline_unit_keys(config, tasks, runs)
    all_keys = model_keys + [k for ks in base_keys for k in ks]
    if shard.rank == 0:
        merge_parts(folder, shard)
        drop_partial(folder, done_units(folder, dict.fromkeys(all_keys, rows_per_unit(config))))
    shard.barrier()
    done = done_units(folder, dict.fromkeys(all_keys, rows_per_unit(config)))
    todo = [u for u, k in zip(units, model_keys) if k not in done]
    run_model_units(config, tasks, folder, shard.mine(todo), shard.log,
                    progress and shard.rank == 0)
    if shard.rank == 0:
        run_baseline_units(config, tasks, folder, runs, base_keys, done, shard.log, progress)
    shard.barrier()
    if shard.rank != 0:
        return None
    merge_parts(folder)
    return write_reports(config, tasks, folder, all_keys)


Config = EvaluateConfig


def run(config: EvaluateConfig, folder: RunFolder, options: JobOptions,
        plan: EvaluatePlan | None = None) -> dict | None:
    return evaluate(config, folder, options.progress, options.shard, plan)


def summary(results: dict) -> str:
    """Console summary: one learning curve per model × task."""
    lines = []
    rows = [s for s in results["summary"] if s["metric"] in ("accuracy", "nse")]
    for key in dict.fromkeys((s["model"], s["task"], s["metric"]) for s in rows):
        items = sorted((s for s in rows if (s["model"], s["task"], s["metric"]) == key),
                       key=lambda s: s["shots"])
        curve = "  ".join(f"{s['shots']}:{s['mean']:.3f}" for s in items)
        lines.append(f"{key[0]:<22} {key[1]:<22} {key[2]:<9} {curve}")
    return "\n".join(lines)
