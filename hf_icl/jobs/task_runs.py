"""The tasks of an evaluate or compare run: config entries loaded into samplers and renderer
options, and the episodes every learner of a unit shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_icl.config import from_dict, to_dict
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.generation_config import ScoringOptions
from hf_icl.jobs.evaluate_config import EvaluateConfig, split_task_models
from hf_icl.render import RenderOptions
from hf_icl.samplers import TaskSampler, rng_for
from hf_icl.tasks import Entry, TaskDef, load_task, located, parse_section


@dataclass
class TaskRun:
    """A task ready to evaluate: definition, sampler and renderer options."""

    definition: TaskDef
    sampler: TaskSampler
    render: RenderOptions
    models: frozenset[int] | None = None  # indices into config.models; None = all
    scoring: ScoringOptions = field(default_factory=ScoringOptions)

    @property
    def name(self) -> str:
        return self.definition.name


def prepare_tasks(config: EvaluateConfig, source: str = "config") -> list[TaskRun]:
    """Every task entry loaded and checked; errors name ``source`` and the entry (tasks.i)."""
    runs = []
    for i, ref in enumerate(config.tasks):
        where = Entry(source, f"tasks.{i}")
        ref, models = split_task_models(ref, [m.label for m in config.models], where.key)
        ref, scoring = task_scoring(config, ref, where)
        definition, sampler = load_task(ref, where)
        render = parse_section(definition, RenderOptions, "render", definition.render, where)
        if render.renderer != "text":
            raise HfIclError(f"{where}: render.renderer {render.renderer!r} needs a trained "
                             "read-in; evaluate pretrained LLMs with renderer: text")
        if scoring.method == "generate" and config.protocol != "queries":
            raise HfIclError(f"{where}: scoring.method generate needs protocol: queries")
        runs.append(TaskRun(definition, sampler, render, models, scoring))
    names = [t.name for t in runs]
    if len(set(names)) != len(names):
        raise HfIclError(f"{source}: tasks: duplicate task name in {names}; give one an alias "
                         "with 'as:'")
    return runs


def task_scoring(config: EvaluateConfig, ref, where: Entry) -> tuple[object, ScoringOptions]:
    """The config's ``scoring:`` with the entry's own ``scoring:`` keys over it."""
    if not isinstance(ref, dict) or "scoring" not in ref:
        return ref, config.scoring
    ref = dict(ref)
    own = ref.pop("scoring")
    if not isinstance(own, dict):
        raise HfIclError(f"{where}.scoring: expected a mapping, got {own!r}")
    merged = {**to_dict(config.scoring), **own}
    return ref, from_dict(ScoringOptions, merged, source=where.source, prefix=f"{where.key}.scoring")


def draw_episode(config: EvaluateConfig, task: TaskRun, seed: int, order: int) -> Episode:
    """The same episode for every learner: it depends only on task, seed and order."""
    max_shots = max(config.shots)
    if config.protocol == "sequential":
        episode = task.sampler.episode(seed, max_shots + 1, 0, split="test")
    else:
        episode = task.sampler.episode(seed, max_shots, config.num_queries, split="test")
    if order == 0:
        return episode
    perm = rng_for(config.seed, "order", task.name, seed, order).permutation(episode.num_demos)
    return episode.with_demos([int(i) for i in perm])


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
