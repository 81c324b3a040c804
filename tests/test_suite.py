import json

import pytest
import yaml

from hf_icl.cli import main

TRAIN = {
    "job": "train",
    "small_model": {"layers": 1, "hidden": 16, "heads": 2},
    "tasks": [{"name": "linear_regression", "dim": 3, "render": {"renderer": "embedding"}}],
    "baselines": ["ols"],
    "train": {
        "steps": 6,
        "batch_size": 4,
        "num_examples": 6,
        "lr": 0.003,
        "log_every": 2,
        "eval_every": 3,
        "eval_episodes": 2,
        "checkpoint_every": 0,
    },
}
SUITE = {
    "job": "suite",
    "title": "two learning rates and an evaluation",
    "description": "Does the learning rate matter?",
    "base": TRAIN,
    "runs": [
        {"name": "lr=0.003"},
        {"name": "lr=0.03", "set": {"train.lr": 0.03}},
        {
            "name": "eval",
            "config": {
                "job": "evaluate",
                "models": ["tiny-random-llama"],
                "tasks": [{"name": "digits_projected", "classes": [0, 1]}],
                "shots": [0, 2],
                "num_seeds": 1,
                "num_queries": 3,
                "bootstrap": 20,
            },
        },
    ],
}


@pytest.fixture(autouse=True)
def fresh_accelerate():
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


def test_suite_runs_each_config_in_its_folder_and_resumes(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    lr = [
        yaml.safe_load((out / n / "config.yaml").read_text())["train"]["lr"]
        for n in ("lr=0.003", "lr=0.03")
    ]
    assert lr == [0.003, 0.03]
    results = json.loads((out / "results.json").read_text())
    assert [(r["name"], r["job"]) for r in results["runs"]] == [
        ("lr=0.003", "train"),
        ("lr=0.03", "train"),
        ("eval", "evaluate"),
    ]
    report = (out / "report.md").read_text()
    assert report.startswith("# two learning rates and an evaluation\n\nDoes the learning rate")
    assert "](lr=0.03/curves.png)" in report and "](eval/curve.png)" in report
    assert "\n## Run `lr=0.03`\n" in report and "\n### " in report
    assert (out / "suite.png").read_bytes()[:4] == b"\x89PNG"
    assert "| lr=0.03 | train | " in report and "| eval | evaluate | — | — |" in report
    assert "| lr=0.03 | train | " in report and " | — | [lr=0.03/]" in report  # regression
    files = {
        p: p.read_bytes()
        for p in out.rglob("*")
        if p.is_file()
        and "checkpoint" not in str(p)
        and "tensorboard" not in str(p)
        and p.name != "report.md"
    }
    # a rerun finds every run finished and rewrites identical files
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    again = {p: p.read_bytes() for p in files}
    assert [p for p in files if again[p] != files[p] and p.suffix != ".png"] == []


def test_bad_suite_configs_are_one_line_errors(tmp_path, capsys):
    cases = [
        ({"runs": [{"name": "a", "set": {"train.stepz": 3}}]}, "runs.0 (a): unknown key"),
        ({"runs": [{"name": "a"}, {"name": "a"}]}, "duplicate run name"),
        ({"runs": [{"name": "../x"}]}, "is not a folder name"),
        ({"runs": [{"name": "a", "config": {"job": "suite"}}]}, "cannot contain a suite"),
    ]
    for change, message in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**SUITE, **change}))
        assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / "o").exists()


def test_plateau_end_is_the_first_step_five_percent_below_the_level():
    from hf_icl.jobs.suite_report import plateau_end

    rows = [
        {"kind": "train", "step": s, "loss": v}
        for s, v in [(10, 3.2), (20, 1.10), (30, 1.099), (40, 1.03), (50, 0.8)]
    ]
    assert plateau_end(rows + [{"kind": "eval", "step": 40}], 1.0986) == 40  # 1.03 <= 0.95 ln 3
    assert plateau_end(rows[:3], 1.0986) is None


def test_runs_that_differ_only_in_seed_are_grouped():
    from hf_icl.jobs.suite_report import seed_groups

    runs = [{"name": n} for n in ["d=50,seed=0", "d=50,seed=1", "d=200,seed=0", "plain", "seed=3"]]
    groups = seed_groups(runs)
    assert {k: [r["name"] for r in v] for k, v in groups.items()} == {
        "d=50": ["d=50,seed=0", "d=50,seed=1"],
        "d=200": ["d=200,seed=0"],
        "plain": ["plain"],
        "seed=3": ["seed=3"],
    }
