"""lm-eval task entries: loading through lm-eval, evaluate from a config, and bad input as one
`hf-icl: error:` line with exit 2 and nothing written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from hf_icl.cli import main
from hf_icl.config import from_dict
from hf_icl.errors import HfIclError
from hf_icl.jobs.checks import check_evaluation
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.lm_eval_tasks import DemoSelection, check_shots, load_lm_eval_tasks


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def fails_cleanly(capsys, root: Path, argv: list[str]) -> str:
    before = listing(root)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hf-icl: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert listing(root) == before
    return lines[0]


def config(tmp_path: Path, entry: dict, **extra) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "job": "evaluate",
                "models": ["tiny-random-llama"],
                "tasks": [entry],
                "shots": [0, 2],
                "num_seeds": 2,
                "num_queries": 4,
                **extra,
            }
        )
    )
    return path


def variant(folder: Path, name: str, **changes) -> Path:
    """A copy of mc_words with some keys changed."""
    text = (folder / "mc_words.yaml").read_text().replace("task: mc_words", f"task: {name}")
    text += "".join(f"{key}: {json.dumps(value)}\n" for key, value in changes.items())
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def test_evaluate_group_from_config(tmp_path, lm_eval_task_dir):
    """A group entry runs both subtasks; first_n runs one seed, the random sampler one per seed."""
    out = tmp_path / "run"
    cfg = config(tmp_path, {"lm_eval": str(lm_eval_task_dir / "mc_group.yaml")})
    assert main(["evaluate", str(cfg), "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    seeds = {t: sorted({r["seed"] for r in rows if r["task"] == t}) for t in ("mc_sum", "mc_words")}
    assert seeds == {"mc_sum": [0], "mc_words": [0, 1]}
    assert len(rows) == 4 * 2 * 3
    row = rows[0]
    assert row["query_id"] == 0 and len(row["loglikelihoods"]) == len(row["greedy"])
    assert {"pred", "pred_norm", "gold"} <= set(row)
    results = json.loads((out / "results.json").read_text())
    metrics = {
        t: {s["metric"] for s in results["summary"] if s["task"] == t}
        for t in ("mc_sum", "mc_words")
    }
    assert metrics == {
        "mc_sum": {"accuracy", "acc_norm"},
        "mc_words": {"accuracy", "acc_norm", "acc_mutual_info"},
    }
    assert "pred_mutual_info" in next(r for r in rows if r["task"] == "mc_words")
    assert results["tasks"]["mc_sum"]["demos"] == "first_n, from the task's fewshot_config"
    assert "## lm-eval tasks" in (out / "report.md").read_text()


def test_demos_override(tmp_path, lm_eval_task_dir):
    """An entry's demos: replaces the task's fewshot_config, runs once and says so."""
    entry = {
        "lm_eval": "mc_words",
        "include_path": str(lm_eval_task_dir),
        "demos": {"selection": "fixed", "fixed": [3, 0]},
    }
    cfg = from_dict(EvaluateConfig, yaml.safe_load(config(tmp_path, entry).read_text()))
    [task] = check_evaluation(cfg)
    assert task.lm_eval.selection == DemoSelection("fixed", 1234, (3, 0))
    assert task.lm_eval.num_seeds(cfg.num_seeds) == 1
    assert (
        task.lm_eval.demos_note
        == "fixed, from demos.selection (overrides the task's fewshot_config)"
    )


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"lm_eval": "mc_summ"}, "unknown lm-eval task 'mc_summ' (did you mean 'mc_sum'?)"),
        ({"lm_eval": "missing.yaml"}, "lm-eval task file 'missing.yaml': no such file"),
        ({"lm_eval": "mc_sum", "limit": 3}, "unknown key 'limit' in an lm-eval task entry"),
        (
            {"lm_eval": "mc_sum", "demos": {"selection": "first_n", "order": "random"}},
            "selection 'first_n' on an lm-eval task keeps its order (as_selected)",
        ),
    ],
)
def test_bad_entries(tmp_path, lm_eval_task_dir, capsys, entry, message):
    entry = {**entry, "include_path": str(lm_eval_task_dir)}
    line = fails_cleanly(capsys, tmp_path, ["evaluate", str(config(tmp_path, entry))])
    assert "tasks.0" in line and message in line


def test_too_many_shots(tmp_path, lm_eval_task_dir, capsys):
    entry = {"lm_eval": "mc_sum", "include_path": str(lm_eval_task_dir)}
    line = fails_cleanly(
        capsys, tmp_path, ["evaluate", str(config(tmp_path, entry)), "--set", "shots=[0,30]"]
    )
    assert "30 shots requested but its few-shot pool holds 24 demonstrations" in line


def first_test_doc(folder: Path, condition) -> int:
    rows = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()]
    return next(i for i, r in enumerate(rows) if condition(r))


@pytest.mark.parametrize(
    "name, changes, message",
    [
        (
            "ll",
            {"output_type": "loglikelihood"},
            "lm-eval task 'll': output_type 'loglikelihood' is not supported",
        ),
        # lm-eval itself checks the first document when it loads a task: break a later one
        (
            "bad_gold",
            {"doc_to_target": "{{answer + (9 if a > 10 else 0)}}"},
            "lm-eval task 'bad_gold': document {doc} has gold",
        ),
        (
            "no_choices",
            {"doc_to_choice": "{{[] if a > 10 else choices}}"},
            "lm-eval task 'no_choices': document {doc} has no choices",
        ),
        (
            "long",
            {"doc_to_text": "{{'pad ' * 2100 if a > 10 else ''}}{{a}} plus {{b}} makes"},
            "lm-eval task 'long': document {doc} at 0 shots is",
        ),
        (
            "hub_task",
            {"dataset_path": "someone/not-cached-here", "dataset_kwargs": {}},
            "dataset 'someone/not-cached-here' cannot be loaded: the Hugging Face Hub is "
            "unreachable",
        ),
    ],
)
def test_bad_task_files(tmp_path, lm_eval_task_dir, capsys, name, changes, message):
    """Each bad lm-eval task is one line naming it, exit 2, and no run folder."""
    path = variant(lm_eval_task_dir, name, **changes)
    line = fails_cleanly(
        capsys, tmp_path, ["evaluate", str(config(tmp_path, {"lm_eval": str(path)}))]
    )
    assert message.format(doc=first_test_doc(lm_eval_task_dir, lambda r: r["a"] > 10)) in line
    if name == "long":  # every token the model would read, against tiny-random-llama's window
        assert "(context and longest choice), over the model's context window of 2048" in line


def test_fixed_indices_outside_the_pool(lm_eval_task_dir):
    task = load_lm_eval_tasks("mc_sum", str(lm_eval_task_dir))[0]
    with pytest.raises(HfIclError, match=r"demos.indices \[99\] outside the few-shot pool"):
        check_shots(task, DemoSelection("fixed", indices=(1, 99)), 2)


def test_without_lm_eval_says_how_to_install(tmp_path, monkeypatch, lm_eval_task_dir, capsys):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    entry = {"lm_eval": "mc_sum", "include_path": str(lm_eval_task_dir)}
    line = fails_cleanly(capsys, tmp_path, ["evaluate", str(config(tmp_path, entry))])
    assert "lm-eval tasks need lm-evaluation-harness: pip install 'hf-icl[lm-eval]'" in line


def test_lm_eval_default_only_for_lm_eval_entries(tmp_path, text_task_dir, capsys):
    cfg = config(
        tmp_path, {"name": str(text_task_dir / "mini.yaml")}, demos={"selection": "lm_eval_default"}
    )
    cfg.write_text(cfg.read_text().replace("- name: ", "- "))
    line = fails_cleanly(capsys, tmp_path, ["evaluate", str(cfg)])
    assert "lm_eval_default replays lm-eval's own sampler" in line


def test_compare_trains_on_the_prompts_demonstration_tokens(tmp_path, lm_eval_task_dir, tokenizer):
    """compare on an lm-eval task: FT sees exactly the ICL prompt's demonstration tokens, ZS and
    ICL share each document's query tokens, and the run writes every arm's rows."""
    from hf_icl.jobs.lm_eval_compare import split_prompts
    from hf_icl.lm_eval_tasks import LmEvalEncoder, fewshot_contexts

    entry = {"lm_eval": "mc_sum", "include_path": str(lm_eval_task_dir)}
    cfg = from_dict(EvaluateConfig, yaml.safe_load(config(tmp_path, entry).read_text()))
    [task] = check_evaluation(cfg)
    source = task.lm_eval
    zs, icl = (split_prompts(tokenizer, source, source.selection, k) for k in (0, 2))
    prompts = fewshot_contexts(source.task, [d.doc for d in source.docs], 2, source.selection)
    context = LmEvalEncoder(tokenizer).encode([(p, " x") for p in prompts])
    assert [icl.prefix + q for q in icl.queries] == [c for c, _ in context]
    assert zs.queries == icl.queries
    demo_text = tokenizer.decode(icl.demos[1].ids)
    assert demo_text.startswith("Question: what is") and demo_text.endswith("\n\n")
    assert [t for d in icl.demos for t in d.ids] == icl.prefix[icl.demos[0].start :]

    out = tmp_path / "compare"
    path = tmp_path / "compare.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "job": "compare",
                "models": ["tiny-random-llama"],
                "tasks": [entry],
                "shots": [2],
                "num_seeds": 1,
                "num_queries": 3,
                "finetune": {"arms": ["dai"]},
            }
        )
    )
    assert main(["compare", str(path), "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted((r["arm"], r["shots"], r["query_id"]) for r in rows) == sorted(
        (arm, k, q) for arm, k in (("zs", 0), ("icl", 2), ("dai", 2)) for q in range(3)
    )
    assert all(len(r["simaou"]) == 2 for r in rows if r["arm"] == "dai")


def test_compare_refuses_per_document_demos(tmp_path, lm_eval_task_dir, capsys):
    path = tmp_path / "compare.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "job": "compare",
                "models": ["tiny-random-llama"],
                "tasks": [{"lm_eval": "mc_words", "include_path": str(lm_eval_task_dir)}],
                "shots": [2],
                "num_queries": 3,
            }
        )
    )
    line = fails_cleanly(capsys, tmp_path, ["compare", str(path)])
    assert "compare fine-tunes on one demo list per unit" in line


@pytest.mark.parametrize(
    "demos",
    [
        {"selection": "per_query_random"},
        {"selection": "balanced"},
        {"selection": "bm25", "order": "nearest_last"},
    ],
)
def test_hf_icl_selections_on_lm_eval_tasks(tmp_path, lm_eval_task_dir, demos):
    """hf-icl's own selections pick rows of the task's few-shot pool for each document; lm-eval
    formats exactly those demonstrations, in the plan's order."""
    pytest.importorskip("bm25s") if demos["selection"] == "bm25" else None
    from hf_icl.lm_eval_tasks import fewshot_contexts

    entry = {"lm_eval": "mc_words", "include_path": str(lm_eval_task_dir), "demos": demos}
    cfg = from_dict(EvaluateConfig, yaml.safe_load(config(tmp_path, entry).read_text()))
    [task] = check_evaluation(cfg)
    source = task.lm_eval
    assert source.num_seeds(cfg.num_seeds) == 2 and demos["selection"] in source.demos_note
    plan, selection = source.plan(1), source.selection_for(1)
    pool = source.task.fewshot_pool()
    prompts = fewshot_contexts(source.task, [d.doc for d in source.docs], 2, selection)
    for q, (doc, prompt) in enumerate(zip(source.docs, prompts)):
        shown = [pool[r] for r in plan.rows(q, 2)]
        expected = "".join(
            f"{d['a']} plus {d['b']} makes {d['choices'][d['answer']]}\n\n" for d in shown
        )
        assert prompt == expected + f"{doc.doc['a']} plus {doc.doc['b']} makes"


def parity_labels(folder: Path, split: str) -> list[int]:
    rows = [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]
    return [(r["a"] + r["b"]) % 2 for r in rows]


def test_baselines_on_a_fixed_label_set(tmp_path, lm_eval_task_dir):
    """Every document's choices are even/odd: majority runs on exactly the demonstrations each
    prompt showed; a task whose choices vary per document is skipped with a note."""
    from hf_icl.lm_eval_tasks import fewshot_contexts

    out = tmp_path / "run"
    tasks = [
        {"lm_eval": name, "include_path": str(lm_eval_task_dir)} for name in ("mc_parity", "mc_sum")
    ]
    tasks[0]["demos"] = {"selection": "fixed", "fixed": [1, 4, 5]}
    cfg = config(tmp_path, tasks[0], tasks=tasks, shots=[0, 1, 3], baselines=["majority"])
    assert main(["evaluate", str(cfg), "--out", str(out), "--quiet"]) == 0
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    baseline = [r for r in rows if r["model"] == "baseline:majority"]
    assert {r["task"] for r in baseline} == {"mc_parity"}
    demos, golds = parity_labels(lm_eval_task_dir, "train"), parity_labels(lm_eval_task_dir, "test")
    assert [demos[i] for i in (1, 4, 5)] == [1, 1, 1] and demos[0] == 0
    assert sorted((r["shots"], r["query_id"]) for r in baseline) == [
        (k, q) for k in (0, 1, 3) for q in range(4)
    ]
    for r in baseline:  # the fixed list's first k rows, all odd; no demonstrations: a tie, even
        assert r["demo_ids"] == [1, 4, 5][: r["shots"]]
        assert r["pred"] == (1 if r["shots"] else 0)
        assert r["gold"] == golds[r["query_id"]]
    report = (out / "report.md").read_text()
    assert "`mc_sum`" in report and "baselines not run (choices vary per document)" in report

    cfg = from_dict(
        EvaluateConfig,
        yaml.safe_load(
            config(tmp_path, {**tasks[0], "demos": {"selection": "lm_eval_default"}}).read_text()
        ),
    )
    [task] = check_evaluation(cfg)
    source = task.lm_eval
    episode, plan = source.unit_demos(1)
    texts = [f"Is {r['a']} + {r['b']} even or odd? It is" for r in source.task.fewshot_pool()]
    words = ["even", "odd"]
    prompts = fewshot_contexts(
        source.task, [d.doc for d in source.docs], 2, source.selection_for(1)
    )
    for q, prompt in enumerate(prompts):  # lm-eval's random draws, one list per document
        shown = plan.rows(q, 2)
        assert (
            prompt
            == "".join(f"{texts[r]} {words[demos[r]]}\n\n" for r in shown) + (episode.query_x[q])
        )
    assert len({tuple(plan.rows(q, 2)) for q in range(4)}) > 1
