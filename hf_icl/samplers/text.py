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
from hf_icl.episode import DemoPool, Episode
from hf_icl.errors import HfIclError
from hf_icl.hub import hub_errors
from hf_icl.samplers.base import FAMILIES, Split, TaskSampler, rng_for

UNRELATED_WORDS = [" @", " #", " $", " %", " &", " *", " +", " ="]


@dataclass
class TextParams:
    template: str = option(
        help="input template with {column} fields, e.g. 'Review: {text}\\nSentiment:'"
    )
    label_words: list[str] = option(help="one word per class, usually with a leading space")
    train_file: str | None = option(None, help="JSONL file (relative to the task file) for demos")
    test_file: str | None = option(None, help="JSONL file (relative to the task file) for queries")
    dataset: str | None = option(None, help="HF Hub dataset id (online) instead of JSONL files")
    dataset_config: str | None = option(None, help="HF dataset configuration name")
    train_split: str = option("train", help="split that provides demonstrations")
    test_split: str = option("test", help="split that provides queries")
    label_column: str = option("label", help="integer label column")
    label_mode: Literal["gold", "permuted", "flipped", "unrelated"] = option(
        "gold",
        help="gold labels; a random bijection per episode; swapped (2 classes); unrelated symbols",
    )
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


def _read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """Rows of a JSONL file and where each one is (``path:line``, for error messages)."""
    if not path.is_file():
        raise HfIclError(f"{path}: no such data file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise HfIclError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    rows, places = [], []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise HfIclError(f"{path}:{i}: invalid JSON ({err.msg})") from None
            places.append(f"{path}:{i}")
    return rows, places


def _check_row(row: object, place: str, fields: list[str], label: str, num_classes: int) -> None:
    """One data row: a mapping whose template fields are text or numbers and whose label is a
    class index (anything else would be rendered as text or fail later with a traceback)."""
    if not isinstance(row, dict):
        raise HfIclError(f"{place}: expected an object with fields, got {type(row).__name__}")
    for name in [*fields, label]:
        if name not in row:
            raise HfIclError(f"{place}: missing field {name!r}; fields: {', '.join(row)}")
        if row[name] is None:
            raise HfIclError(f"{place}: field {name!r} is null")
    for name in fields:
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise HfIclError(
                f"{place}: field {name!r} must be text or a number, got "
                f"{type(value).__name__} {json.dumps(value)[:60]}"
            )
    value = row[label]
    if isinstance(value, bool) or not isinstance(value, int):
        raise HfIclError(
            f"{place}: label field {label!r} must be an integer class index, got "
            f"{type(value).__name__} {json.dumps(value)[:60]}"
        )
    if not 0 <= value < num_classes:
        raise HfIclError(
            f"{place}: label {value!r} is outside 0..{num_classes - 1} ({num_classes} label words)"
        )


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

            where = (
                f"task {self.name!r}: dataset {p.dataset!r}"
                + (f" ({p.dataset_config})" if p.dataset_config else "")
                + f" split {split!r}"
            )
            with hub_errors(where, also=(ValueError, FileNotFoundError)):
                rows = datasets.load_dataset(p.dataset, p.dataset_config, split=split).to_list()
            places = [f"{where} row {i}" for i in range(len(rows))]
        else:
            file = p.train_file if split == p.train_split else p.test_file
            path = Path(p.base_dir) / file
            (rows, places), where = _read_jsonl(path), str(path)
        if not rows:
            raise HfIclError(f"{where}: empty task data")
        return self._check_rows(rows, places, where)

    def _check_rows(self, rows: list[dict], places: list[str], where: str) -> list[dict]:
        p = self.params
        fields = [f for _, f, _, _ in string.Formatter().parse(p.template) if f]
        first = rows[0] if isinstance(rows[0], dict) else {}
        columns = ", ".join(first)  # a typo in label_column or the template: list the columns
        if first and p.label_column not in first:
            raise HfIclError(f"{where}: no label column {p.label_column!r}; columns: {columns}")
        missing = [f for f in fields if first and f not in first]
        if missing:
            raise HfIclError(
                f"{where}: template field {missing[0]!r} is not a column; columns: {columns}"
            )
        for row, place in zip(rows, places):
            _check_row(row, place, fields, p.label_column, self.num_classes)
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

    def demo_pool(self) -> DemoPool:
        """The train split's rows in file order, as templated inputs."""
        p, label = self.params, self.params.label_column
        same = p.train_split == p.test_split or (
            not p.dataset
            and (Path(p.base_dir) / p.train_file).resolve()
            == (Path(p.base_dir) / p.test_file).resolve()
        )
        rows = self.train_rows
        return DemoPool(
            x=[self.format_input(r) for r in rows],
            y=np.array([r[label] for r in rows], dtype=np.int64),
            ids=list(range(len(rows))),
            shares_queries=same,
        )

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

    def episode(
        self, index: int, num_demos: int, num_queries: int, split: Split = "test"
    ) -> Episode:
        rng = rng_for(self.params.seed, split, index)
        demo_pool = self.train_rows
        query_pool = self.test_rows if split == "test" else self.train_rows
        if num_demos > len(demo_pool):
            raise HfIclError(
                f"task {self.name!r}: {num_demos} demonstrations requested but the "
                f"demo split has only {len(demo_pool)} examples"
            )
        demo_ids = rng.choice(len(demo_pool), num_demos, replace=False)
        available = (
            np.setdiff1d(np.arange(len(query_pool)), demo_ids)
            if split == "train"
            else np.arange(len(query_pool))
        )
        if num_queries > len(available):
            raise HfIclError(
                f"task {self.name!r}: {num_queries} queries requested but only "
                f"{len(available)} examples are available"
            )
        query_ids = np.sort(rng.choice(available, num_queries, replace=False))
        label = self.params.label_column
        return Episode(
            task=self.name,
            family=self.family,
            task_id=0,
            demo_x=[self.format_input(demo_pool[i]) for i in demo_ids],
            demo_y=np.array([demo_pool[i][label] for i in demo_ids], dtype=np.int64),
            query_x=[self.format_input(query_pool[i]) for i in query_ids],
            query_y=np.array([query_pool[i][label] for i in query_ids], dtype=np.int64),
            num_classes=self.num_classes,
            label_words=self._label_words(rng),
            demo_ids=[int(i) for i in demo_ids],
            query_ids=[int(i) for i in query_ids],
            meta={
                "content_free": self.params.template.format_map(
                    _ContentFree(self.params.content_free)
                )
            },
        )


class _ContentFree(dict):
    """Fills every template field with the content-free string."""

    def __init__(self, value: str) -> None:
        super().__init__()
        self.value = value

    def __missing__(self, key: str) -> str:
        return self.value
