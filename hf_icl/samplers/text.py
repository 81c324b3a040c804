"""`text_classification`: any text dataset + template + label words, with label-mode controls.

Episodes carry the templated input (``x`` is the prompt text without the label) and per-episode
label words, so renderers need not know templates or label modes.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from hf_icl.config import option
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.samplers.base import FAMILIES, Split, TaskSampler, rng_for

UNRELATED_WORDS = [" @", " #", " $", " %", " &", " *", " +", " ="]


@dataclass
class TextParams:
    template: str = option(help="input template with {column} fields, e.g. 'Review: {text}\\nSentiment:'")
    label_words: list[str] = option(help="one word per class, usually with a leading space")
    train_file: str | None = option(None, help="JSONL file (relative to the task file) for demos")
    test_file: str | None = option(None, help="JSONL file (relative to the task file) for queries")
    dataset: str | None = option(None, help="HF Hub dataset id (online) instead of JSONL files")
    dataset_config: str | None = option(None, help="HF dataset configuration name")
    train_split: str = option("train", help="split that provides demonstrations")
    test_split: str = option("test", help="split that provides queries")
    label_column: str = option("label", help="integer label column")
    label_mode: Literal["gold", "permuted", "flipped", "unrelated"] = option(
        "gold", help="gold labels; a random bijection per episode; swapped (2 classes); "
        "unrelated symbols")
    unrelated_words: list[str] | None = option(None, help="words for label_mode=unrelated")
    content_free: str = option("N/A", help="content-free input for contextual calibration")
    seed: int = option(0, help="base seed of the episode stream")
    base_dir: str = option(".", help="folder that relative data files are read from")

    def __post_init__(self) -> None:
        words = self.label_words
        if len(words) < 2:
            raise ValueError(f"label_words: need at least 2 words, got {words!r}")
        if any(not w.strip() for w in words):
            raise ValueError(f"label_words: empty label word in {words!r}")
        if len(set(words)) != len(words):
            dup = next(w for w in words if words.count(w) > 1)
            raise ValueError(f"label_words: duplicate label word {dup!r} in {words!r}")
        if self.label_mode == "flipped" and len(words) != 2:
            raise ValueError(f"label_mode: 'flipped' needs 2 classes, got {len(words)}")
        if not self.dataset and not (self.train_file and self.test_file):
            raise ValueError("give either dataset (HF Hub id) or train_file and test_file")
        fields = {f for _, f, _, _ in string.Formatter().parse(self.template) if f}
        if not fields:
            raise ValueError(f"template: {self.template!r} has no {{column}} field")


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise HfIclError(f"{path}: no such data file")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise HfIclError(f"{path}:{i}: invalid JSON ({err.msg})") from None
    return rows


@FAMILIES.register("text_classification")
class TextClassificationSampler(TaskSampler):
    family = "text_classification"
    Params = TextParams

    @property
    def num_classes(self) -> int:
        return len(self.params.label_words)

    def _load_split(self, split: str) -> list[dict]:
        p = self.params
        if p.dataset:
            import datasets

            rows = datasets.load_dataset(p.dataset, p.dataset_config, split=split).to_list()
            where = f"dataset {p.dataset} split {split}"
        else:
            file = p.train_file if split == p.train_split else p.test_file
            path = Path(p.base_dir) / file
            rows, where = _read_jsonl(path), str(path)
        if not rows:
            raise HfIclError(f"{where}: empty task data")
        return self._check_rows(rows, where)

    def _check_rows(self, rows: list[dict], where: str) -> list[dict]:
        p = self.params
        if p.label_column not in rows[0]:
            raise HfIclError(f"{where}: no label column {p.label_column!r}; "
                             f"columns: {', '.join(rows[0])}")
        fields = [f for _, f, _, _ in string.Formatter().parse(p.template) if f]
        missing = [f for f in fields if f not in rows[0]]
        if missing:
            raise HfIclError(f"{where}: template field {missing[0]!r} is not a column; "
                             f"columns: {', '.join(rows[0])}")
        bad = [r[p.label_column] for r in rows
               if not isinstance(r[p.label_column], int) or not 0 <= r[p.label_column] < self.num_classes]
        if bad:
            raise HfIclError(f"{where}: label {bad[0]!r} is outside 0..{self.num_classes - 1} "
                             f"({self.num_classes} label words)")
        return rows

    @cached_property
    def train_rows(self) -> list[dict]:
        return self._load_split(self.params.train_split)

    @cached_property
    def test_rows(self) -> list[dict]:
        return self._load_split(self.params.test_split)

    def format_input(self, row: dict) -> str:
        return self.params.template.format(**row)

    def max_demos(self) -> int:
        return len(self.train_rows)

    def _label_words(self, rng: np.random.Generator) -> list[str]:
        p, words = self.params, list(self.params.label_words)
        if p.label_mode == "permuted":
            return [words[i] for i in rng.permutation(len(words))]
        if p.label_mode == "flipped":
            return words[::-1]
        if p.label_mode == "unrelated":
            pool = p.unrelated_words or UNRELATED_WORDS
            if len(pool) < len(words):
                raise HfIclError(f"unrelated_words: need {len(words)} words, got {len(pool)}")
            return [pool[i] for i in rng.choice(len(pool), len(words), replace=False)]
        return words

    def episode(self, index: int, num_demos: int, num_queries: int,
                split: Split = "test") -> Episode:
        rng = rng_for(self.params.seed, split, index)
        demo_pool = self.train_rows
        query_pool = self.test_rows if split == "test" else self.train_rows
        if num_demos > len(demo_pool):
            raise HfIclError(f"task {self.name!r}: {num_demos} demonstrations requested but the "
                             f"demo split has only {len(demo_pool)} examples")
        demo_ids = rng.choice(len(demo_pool), num_demos, replace=False)
        available = np.setdiff1d(np.arange(len(query_pool)), demo_ids) if split == "train" \
            else np.arange(len(query_pool))
        if num_queries > len(available):
            raise HfIclError(f"task {self.name!r}: {num_queries} queries requested but only "
                             f"{len(available)} examples are available")
        query_ids = np.sort(rng.choice(available, num_queries, replace=False))
        label = self.params.label_column
        return Episode(
            task=self.name, family=self.family, task_id=0,
            demo_x=[self.format_input(demo_pool[i]) for i in demo_ids],
            demo_y=np.array([demo_pool[i][label] for i in demo_ids], dtype=np.int64),
            query_x=[self.format_input(query_pool[i]) for i in query_ids],
            query_y=np.array([query_pool[i][label] for i in query_ids], dtype=np.int64),
            num_classes=self.num_classes, label_words=self._label_words(rng),
            demo_ids=[int(i) for i in demo_ids], query_ids=[int(i) for i in query_ids],
            meta={"content_free": self.params.template.format_map(
                _ContentFree(self.params.content_free))},
        )


class _ContentFree(dict):
    """Fills every template field with the content-free string."""

    def __init__(self, value: str) -> None:
        super().__init__()
        self.value = value

    def __missing__(self, key: str) -> str:
        return self.value
