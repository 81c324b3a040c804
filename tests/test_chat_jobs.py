"""Chat-formatted episodes in the compare and train jobs."""

import json

import yaml

from hf_icl.cli import main


def test_compare_runs_on_chat_prompts(tmp_path, text_task_dir):
    config = {
        "job": "compare",
        "models": ["tiny-random-llama"],
        "tasks": [
            {
                "name": str(text_task_dir / "mini.yaml"),
                "render": {"chat_template": True, "system": "Be brief."},
            }
        ],
        "shots": [2],
        "num_seeds": 1,
        "num_queries": 2,
        "finetune": {"arms": ["dai"], "lr_sweep": [0.01], "sweep_episodes": 1, "sweep_queries": 2},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["compare", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    assert {r["arm"] for r in rows} == {"zs", "icl", "dai"} and len(rows) == 2 * 3
    assert all(len(r["simaou"]) == 2 for r in rows if r["arm"] == "dai")


def test_compare_refuses_generation_scoring(tmp_path, text_task_dir, capsys):
    config = {
        "job": "compare",
        "models": ["tiny-random-llama"],
        "tasks": [str(text_task_dir / "mini.yaml")],
        "shots": [2],
        "scoring": {"method": "generate"},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["compare", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "method generate is for evaluate" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_train_on_chat_formatted_episodes(tmp_path):
    from accelerate.state import AcceleratorState

    config = {
        "job": "train",
        "model": "tiny-random-llama",
        "tasks": [{"name": "sentiment", "render": {"chat_template": True}}],
        "train": {
            "steps": 6,
            "batch_size": 4,
            "num_examples": 4,
            "lr": 0.003,
            "log_every": 2,
            "eval_every": 6,
            "eval_episodes": 2,
            "checkpoint_every": 6,
        },
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        assert main(["train", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    rows = [json.loads(x) for x in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_model_without_chat_template_is_one_line_error_before_the_run(tmp_path, tiny_llama, capsys):
    import copy

    model, tok = tiny_llama
    folder = tmp_path / "plain-model"
    plain = copy.copy(tok)
    plain.chat_template = None
    model.save_pretrained(folder)
    plain.save_pretrained(folder)
    config = {
        "job": "evaluate",
        "models": [str(folder)],
        "shots": [0, 1],
        "num_queries": 2,
        "tasks": [{"name": "sentiment", "render": {"chat_template": True}}],
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    capsys.readouterr()  # the save's progress bars
    assert main(["evaluate", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hf-icl: error:") and len(err.splitlines()) == 1
    assert "has no chat template" in err and str(folder) in err and "tasks.0" in err
    assert not (tmp_path / "o").exists()
