"""lm-evaluation-harness tasks as hf-icl documents, loaded and formatted by lm-eval itself.

lm-eval's `TaskManager` reads the YAML (``include:``, ``!function``, ``process_docs``, Jinja
templates, groups) and its `fewshot_context` writes every prompt, so descriptions, delimiters
and few-shot formatting are lm-eval's by construction. hf-icl only decides which demonstrations
each prompt gets (through the sampler it hands to lm-eval) and scores the results faster.
Generation tasks reuse `load_lm_eval_tasks` and `fewshot_contexts`; `mc_documents` is the
multiple-choice view.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_icl.errors import HfIclError, did_you_mean

INSTALL = "pip install 'hf-icl[lm-eval]'"
DEFAULT_FEWSHOT_SEED = 1234  # lm-eval's fewshot_random_seed default
SELECTIONS = ("task", "first_n", "lm_eval_default", "fixed")


def require_lm_eval():
    """The lm_eval module, or one line saying how to install it."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager  # noqa: F401
    except ImportError:
        raise HfIclError(f"lm-eval tasks need lm-evaluation-harness: {INSTALL}") from None
    return lm_eval


@dataclass
class LmEvalTask:
    """One leaf lm-eval task (a group gives several) and the settings its prompts use."""

    name: str
    task: Any  # lm_eval.api.task.ConfigurableTask
    group: str | None = None
    _pool: list[dict] | None = field(default=None, init=False, repr=False)

    @property
    def output_type(self) -> str:
        return self.task.config.output_type

    @property
    def target_delimiter(self) -> str:
        return self.task.config.target_delimiter

    @property
    def fewshot_delimiter(self) -> str:
        return self.task.config.fewshot_delimiter

    @property
    def description(self) -> str:
        return self.task.config.description or ""

    @property
    def task_sampler(self) -> str:
        """The sampler the task's own ``fewshot_config`` names ("default" when none)."""
        sampler = self.task.fewshot_cfg.sampler if self.task.config.fewshot_config else "default"
        return sampler if isinstance(sampler, str) else type(sampler).__name__

    def fewshot_pool(self) -> list[dict]:
        """The few-shot documents, read once: the same objects on every call."""
        if self._pool is None:
            docs = self.task.fewshot_docs()
            self._pool = list(docs) if docs is not None else []
        return self._pool

    def eval_docs(self, limit: int | None = None) -> list[dict]:
        docs = self.task.eval_docs
        count = len(docs) if limit is None else min(limit, len(docs))
        return [docs[i] for i in range(count)]


@contextmanager
def _quiet_lm_eval():
    """lm-eval logs every template check at WARNING; hf-icl reports what matters itself."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _manager(ref: str, include_path: str | None):
    from lm_eval.tasks import TaskManager

    paths = [str(Path(p)) for p in ([include_path] if include_path else [])]
    is_file = Path(ref).suffix in (".yaml", ".yml")
    if is_file:
        paths.append(str(Path(ref).resolve().parent))
    # A YAML path needs only its own folder indexed: skipping lm-eval's ~14k built-in YAMLs
    # keeps validation fast.
    return TaskManager(include_path=paths or None, include_defaults=not is_file)


def load_lm_eval_tasks(ref: str, include_path: str | None = None) -> list[LmEvalTask]:
    """Every leaf task of an lm-eval task name, group name or YAML path, with its dataset."""
    require_lm_eval()
    if include_path and not Path(include_path).is_dir():
        raise HfIclError(f"include_path {include_path!r}: no such folder")
    is_file = Path(ref).suffix in (".yaml", ".yml")
    if is_file and not Path(ref).is_file():
        raise HfIclError(f"lm-eval task file {ref!r}: no such file")
    with _quiet_lm_eval():
        manager = _manager(ref, include_path)
        key = _name_of_file(manager, ref) if is_file else ref
        if key not in manager.all_tasks:
            raise HfIclError(
                f"unknown lm-eval task {key!r}{did_you_mean(key, manager.all_tasks)}"
                + (
                    ""
                    if include_path
                    else "; a task outside lm-eval needs include_path (its folder) or a YAML path"
                )
            )
        try:
            loaded = manager.load([key])
        except HfIclError:
            raise
        except Exception as err:  # lm-eval and datasets raise many types; name the dataset
            raise HfIclError(_load_failure(manager, key, err)) from None
    group_of = {
        child: group for group, children in loaded["group_map"].items() for child in children
    }
    return [LmEvalTask(name, task, group_of.get(name)) for name, task in loaded["tasks"].items()]


def _name_of_file(manager, ref: str) -> str:
    """The task or group a YAML file declares, found in lm-eval's own index of its folder."""
    path = Path(ref).resolve()
    for name, entry in manager.task_index.items():
        if entry.yaml_path is not None and Path(entry.yaml_path).resolve() == path:
            return name
    raise HfIclError(f"lm-eval task file {ref!r} declares no task or group lm-eval can index")


def _load_failure(manager, key: str, err: Exception) -> str:
    import os

    entry = manager._entry(key)
    config = getattr(entry, "cfg", None) or {}
    dataset = config.get("dataset_path") if isinstance(config, dict) else None
    where = f"lm-eval task {key!r}"
    offline = (
        os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    )
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    unreachable = isinstance(err, ConnectionError) or any(
        word in text.lower() for word in ("offline", "connect", "couldn't reach", "not found on")
    )
    if unreachable or (
        offline and type(err).__name__ in ("DatasetNotFoundError", "FileNotFoundError")
    ):
        return (
            f"{where}: dataset {dataset!r} cannot be loaded: the Hugging Face Hub is "
            f"unreachable (offline) and it is not cached locally "
            f"({type(err).__name__}: {text[:200]})"
        )
    return f"{where} cannot be loaded: {type(err).__name__}: {text[:300]}"


@dataclass
class McDocument:
    """A multiple-choice document: lm-eval's doc_id, its processed doc, choices and gold."""

    doc_id: int
    doc: dict
    choices: list[str]
    gold: int


def mc_documents(task: LmEvalTask, limit: int | None = None) -> list[McDocument]:
    """The first ``limit`` evaluation documents (lm-eval's ``--limit``), checked.

    A document without choices, or whose gold index is out of range, is an error naming it:
    lm-eval would count it as wrong, which says nothing about the model."""
    if task.output_type != "multiple_choice":
        raise HfIclError(
            f"lm-eval task {task.name!r}: output_type {task.output_type!r} is not "
            "supported (multiple_choice is; generate_until is scored by the "
            "generation scorer)"
        )
    if task.task.multiple_input:
        raise HfIclError(
            f"lm-eval task {task.name!r}: one context per choice (multiple inputs, "
            "as in winogrande) is not supported"
        )
    if task.task.multiple_target:
        raise HfIclError(
            f"lm-eval task {task.name!r}: several gold answers per document are not supported"
        )
    docs = []
    for doc_id, doc in enumerate(task.eval_docs(limit)):
        choices = task.task.doc_to_choice(doc)
        gold = task.task.doc_to_target(doc)
        if isinstance(gold, str):
            gold = choices.index(gold) if gold in choices else -1
        if not choices:
            raise HfIclError(f"lm-eval task {task.name!r}: document {doc_id} has no choices")
        if not isinstance(gold, int) or not 0 <= gold < len(choices):
            raise HfIclError(
                f"lm-eval task {task.name!r}: document {doc_id} has gold {gold!r} "
                f"outside its {len(choices)} choices"
            )
        docs.append(McDocument(doc_id, doc, list(choices), gold))
    if not docs:
        raise HfIclError(f"lm-eval task {task.name!r} has no evaluation documents")
    return docs


def demo_example(task: LmEvalTask, doc: dict) -> tuple[str, list[str], int]:
    """A few-shot pool document as lm-eval shows it in a prompt (fewshot_config's own
    doc_to_text, doc_to_choice and doc_to_target where it sets them): text, choices and the
    answer's index among them (-1 when the answer is not one of them)."""
    lm, fewshot = task.task, task.task.fewshot_cfg
    choices = list(lm.doc_to_choice(doc, fewshot.doc_to_choice)) if fewshot.doc_to_choice else []
    target = lm.doc_to_target(doc, fewshot.doc_to_target)
    if isinstance(target, str):
        target = choices.index(target) if target in choices else -1
    return lm.doc_to_text(doc, fewshot.doc_to_text), choices, int(target)


@dataclass(frozen=True)
class DemoSelection:
    """Which demonstrations lm-eval's formatter gets: ``task`` (its fewshot_config),
    ``first_n``, ``lm_eval_default`` (lm-eval's random sampler, replayed), ``fixed``, or any
    other hf-icl selection through ``rows`` (document index, shots → pool indices in order)."""

    selection: str = "task"
    seed: int = DEFAULT_FEWSHOT_SEED
    indices: tuple[int, ...] = ()  # fixed: pool indices, in order
    rows: Callable[[int, int], list[int]] | None = field(default=None, compare=False)

    def resolved(self, task: LmEvalTask) -> str:
        if self.selection != "task":
            return self.selection
        return "first_n" if task.task_sampler == "first_n" else "lm_eval_default"

    def shared(self, task: LmEvalTask) -> bool:
        """One demo list for every document (the fast path)."""
        return self.resolved(task) in ("first_n", "fixed")


def _preset(pool: list[dict], demos: list[dict]):
    """An lm-eval sampler that hands its formatter the given demonstrations, in order."""
    from lm_eval.api import samplers

    class Preset(samplers.ContextSampler):
        def sample(self, n, eval_doc=None, df=None, **kwargs):
            return demos[:n]

    return Preset(pool)


def _sampler(task: LmEvalTask, selection: DemoSelection, pool: list[dict]):
    from lm_eval.api import samplers

    name = selection.resolved(task)
    if name == "fixed":
        return _preset(pool, [pool[i] for i in selection.indices])
    cls = samplers.FirstNSampler if name == "first_n" else samplers.ContextSampler
    return cls(pool, rnd=selection.seed)


def demo_rows(
    task: LmEvalTask, docs: list[dict], shots: int, selection: DemoSelection
) -> list[list[int]]:
    """Per document, the few-shot pool rows its ``shots``-shot prompt shows, in order.

    lm-eval's own sampler draws them, called as `fewshot_context` calls it (the document is
    passed to be left out when the pool is the test split); its draws are the pool's own
    objects, so each maps back to its row. Random selection is replayed exactly: lm-eval seeds
    one `random.Random` per task and draws the documents' demos from it in order, and
    `random.sample` consumes the stream differently for different n, so each shot count starts
    again from the seed."""
    if selection.rows is not None:
        return [selection.rows(q, shots) for q in range(len(docs))]
    if shots == 0:
        return [[] for _ in docs]
    pool = task.fewshot_pool()
    row_of = {id(doc): i for i, doc in enumerate(pool)}
    sampler = _sampler(task, selection, pool)
    leave_out = task.task.fewshot_cfg.split == task.task.config.test_split
    with _quiet_lm_eval():
        return [
            [row_of[id(d)] for d in sampler.sample(n=shots, eval_doc=doc if leave_out else None)]
            for doc in docs
        ]


def check_shots(task: LmEvalTask, selection: DemoSelection, max_shots: int) -> None:
    """More shots than the pool (or the fixed list) holds is an error before any scoring."""
    name = selection.resolved(task)
    if name == "fixed":
        pool = len(task.fewshot_pool())
        bad = [i for i in selection.indices if not 0 <= i < pool]
        if bad:
            raise HfIclError(
                f"lm-eval task {task.name!r}: demos.indices {bad} outside the "
                f"few-shot pool of {pool} documents"
            )
        have, what = len(selection.indices), "the fixed demo list holds"
    else:
        have, what = len(task.fewshot_pool()), "its few-shot pool holds"
        # lm-eval drops the evaluated document from a pool that is also the test split
        if task.task.fewshot_cfg.split == task.task.config.test_split:
            have -= 1
    if max_shots > have:
        raise HfIclError(
            f"lm-eval task {task.name!r}: {max_shots} shots requested but {what} "
            f"{max(have, 0)} demonstrations; lower shots"
        )


def fewshot_contexts(
    task: LmEvalTask, docs: list[dict], shots: int, selection: DemoSelection
) -> list[str]:
    """lm-eval's prompt for each doc after ``shots`` demonstrations (those of `demo_rows`)."""
    pool = task.fewshot_pool()
    rows = demo_rows(task, docs, shots, selection)
    original = getattr(task.task, "sampler", None)
    prompts = []
    try:
        with _quiet_lm_eval():
            for doc, shown in zip(docs, rows):
                task.task.sampler = _preset(pool, [pool[i] for i in shown])
                prompts.append(task.task.fewshot_context(doc=doc, num_fewshot=shots))
        return prompts
    finally:
        if original is not None:
            task.task.sampler = original


class LmEvalEncoder:
    """Token ids exactly as lm-eval's HF model makes them, by running lm-eval's own code
    (`TemplateLM.loglikelihood`, `_encode_pair`, `HFLM.tok_encode`) with the tokenizer alone:
    trailing context whitespace moves into the continuation, the continuation is what the whole
    string adds to the context's tokens, and an empty context becomes the prefix token."""

    backend = "causal"
    add_bos_token = None
    custom_prefix_token_id = None

    def __init__(self, tokenizer) -> None:
        require_lm_eval()
        from lm_eval.api.model import TemplateLM
        from lm_eval.models.huggingface import HFLM

        self.tokenizer = tokenizer
        cls = type(self)
        cls.tok_encode = HFLM.tok_encode
        cls._encode_pair = TemplateLM._encode_pair
        cls.prefix_token_id = HFLM.prefix_token_id
        self._loglikelihood = TemplateLM.loglikelihood

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False):
        return [(context, continuation) for _, context, continuation in requests]

    def encode(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(context ids, continuation ids) for each (context, continuation) string pair."""
        from types import SimpleNamespace

        return self._loglikelihood(
            self, [SimpleNamespace(args=p) for p in pairs], disable_tqdm=True
        )


def mc_continuations(task: LmEvalTask, doc: McDocument) -> list[str]:
    """What lm-eval scores after the context: target delimiter + choice."""
    return [f"{task.target_delimiter}{choice}" for choice in doc.choices]
