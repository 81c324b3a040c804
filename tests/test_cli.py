import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hf_icl.cli import main


def write_config(tmp_path, task_dir, **overrides):
    config = {
        "job": "evaluate",
        "models": ["tiny-random-llama"],
        "tasks": [str(task_dir / "mini.yaml")],
        "shots": [0, 1, 2],
        "num_seeds": 2,
        "num_queries": 3,
        "bootstrap": 50,
        **overrides,
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_models_lists_aliases(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "gemma3-270m" in out and "tiny-random-qwen2" in out


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "hf_icl", "models"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "smollm2-135m" in proc.stdout


def test_bad_config_is_one_line_error_and_writes_nothing(tmp_path, text_task_dir, capsys):
    path = write_config(tmp_path, text_task_dir, shot=[0])
    out = tmp_path / "out"
    assert main(["evaluate", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'shot' (did you mean 'shots'?)" in err
    assert str(path) in err and not out.exists()
    assert main(["run", "quickstrat"]) == 2
    assert "did you mean 'quickstart'" in capsys.readouterr().err


def test_evaluate_end_to_end_and_resume_gives_identical_files(tmp_path, text_task_dir):
    path = write_config(tmp_path, text_task_dir)
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    names = ["samples.jsonl", "results.json", "report.md", "curve.png", "config.yaml"]
    first = {n: (out / n).read_bytes() for n in names}
    samples = [json.loads(line) for line in first["samples.jsonl"].splitlines()]
    assert len(samples) == 2 * 3 * 3  # seeds × shots × queries
    assert {s["shots"] for s in samples} == {0, 1, 2}
    assert all(len(s["demo_ids"]) == s["shots"] for s in samples)
    results = json.loads(first["results.json"])
    accuracy = [s for s in results["summary"] if s["metric"] == "accuracy"]
    assert len(accuracy) == 3 and all(0 <= s["mean"] <= 1 for s in accuracy)
    assert "transformers" in results["versions"]
    assert first["curve.png"][:4] == b"\x89PNG"
    # simulated crash: keep the first unit and half a line of the second, drop final files
    lines = first["samples.jsonl"].decode().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:9]) + lines[9][:20])
    for n in ("results.json", "report.md", "curve.png"):
        (out / n).unlink()
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert {n: (out / n).read_bytes() for n in names} == first


def test_set_overrides_and_config_mismatch(tmp_path, text_task_dir, capsys):
    path = write_config(tmp_path, text_task_dir)
    out = tmp_path / "o"
    assert (
        main(
            [
                "evaluate",
                str(path),
                "--out",
                str(out),
                "--quiet",
                "--set",
                "shots=[0]",
                "--set",
                "num_seeds=1",
            ]
        )
        == 0
    )
    assert yaml.safe_load((out / "config.yaml").read_text())["shots"] == [0]
    assert main(["evaluate", str(path), "--out", str(out), "--quiet"]) == 2
    assert "different config" in capsys.readouterr().err


@pytest.mark.real_model
def test_quickstart_config_parses_and_names_the_real_model():
    from hf_icl.config import from_dict, read_yaml
    from hf_icl.jobs.evaluate_config import EvaluateConfig
    from hf_icl.resources import find_config

    config = from_dict(EvaluateConfig, read_yaml(find_config("quickstart")))
    assert config.models[0].spec == "gemma3-270m" and 0 in config.shots
    assert config.tasks[1]["demos"] == {"selection": "topk"}


def test_configs_lists_builtins_and_resolves_accelerate_paths(capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "accelerate_configs" in out and "fsdp_2gpu" in out and "quickstart" in out
    assert main(["configs", "--path", "ddp_2proc"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_file() and path.name == "ddp_2proc.yaml"
    assert main(["configs", "--path", "ddp_2prc"]) == 2
    assert "did you mean 'ddp_2proc'" in capsys.readouterr().err


def test_quiet_silences_the_libraries_progress_bars(tmp_path, tiny_llama, capfd, monkeypatch):
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging

    from hf_icl.cli import quiet_libraries
    from hf_icl.models import load_model

    model, tokenizer = tiny_llama
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    enable_progress_bars()  # earlier in-process --quiet runs switched them off for the process
    logging.enable_progress_bar()
    capfd.readouterr()
    load_model(str(tmp_path))
    assert "Loading weights" in capfd.readouterr().err  # the bar --quiet must remove
    for name in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(name, "0")  # restored after the test
    try:
        quiet_libraries()
        load_model(str(tmp_path))
        assert "Loading weights" not in capfd.readouterr().err
    finally:
        import datasets

        enable_progress_bars()
        logging.enable_progress_bar()
        datasets.enable_progress_bars()


@pytest.mark.parametrize(
    "override, message",
    [
        ("models.0.spec=smollm2-13m", "models.0: unknown model spec 'smollm2-13m'"),
        ("tasks.0=sentimnt", "tasks.0: unknown task 'sentimnt'"),
    ],
)
def test_config_errors_are_found_without_importing_torch(override, message):
    code = (
        "import sys\n"
        "from hf_icl.cli import main\n"
        f"rc = main(['evaluate', 'quickstart', '--set', {override!r}])\n"
        "print(rc, 'torch' in sys.modules, 'sklearn' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert message in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stdout.split() == ["2", "False", "False"]
