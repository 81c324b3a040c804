"""The task streams of a train run: every task entry checked where the config writes it, then
turned into a ``TrainTask`` (sampler + renderer + metric).

The train job builds them in ``prepare``, before the run folder exists, so that a mistake the
tokenizer or the model's config reveals (mixed renderers, a multi-token label word, input sizes
the shared read-in cannot take, a model without inputs_embeds, a sequence longer than the
context window) leaves nothing behind; the trainer reuses what ``prepare`` built. Importing this
module imports no torch: that happens in ``build_tasks``, after the cheap checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.render import RenderOptions, TextRenderer
from hf_icl.samplers import TaskSampler
from hf_icl.tasks import Entry, TaskDef, load_task, located, parse_section
from hf_icl.training.config import TrainConfig

EVAL_OFFSET = 2**40  # seen-task evaluation episodes: far past any training episode index


@dataclass
class TrainTask:
    """One task's episode stream and how its episodes become a LabelBatch."""

    name: str
    sampler: TaskSampler
    render: Callable[[list[Episode], bool], Any]  # (episodes, final_only) → LabelBatch
    metric: str  # accuracy (label tokens; text-rendered regression: bin tokens) or nse (read-out)
    eval_only: bool

    def stage(self, step: int, section) -> tuple[int | None, int]:
        """(active dims, examples per sequence) at ``step``: the task's curriculum, if it has
        one and train.curriculum follows it; else all dims and train.num_examples."""
        dims, num_examples = self.sampler.curriculum_at(step)
        if section.curriculum and num_examples is not None:
            return dims, num_examples
        return None, section.num_examples

    def draw(
        self, first: int, count: int, num_examples: int, split: str, active_dims: int | None = None
    ) -> list[Episode]:
        """Episodes first..first+count-1 of a split (the sampler keeps per-batch properties);
        the curriculum stage goes to the sampler as an argument."""
        stage = {} if active_dims is None else {"active_dims": active_dims}
        return self.sampler.episodes(first, count, num_examples, 0, split, **stage)

    def eval_episodes(self, split: str, count: int, num_examples: int) -> list[Episode]:
        """Fixed evaluation episodes; the curriculum's last stage (Garg et al. evaluate there)."""
        dims = self.sampler.curriculum_at(2**62)[0]
        first = EVAL_OFFSET if split == "train" else 0
        return self.draw(first, count, num_examples, split, dims)


@dataclass
class TaskEntry:
    """A task entry of the config, loaded and checked."""

    definition: TaskDef
    sampler: TaskSampler
    options: RenderOptions
    eval_only: bool


@dataclass
class PreparedTasks:
    """What ``prepare`` hands the trainer: training tasks first, then evaluation-only tasks;
    the renderer kind they share; the tokenizer their renderers use (None: small model)."""

    tasks: list[TrainTask]
    kind: str
    tokenizer: Any | None


def load_entries(config: TrainConfig, source: str = "") -> list[TaskEntry]:
    """Every task entry (parameters, render options, a first episode of train.num_examples
    examples); an error names the entry."""
    refs = [(ref, f"tasks.{i}", False) for i, ref in enumerate(config.tasks)] + [
        (ref, f"eval_tasks.{i}", True) for i, ref in enumerate(config.eval_tasks)
    ]
    entries = []
    for ref, key, eval_only in refs:
        where = Entry(source, key)
        definition, sampler = load_task(ref, where)
        options = parse_section(definition, RenderOptions, "render", definition.render, where)
        with located(where):
            sampler.episode(0, config.train.num_examples, 0, "train")
        entries.append(TaskEntry(definition, sampler, options, eval_only))
    return entries


def _renderer_kind(options: list[RenderOptions], config: TrainConfig) -> str:
    kinds = {o.renderer for o in options}
    if len(kinds) > 1:
        raise HfIclError(
            "tasks: every task of a train run needs the same render.renderer; "
            f"got {', '.join(sorted(kinds))}"
        )
    kind = kinds.pop()
    if config.small_model is not None and kind != "embedding":
        raise HfIclError(
            "small_model: a small model reads its tasks through the embedding "
            "renderer; add render: {renderer: embedding} to each task"
        )
    if kind == "text" and config.train.finetune == "read_in":
        raise HfIclError("train.finetune: read_in needs tasks with render: {renderer: embedding}")
    return kind


def _label_tokens(
    tokenizer, options: RenderOptions, episode: Episode, vocab: int | None
) -> list[int] | None:
    """Token ids of the label words; a small model's labels are simply tokens 0..C-1."""
    if episode.is_regression:
        return None
    if tokenizer is None:
        if episode.num_classes > vocab:
            raise HfIclError(
                f"task {episode.task!r}: {episode.num_classes} classes but the small "
                f"model has {vocab} label tokens; raise small_model.vocab_size"
            )
        return list(range(vocab))
    ids = []
    for word in TextRenderer(tokenizer, options).label_words(episode):
        tokens = tokenizer(word, add_special_tokens=False).input_ids
        if len(tokens) != 1:
            raise HfIclError(
                f"task {episode.task!r}: label word {word!r} is {len(tokens)} tokens; "
                "the embedding renderer needs single-token label words"
            )
        ids.append(tokens[0])
    return ids


def build_tasks(config: TrainConfig, entries: list[TaskEntry]) -> PreparedTasks:
    """The task streams with their renderers, checked against the model's tokenizer and
    config (its weights are not loaded)."""
    from hf_icl.models import embedding_batch, load_tokenizer, text_batch
    from hf_icl.render.embedding import EmbeddingRenderer

    kind = _renderer_kind([e.options for e in entries], config)
    tokenizer = None if config.model is None else load_tokenizer(config.model)
    vocab = None if config.small_model is None else config.small_model.vocab_size
    tasks, shapes = [], set()
    for entry in entries:
        example = entry.sampler.episode(0, 1, 0, "train")
        metric = "nse" if kind == "embedding" and example.is_regression else "accuracy"
        if kind == "text":
            render = partial(
                text_batch, TextRenderer(tokenizer, entry.options), pad_id=tokenizer.pad_token_id
            )
        else:
            dim = getattr(example.demo_x, "shape", (0, 0))[1]
            shapes.add((dim, example.is_regression))
            layout = "interleaved" if config.small_model is None else config.small_model.layout
            renderer = EmbeddingRenderer(
                dim, _label_tokens(tokenizer, entry.options, example, vocab), layout
            )
            if layout == "paired" and not example.is_regression and example.num_classes != 2:
                raise HfIclError(
                    f"task {entry.definition.name!r}: small_model.architecture "
                    f"{config.small_model.architecture!r} reads the paired layout, "
                    f"where a class is y = ±1: two classes only, not "
                    f"{example.num_classes}"
                )
            render = partial(embedding_batch, renderer)
        tasks.append(
            TrainTask(entry.definition.name, entry.sampler, render, metric, entry.eval_only)
        )
    if len(shapes) > 1:
        raise HfIclError(
            "tasks: the embedding renderer's read-in is shared, so every task needs "
            f"the same input size and kind; got (dim, regression) = {sorted(shapes)}"
        )
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise HfIclError(f"tasks: duplicate task name in {names}; give one an alias with 'as:'")
    from hf_icl.training.model_checks import check_model_fits

    prepared = PreparedTasks(tasks, kind, tokenizer)
    check_model_fits(config, prepared)
    return prepared


def prepare_tasks(config: TrainConfig, source: str = "") -> PreparedTasks:
    """Load, check and build every task of ``config`` (the train job's prepare does the same
    with its other checks in between)."""
    return build_tasks(config, load_entries(config, source))
