"""The demos: section in an evaluation: per-query demo ids recorded, baselines see the same
demonstrations, and bad selections are one-line errors before anything is written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from test_errors import fails_cleanly

from hf_icl.cli import main
from hf_icl.demos import demo_pool
from hf_icl.demos.model_states import mean_pooled_states
from hf_icl.models import load_model
from hf_icl.tasks import load_task

CONFIG = {
    "job": "evaluate",
    "models": ["tiny-random-llama"],
    "shots": [0, 1, 3],
    "num_seeds": 1,
    "num_queries": 3,
    "bootstrap": 20,
    "baselines": ["majority"],
    "tasks": [
        "sentiment",
        {
            "name": "sentiment",
            "as": "near",
            "demos": {"selection": "bm25", "order": "nearest_last"},
        },
        {"name": "sentiment", "as": "first", "demos": {"selection": "first_n"}},
    ],
}


def write(tmp_path, **changes):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **changes}))
    return path


def test_per_query_demo_ids_are_recorded_and_shared_with_baselines(tmp_path):
    assert main(["evaluate", str(write(tmp_path)), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    near = [r for r in rows if r["task"] == "near" and r["model"] == "tiny-random-llama"]
    by_query = {r["query"]: r["demo_ids"] for r in near if r["shots"] == 3}
    assert len({tuple(ids) for ids in by_query.values()}) == 3  # each query its own neighbours
    assert all(r["query_id"] not in r["demo_ids"] for r in near)
    first = {
        r["demo_ids"] and tuple(r["demo_ids"])
        for r in rows
        if r["task"] == "first" and r["shots"] == 3
    }
    assert first == {(0, 1, 2)}
    key = lambda r: (r["task"], r["shots"], r["query"])  # noqa: E731
    model = {key(r): r["demo_ids"] for r in rows if r["model"] == "tiny-random-llama"}
    assert all(r["demo_ids"] == model[key(r)] for r in rows if r["model"] == "baseline:majority")
    report = (tmp_path / "o" / "report.md").read_text()
    assert "covers query sampling only" in report and "‡" in report


@pytest.mark.parametrize(
    "demos,message",
    [
        (
            {"selection": "bm26"},
            "tasks.1.demos.selection: unknown demo selection 'bm26' (did you mean 'bm25'?)",
        ),
        (
            {"order": "nearest_lats"},
            "unknown demo order 'nearest_lats' (did you mean 'nearest_last'?)",
        ),
        (
            {"selection": "fixed", "fixed": [3, 999]},
            "tasks.1.demos.fixed: index 999 is out of range",
        ),
        (
            {"selection": "fixed", "fixed": [3, 3, 4]},
            "tasks.1.demos.fixed: index 3 is listed twice",
        ),
        (
            {"selection": "topk", "encoder": "/no/such/folder"},
            "tasks.1.demos.encoder: '/no/such/folder' is neither a folder",
        ),
        (
            {"selection": "bm25", "encoder": "model"},
            "tasks.1.demos.encoder: 'model' applies to the selections that embed (dpp, topk), "
            "not to 'bm25'",
        ),
        (
            {"selection": "dpp", "encoder": "model", "candidates": 2},
            "tasks.1.demos.candidates: 2 candidates cannot give 3 shots",
        ),
        (
            {"selection": "first_n", "order": "nearest_first"},
            "tasks.1.demos.order: 'nearest_first' needs each demonstration's similarity",
        ),
    ],
)
def test_bad_demos_are_one_line_errors_before_the_run_folder(tmp_path, capsys, demos, message):
    tasks = ["sentiment", {"name": "sentiment", "as": "x", "demos": demos}]
    line = fails_cleanly(
        capsys,
        tmp_path,
        ["evaluate", str(write(tmp_path, tasks=tasks)), "--out", str(tmp_path / "run")],
    )
    assert message in line, line


def nearest_by_model_states(model_spec: str, shots: int, queries: int) -> list[list[int]]:
    """Brute force: the sentiment pool ids nearest (cosine of mean-pooled states) to each of
    the first seed's queries."""
    _, sampler = load_task("sentiment")
    episode = sampler.episode(0, shots, queries, split="test")
    pool = demo_pool(sampler, episode)
    model, tokenizer = load_model(model_spec)
    vectors = mean_pooled_states(model, tokenizer, list(pool.x) + list(episode.query_x))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = vectors[len(pool) :] @ vectors[: len(pool)].T
    return [[pool.ids[i] for i in np.argsort(-c, kind="stable")[:shots]] for c in cosine]


def test_topk_with_each_models_own_states_end_to_end(tmp_path):
    models = ["tiny-random-llama", "tiny-random-gemma3"]
    task = {"name": "sentiment", "demos": {"selection": "topk", "encoder": "model"}}
    path = write(tmp_path, models=models, tasks=[task], shots=[0, 1, 2])
    assert main(["evaluate", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    assert {(r["model"], r["task"]) for r in rows} == {
        (learner, f"sentiment@{model}")
        for model in models
        for learner in (model, "baseline:majority")
    }
    chosen = {}
    for model in models:
        mine = [r for r in rows if r["task"] == f"sentiment@{model}" and r["shots"] == 2]
        by_query = {r["query"]: r["demo_ids"] for r in mine if r["model"] == model}
        assert [by_query[q] for q in range(3)] == nearest_by_model_states(model, 2, 3)
        assert all(r["demo_ids"] == by_query[r["query"]] for r in mine)  # the baseline too
        chosen[model] = by_query
    assert chosen[models[0]] != chosen[models[1]]  # each model selects with its own states


def test_encoder_model_needs_a_model_on_the_task(tmp_path, capsys):
    task = {"name": "sentiment", "models": [], "demos": {"selection": "topk", "encoder": "model"}}
    line = fails_cleanly(
        capsys,
        tmp_path,
        ["evaluate", str(write(tmp_path, tasks=[task])), "--out", str(tmp_path / "run")],
    )
    assert (
        "tasks.0.demos.encoder: 'model' selects with the evaluated model's states, but no " in line
    )


def test_balanced_needs_enough_of_each_class_and_old_key_points_to_new(
    tmp_path, text_task_dir, capsys
):
    task = {
        "name": str(text_task_dir / "mini.yaml"),
        "test_file": "train.jsonl",
        "demos": {"selection": "balanced"},
    }  # queries come from the pool: never demos
    line = fails_cleanly(
        capsys,
        tmp_path,
        [
            "evaluate",
            str(write(tmp_path, tasks=[task], shots=[0, 12])),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert "balanced: 12 shots need 6 examples of class" in line
    line = fails_cleanly(
        capsys,
        tmp_path,
        ["evaluate", str(write(tmp_path, demo_orders=2)), "--out", str(tmp_path / "run")],
    )
    assert "'demo_orders' has moved to 'demos.permutations'" in line


def test_compare_refuses_per_query_demonstrations(tmp_path, capsys):
    path = tmp_path / "cmp.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "job": "compare",
                "models": ["tiny-random-llama"],
                "shots": [2],
                "num_seeds": 1,
                "num_queries": 2,
                "tasks": [{"name": "sentiment", "demos": {"selection": "topk"}}],
            }
        )
    )
    line = fails_cleanly(capsys, tmp_path, ["compare", str(path), "--out", str(tmp_path / "run")])
    assert "tasks.0.demos: compare fine-tunes on one demo list per unit" in line


def test_compare_names_per_query_demonstrations_for_several_models_with_model_encoder(
    tmp_path, capsys
):
    path = tmp_path / "cmp.yaml"
    task = {"name": "sentiment", "demos": {"selection": "topk", "encoder": "model"}}
    config = {
        "job": "compare",
        "models": ["tiny-random-llama", "tiny-random-gemma3"],
        "shots": [2],
        "num_seeds": 1,
        "num_queries": 2,
        "tasks": [task],
    }
    path.write_text(yaml.safe_dump(config))
    line = fails_cleanly(capsys, tmp_path, ["compare", str(path), "--out", str(tmp_path / "run")])
    assert "demos: compare fine-tunes on one demo list per unit" in line
