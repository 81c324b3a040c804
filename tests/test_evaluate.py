import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import free_port

from hf_icl.cli import main

CONFIG = {
    "job": "evaluate",
    "models": ["tiny-random-llama"],
    "tasks": ["sentiment", {"name": "digits_projected", "classes": [0, 1]}],
    "shots": [0, 1, 2],
    "num_seeds": 3,
    "num_queries": 4,
    "bootstrap": 50,
    "baselines": ["majority", "logistic"],
}


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def test_baselines_share_episodes_and_skip_tasks_they_cannot_read(config_path, tmp_path):
    import json

    assert main(["evaluate", str(config_path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    models = {(r["model"], r["task"]) for r in rows}
    assert ("baseline:logistic", "digits_projected") in models
    assert ("baseline:logistic", "sentiment") not in models  # text inputs: not applicable
    assert ("baseline:majority", "sentiment") in models
    key = lambda r: (r["task"], r["seed"], r["shots"], r["query"])  # noqa: E731
    llm = {key(r): r for r in rows if r["model"] == "tiny-random-llama"}
    for r in rows:
        if r["model"].startswith("baseline:"):
            twin = llm[key(r)]
            assert (r["gold"], r.get("query_id"), r.get("demo_ids")) == (
                twin["gold"],
                twin.get("query_id"),
                twin.get("demo_ids"),
            )


def test_baseline_for_no_task_is_an_error(config_path, tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                str(config_path),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
                "--set",
                "baselines=[ols]",
            ]
        )
        == 2
    )
    assert "baseline 'ols' (regression) applies to none of the tasks" in capsys.readouterr().err


def test_task_models_list_limits_which_models_run(tmp_path):
    import json

    data = {
        **CONFIG,
        "tasks": ["sentiment", {"name": "digits_projected", "classes": [0, 1], "models": []}],
        "shots": [0, 2],
        "num_seeds": 1,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["evaluate", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    pairs = {(r["model"], r["task"]) for r in rows}
    assert ("tiny-random-llama", "sentiment") in pairs
    assert ("tiny-random-llama", "digits_projected") not in pairs
    assert ("baseline:logistic", "digits_projected") in pairs


def test_baselines_only_run_and_unknown_task_model_label(tmp_path, capsys):
    data = {
        **CONFIG,
        "models": [],
        "tasks": [{"name": "digits_projected", "classes": [0, 1]}],
        "shots": [0, 2],
        "num_seeds": 1,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["evaluate", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    report = (tmp_path / "o" / "report.md").read_text()
    assert "baseline:logistic" in report and "tiny-random-llama" not in report
    data["models"] = ["tiny-random-llama"]
    data["tasks"] = [
        {"name": "digits_projected", "classes": [0, 1], "models": ["tiny-random-lama"]}
    ]
    path.write_text(yaml.safe_dump(data))
    assert main(["evaluate", str(path), "--out", str(tmp_path / "p"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "tasks.0.models: unknown model 'tiny-random-lama'" in err
    assert "did you mean 'tiny-random-llama'" in err and not (tmp_path / "p").exists()


@pytest.mark.slow
def test_two_processes_give_the_same_files_as_one(config_path, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["evaluate", str(config_path), "--out", str(one), "--quiet"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    launcher = Path(sys.executable).parent / "accelerate"
    proc = subprocess.run(
        [
            str(launcher if launcher.exists() else shutil.which("accelerate")),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
            "-m",
            "hf_icl",
            "evaluate",
            str(config_path),
            "--out",
            str(two),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("samples.jsonl", "results.json", "report.md"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert not list(two.glob("samples.part-*"))
