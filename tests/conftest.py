"""Shared fixtures: real models are loaded once per test session (loading takes seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_icl.models import load_model


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct, the real offline pretrained model: (model, tokenizer)."""
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_llama():
    return load_model("tiny-random-llama")


@pytest.fixture(scope="session")
def tiny_gemma3():
    """A tiny Gemma 3 with a 16-token sliding window on its first layer."""
    return load_model("tiny-random-gemma3")


@pytest.fixture(scope="session")
def tokenizer(tiny_llama):
    """The real SmolLM2 tokenizer."""
    return tiny_llama[1]


@pytest.fixture
def text_task_dir(tmp_path: Path) -> Path:
    """A small text task (YAML + JSONL) written to a temporary folder."""
    reviews = [
        ("I loved every minute", 1),
        ("awful and boring", 0),
        ("great fun for all", 1),
        ("a total waste of money", 0),
        ("brilliant acting", 1),
        ("never again", 0),
        ("so dull I slept", 0),
        ("wonderful little gem", 1),
        ("not worth it", 0),
        ("pure joy", 1),
        ("the plot made no sense", 0),
        ("charming and clever", 1),
    ]
    for split, rows in (("train", reviews), ("test", reviews[::-1])):
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows)
        )
    (tmp_path / "mini.yaml").write_text(
        "name: mini\nfamily: text_classification\nparams:\n  train_file: train.jsonl\n"
        '  test_file: test.jsonl\n  template: "Review: {text}\\nSentiment:"\n'
        '  label_words: [" negative", " positive"]\n'
    )
    return tmp_path


def free_port() -> int:
    """A TCP port nobody listens on now, so two-process runs never meet a lingering one."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _arithmetic_rows(count: int, seed: int) -> list[dict]:
    """Sums with 3-5 numeric choices each (multi-token under SmolLM2, which splits digits)."""
    import random

    rnd = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rnd.randint(2, 60), rnd.randint(2, 60)
        wrong = rnd.sample([n for n in range(4, 400) if n != a + b], rnd.randint(2, 4))
        choices = [str(n) for n in wrong]
        answer = rnd.randint(0, len(choices))
        choices.insert(answer, str(a + b))
        rows.append({"a": a, "b": b, "choices": choices, "answer": answer})
    return rows


@pytest.fixture
def lm_eval_task_dir(tmp_path: Path) -> Path:
    """tests/lm_eval_tasks (YAMLs with include, !function, a group) over local JSONL data."""
    import shutil

    folder = tmp_path / "lm_eval_tasks"
    shutil.copytree(Path(__file__).parent / "lm_eval_tasks", folder)
    for split, count, seed in (("train", 24, 0), ("test", 12, 1)):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in _arithmetic_rows(count, seed))
        )
    base = folder / "_mc_base.yaml"
    base.write_text(base.read_text().replace("DATA/", f"{folder}/"))
    return folder
