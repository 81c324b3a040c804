"""`hf-icl compare`: in-context learning against fine-tuning on the same demonstrations.

Dai et al.'s protocol on every model × task × seed × demo order (a unit, resumable like
evaluate's): the test queries are scored zero-shot (ZS), after the first k demonstrations
(ICL), and zero-shot by the model fine-tuned on exactly those k demonstrations by each arm
(FT), whose base weights are restored before the next arm. Attention captures at the scored
position give per-query SimAOU, SimAM and Kendall τ, stored with the predictions; Rec2FTP is
computed over all queries when reporting. `controls: [untrained]` reruns everything on each
model's architecture with random weights (Deutch et al.).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hf_icl.analysis import Captured, capture_queries, record_kv_gradients, similarities
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.finetune import FtArm, HeldOut, choose_lr, make_arm, training_demos
from hf_icl.jobs.compare_config import CompareConfig
from hf_icl.jobs.compare_report import reports
from hf_icl.jobs.evaluate import EvaluatePlan
from hf_icl.jobs.evaluate import prepare as prepare_evaluation
from hf_icl.jobs.samples import unit_row
from hf_icl.jobs.task_runs import TaskRun, unit_demos
from hf_icl.jobs.units import Unit, UnitPlan, model_learner, run_units
from hf_icl.models import ModelSpec
from hf_icl.render import RenderedEpisode, TextRenderer
from hf_icl.results import RunFolder, write_reports
from hf_icl.runtime import JobOptions, Shard
from hf_icl.samplers import rng_for
from hf_icl.scoring import score_queries

Config = CompareConfig


@dataclass
class ModelRun:
    """One loaded model with its arms and the learning rates chosen for it so far."""

    config: CompareConfig
    label: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    arms: list[FtArm]
    lrs: dict[tuple[str, str, int], float] = field(default_factory=dict)

    def score(
        self, task: TaskRun, rendered: RenderedEpisode, shots: list[int]
    ) -> dict[int, np.ndarray]:
        return score_queries(
            self.model,
            rendered,
            shots,
            pack_tokens=self.config.pack_tokens,
            length_normalise=task.render.length_normalise,
            calibrate=task.render.calibrate,
            where=f"task {task.name!r}",
        )

    def capture(
        self, rendered: RenderedEpisode, shots: int, demo_positions: list[int] | None = None
    ) -> Captured:
        queries = rendered.query_ids if shots else rendered.query_ids_alone
        return capture_queries(
            self.model,
            rendered.prefix_ids[: rendered.boundaries[shots]],
            queries,
            demo_positions=demo_positions,
            pack_tokens=self.config.pack_tokens,
        )

    def learning_rate(self, arm: FtArm, task: TaskRun, shots: int) -> float:
        """The arm's lr, or the sweep's choice on held-out (meta-train split) episodes."""
        settings = arm.settings
        if not settings.lr_sweep:
            return settings.lr
        key = (task.name, settings.name, shots)
        if key not in self.lrs:
            section = self.config.finetune
            renderer = TextRenderer(self.tokenizer, task.render)
            held_out = []
            for i in range(section.sweep_episodes):
                episode = task.sampler.episode(i, shots, section.sweep_queries, split="train")
                rendered = renderer.render_episode(episode)
                held_out.append(
                    HeldOut(
                        training_demos(renderer, episode, rendered, shots),
                        rendered,
                        np.asarray(episode.query_y),
                    )
                )
            self.lrs[key] = choose_lr(
                arm, settings.lr_sweep, held_out, lambda r: self.score(task, r, [0])[0]
            )
        return self.lrs[key]


def prediction_rows(
    base: dict, arm: str, shots: int, episode: Episode, scores: np.ndarray
) -> list[dict]:
    return [
        {
            **base,
            "arm": arm,
            "shots": shots,
            "query": q,
            "query_id": episode.query_ids[q] if episode.query_ids else q,
            "demo_ids": episode.demo_ids[:shots],
            "pred": int(np.argmax(scores[q])),
            "gold": int(episode.query_y[q]),
            "scores": [round(float(v), 6) for v in scores[q]],
        }
        for q in range(episode.num_queries)
    ]


def compare_unit(run: ModelRun, task: TaskRun, unit: Unit) -> list[dict]:
    """Every row of one unit: ZS, then per shot count ICL and each FT arm."""
    if task.lm_eval is not None:
        from hf_icl.jobs.lm_eval_compare import lm_eval_compare_unit

        return lm_eval_compare_unit(
            run, task.lm_eval, unit, unit_row(unit, run.label, task.name, None)
        )
    config = run.config
    renderer = TextRenderer(run.tokenizer, task.render)
    episode, _ = unit_demos(config, task, unit.seed, unit.order)  # shared lists (checked)
    rendered = renderer.render_episode(episode)
    base = unit_row(unit, run.label, task.name, episode)
    seed = int(rng_for(config.seed, "baselines", task.name, unit.seed, unit.order).integers(2**31))
    scores = run.score(task, rendered, [0, *config.shots])
    zs = run.capture(rendered, 0)
    rows = prediction_rows(base, "zs", 0, episode, scores[0])
    for k in config.shots:
        demos = training_demos(renderer, episode, rendered, k)
        positions = [d.start + j for d in demos for j in range(len(d.ids) - d.skip)]
        icl = run.capture(rendered, k, positions)
        rows += prediction_rows(base, "icl", k, episode, scores[k])
        for arm in run.arms:
            lr = run.learning_rate(arm, task, k)
            with (
                record_kv_gradients(run.model) if arm.dual_form else nullcontext() as tokens,
                arm.fine_tuned(demos, lr, seed=unit.seed),
            ):
                ft_scores = run.score(task, rendered, [0])[0]
                ft = run.capture(rendered, 0)
            importance = tokens.importance(ft.inputs, demos) if tokens is not None else None
            sims = similarities(zs, icl, ft, importance, seed)
            rows += [
                {**row, "lr": lr, **sim}
                for row, sim in zip(
                    prediction_rows(base, arm.settings.name, k, episode, ft_scores), sims
                )
            ]
    return rows


def unit_plan(config: CompareConfig, tasks: list[TaskRun]) -> UnitPlan:
    """Every model (controls included) on every task; per unit ZS, then per shot count ICL and
    each FT arm, on every query."""

    def setup(spec: ModelSpec, model, tokenizer) -> Callable[[Unit], list[dict]]:
        arms = [make_arm(model, config.finetune.settings(a)) for a in config.finetune.arms]
        run = ModelRun(config, spec.label, model, tokenizer, arms)
        return lambda unit: compare_unit(run, tasks[unit.task], unit)

    every_task = list(range(len(tasks)))
    learners = [model_learner(spec, every_task, setup) for spec in config.all_models()]
    per_query = 1 + len(config.shots) * (1 + len(config.finetune.arms))
    shapes = {
        t: (task.lm_eval.num_seeds(config.num_seeds), 1, len(task.lm_eval.docs) * per_query)
        for t, task in enumerate(tasks)
        if task.lm_eval is not None
    }
    return UnitPlan(
        learners,
        [t.name for t in tasks],
        config.num_seeds,
        config.demo_orders,
        config.num_queries * per_query,
        shapes,
    )


def check_tasks(config: CompareConfig, tasks: list[TaskRun], source: str = "config") -> None:
    for i, task in enumerate(tasks):
        if task.lm_eval is None:
            # First, so that a per-query selection is named as the cause even where it split
            # the task per model (`encoder: model`); preview: no model is loaded for it.
            episode, plan = unit_demos(config, task, 0, 0, preview=True)
            if plan is not None:
                raise HfIclError(
                    f"{source}: tasks.{i}.demos: compare fine-tunes on one demo list "
                    f"per unit, but selection {task.demos.selection!r} with order "
                    f"{task.demos.order!r} gives queries or shot counts their own "
                    "lists; use evaluate, or a shared selection (random, first_n, "
                    "balanced, fixed) with order as_selected"
                )
        if task.models is not None:
            raise HfIclError(
                f"{source}: tasks.{i}.models: compare runs every model on every "
                "task; drop the task's 'models:' list"
            )
        if task.lm_eval is not None:
            from hf_icl.jobs.lm_eval_compare import check_compare_source

            check_compare_source(task.lm_eval, f"{source}: tasks.{i}")
            sweeps = [a.name for a in config.finetune.arms if config.finetune.settings(a).lr_sweep]
            if sweeps:
                raise HfIclError(
                    f"{source}: finetune.lr_sweep: the sweep tunes on held-out "
                    f"episodes, which lm-eval task {task.name!r} does not have; "
                    "set finetune.lr instead"
                )
        elif episode.is_regression:
            raise HfIclError(
                f"{source}: tasks.{i}: task {task.name!r} is a regression task; "
                "compare needs classification tasks (accuracy, Rec2FTP)"
            )


def prepare(
    config: CompareConfig, source: str = "config", options: JobOptions | None = None
) -> EvaluatePlan:
    """An evaluation's checks, and that every task suits a comparison."""
    plan = prepare_evaluation(config, source, options)
    check_tasks(config, plan.tasks, source)
    return plan


def compare(
    config: CompareConfig,
    folder: RunFolder,
    progress: bool = True,
    shard: Shard | None = None,
    plan: EvaluatePlan | None = None,
) -> dict | None:
    """Run (or resume) a comparison into ``folder``; the main process returns the results."""
    tasks = (plan or prepare(config)).tasks
    rows = run_units(unit_plan(config, tasks), folder, shard, progress)
    return None if rows is None else write_reports(folder, reports(config, tasks, rows))


def run(
    config: CompareConfig, folder: RunFolder, options: JobOptions, plan: EvaluatePlan | None = None
) -> dict | None:
    return compare(config, folder, options.progress, options.shard, plan)


def summary(results: dict) -> str:
    """Console summary: one line per model × task × shots × arm."""
    lines = []
    for s in results["summary"]:
        lines.append(
            f"{s['model']:<28} {s['task']:<18} k={s['shots']:<3} {s['arm']:<13} "
            f"ZS {s['zs']:.3f}  ICL {s['icl']:.3f}  FT {s['ft']:.3f}  "
            f"Rec2FTP {_fmt(s['rec2ftp'], '.1f')}  SimAOU {_fmt(s['simaou'])}  "
            f"SimAM {_fmt(s['simam'])}"
        )
    return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)
