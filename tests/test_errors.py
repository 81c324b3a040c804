"""Every user or environment error is one `hf-icl: error:` line, exit 2, and writes nothing.

One test per defect class: model specs, Hub-backed tasks offline, malformed data rows,
malformed --set values, and pushes refused before any work (or failing at the end while keeping
the local files). The Hub is never reached: huggingface_hub calls are replaced and asserted.
"""

import json
import os
import re
from pathlib import Path

import huggingface_hub.constants
import pytest
import yaml
from huggingface_hub import HfApi
from huggingface_hub.errors import LocalTokenNotFoundError

from hf_icl.cli import main

TINY_BUILD = [
    "--set",
    "num_train_episodes=2",
    "--set",
    "num_test_episodes=2",
    "--set",
    "num_demos=2",
    "--set",
    "num_queries=2",
]
TRAIN = {
    "job": "train",
    "small_model": {"layers": 1, "hidden": 16, "heads": 2},
    "tasks": [{"name": "linear_regression", "dim": 2, "render": {"renderer": "embedding"}}],
    "train": {"steps": 2, "batch_size": 2, "num_examples": 4, "eval_episodes": 2},
}


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def fails_cleanly(capsys, root: Path, argv: list[str]) -> str:
    """Run the CLI; assert exit 2, one error line, no traceback, nothing written under root."""
    before = listing(root)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hf-icl: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert listing(root) == before
    return lines[0]


def write_evaluate(tmp_path: Path, task_dir: Path, model) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "job": "evaluate",
                "models": [model],
                "tasks": [str(task_dir / "mini.yaml")],
                "shots": [0],
                "num_seeds": 1,
                "num_queries": 2,
            }
        )
    )
    return path


def model_folder(root: Path, config: dict | None, files: tuple[str, ...]) -> str:
    root.mkdir()
    if config is not None:
        (root / "config.json").write_text(json.dumps(config))
    for name in files:
        (root / name).write_bytes(b"")
    return str(root)


@pytest.mark.parametrize(
    "make_spec, message",
    [
        (
            lambda d: str(d / "no_such_folder"),
            r"model spec '.*no_such_folder': no such local folder",
        ),
        (lambda d: "./models/mine", r"'./models/mine': no such local folder"),
        (
            lambda d: model_folder(
                d / "custom",
                {"model_type": "my_arch", "auto_map": {"AutoConfig": "m.C"}},
                ("model.safetensors",),
            ),
            r"config.json: model_type 'my_arch' is not built into transformers .*trust_remote_code: true",
        ),
        (
            lambda d: model_folder(
                d / "unknown", {"model_type": "my_arch"}, ("model.safetensors",)
            ),
            r"model_type 'my_arch' is not built into transformers .* ships no model code",
        ),
        (
            lambda d: model_folder(d / "pickles", {"model_type": "llama"}, ("pytorch_model.bin",)),
            r"holds no \*.safetensors weights \(only pickle \*.bin",
        ),
        (
            lambda d: model_folder(d / "noconfig", None, ("model.safetensors",)),
            r"has no config.json",
        ),
        (
            lambda d: "bad id!/x",
            r"model spec 'bad id!/x': no such local folder, and not a valid Hub repo id",
        ),
        (
            lambda d: "HuggingFaceTB/not-cached-model",
            r"offline mode is on .* not in the local Hub cache",
        ),
        (
            lambda d: "smollm-135m",
            r"unknown model spec 'smollm-135m' \(did you mean 'smollm2-135m'\?\)",
        ),
        (
            lambda d: {"spec": "tiny-random-llama", "adapter": str(d / "no_adapter")},
            r"adapter '.*no_adapter': no such local folder",
        ),
    ],
)
def test_bad_model_specs_are_refused_before_the_run_folder(
    tmp_path, text_task_dir, capsys, make_spec, message
):
    models = tmp_path / "models"
    models.mkdir()
    config = write_evaluate(tmp_path, text_task_dir, make_spec(models))
    line = fails_cleanly(
        capsys, tmp_path, ["evaluate", str(config), "--out", str(tmp_path / "run")]
    )
    assert "models.0" in line
    assert re.search(message, line), line


def test_hub_task_offline_names_the_task_and_dataset(tmp_path, capsys):
    line = fails_cleanly(capsys, tmp_path, ["build", "sst2", "--out", str(tmp_path / "sst2")])
    assert "task 'sst2': dataset 'glue' (sst2)" in line and "offline mode is on" in line
    line = fails_cleanly(
        capsys,
        tmp_path,
        ["build", "digits_projected", "--set", "dataset=org/absent", "--out", str(tmp_path / "d")],
    )
    assert "dataset 'org/absent'" in line and "offline mode is on" in line


@pytest.mark.parametrize(
    "row, message",
    [
        ({"label": 1}, "missing field 'text'; fields: label"),
        ({"text": "fine"}, "missing field 'label'"),
        ({"text": None, "label": 1}, "field 'text' is null"),
        ({"text": "fine", "label": None}, "field 'label' is null"),
        ({"text": ["a", "list"], "label": 1}, "field 'text' must be text or a number, got list"),
        ({"text": True, "label": 1}, "field 'text' must be text or a number, got bool"),
        (
            {"text": "fine", "label": "1"},
            "label field 'label' must be an integer class index, got str",
        ),
        (
            {"text": "fine", "label": 1.0},
            "label field 'label' must be an integer class index, got float",
        ),
        ({"text": "fine", "label": 7}, "label 7 is outside 0..1"),
        (["not", "an", "object"], "expected an object with fields, got list"),
    ],
)
@pytest.mark.parametrize("split", ["train", "test"])
def test_malformed_data_rows_name_file_line_and_field(
    tmp_path, text_task_dir, capsys, row, message, split
):
    data = text_task_dir / f"{split}.jsonl"
    lines = data.read_text().splitlines(keepends=True)
    lines[4] = json.dumps(row) + "\n"  # line 5, after a blank line that must still be counted
    data.write_text("".join(lines[:2] + ["\n"] + lines[2:]))
    line = fails_cleanly(
        capsys,
        text_task_dir,
        [
            "build",
            str(text_task_dir / "mini.yaml"),
            "--out",
            str(text_task_dir / "out"),
            *TINY_BUILD,
        ],
    )
    assert line.startswith(f"hf-icl: error: {data}:6: {message}"), line


@pytest.mark.parametrize(
    "override, message",
    [
        ("shots=[0,", "--set 'shots=[0,': the value '[0,' is not valid YAML"),
        ("a: b: c", "--set 'a: b: c': expected key=value"),
        ("=3", "--set '=3': an empty key part"),
        ("models..dtype=float32", "--set 'models..dtype=float32': an empty key part"),
        (
            "models.9.dtype=x",
            "--set models.9.dtype: 'models.9' is not an index of a list of length 1 "
            "(indices: 0..0)",
        ),
        ("shots=!!python/object/apply:os.system [echo]", "is not valid YAML (could not determine"),
        ("models.0.spec.x=1", "'models.0.spec' is str 'tiny-random-llama', not a mapping or list"),
    ],
)
def test_malformed_set_values_name_the_argument(tmp_path, text_task_dir, capsys, override, message):
    config = write_evaluate(tmp_path, text_task_dir, {"spec": "tiny-random-llama"})
    line = fails_cleanly(
        capsys,
        tmp_path,
        ["evaluate", str(config), "--out", str(tmp_path / "run"), "--set", override],
    )
    assert line.startswith("hf-icl: error: ") and message in line, line


@pytest.fixture
def online(monkeypatch):
    """huggingface_hub believes it is online; every Hub call is recorded, none is made."""
    calls: list[tuple] = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(
        HfApi,
        "whoami",
        lambda self, **kw: (
            calls.append(("whoami",)) or {"name": "me", "auth": {"accessToken": {"role": "write"}}}
        ),
    )
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw))
    )
    monkeypatch.setattr(
        HfApi,
        "upload_folder",
        lambda self, **kw: calls.append(
            (
                "upload_folder",
                kw["repo_id"],
                kw["repo_type"],
                kw["folder_path"],
                sorted(os.listdir(kw["folder_path"])),
            )
        ),
    )
    return calls


def refuse(exc: Exception):
    def raiser(self, *args, **kw):
        raise exc

    return raiser


@pytest.mark.parametrize("command", ["build", "train"])
@pytest.mark.parametrize(
    "setup, repo, message",
    [
        (
            lambda mp: mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True),
            "me/ok",
            "--push-to-hub me/ok: cannot push: the Hugging Face Hub is "
            "unreachable: offline mode is on",
        ),
        (
            lambda mp: mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False),
            "bad repo!",
            "--push-to-hub 'bad repo!': not a valid Hub repo id",
        ),
        (
            lambda mp: mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False),
            "a/b/c",
            "--push-to-hub 'a/b/c': not a valid Hub repo id",
        ),
        (
            lambda mp: (
                mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False),
                mp.setattr(HfApi, "whoami", refuse(LocalTokenNotFoundError("no token"))),
            ),
            "me/ok",
            "cannot push without a Hugging Face token: log in with `hf auth login`",
        ),
        (
            lambda mp: (
                mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False),
                mp.setattr(HfApi, "whoami", refuse(ConnectionError("Name or service not known"))),
            ),
            "me/ok",
            "cannot push: the Hugging Face Hub is unreachable (no network connection",
        ),
        (
            lambda mp: (
                mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False),
                mp.setattr(
                    HfApi,
                    "whoami",
                    lambda self, **kw: {"name": "me", "auth": {"accessToken": {"role": "read"}}},
                ),
            ),
            "me/ok",
            "cannot push with a read-only token",
        ),
    ],
)
def test_push_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch, command, setup, repo, message
):
    monkeypatch.setattr(HfApi, "create_repo", refuse(AssertionError("no push may start")))
    setup(monkeypatch)
    if command == "build":
        argv = ["build", "gmm", *TINY_BUILD]
    else:
        config = tmp_path / "train.yaml"
        config.write_text(yaml.safe_dump(TRAIN))
        argv = ["train", str(config)]
    line = fails_cleanly(
        capsys, tmp_path, [*argv, "--out", str(tmp_path / "out"), "--push-to-hub", repo]
    )
    assert message in line, line


def test_private_needs_push_to_hub(tmp_path, capsys):
    line = fails_cleanly(
        capsys, tmp_path, ["build", "gmm", "--out", str(tmp_path / "o"), "--private"]
    )
    assert line == "hf-icl: error: --private applies with --push-to-hub REPO_ID"


def test_failed_push_keeps_the_dataset_and_push_retries_it(tmp_path, capsys, monkeypatch, online):
    out = tmp_path / "gmm"
    recording = HfApi.upload_folder
    monkeypatch.setattr(HfApi, "upload_folder", refuse(ConnectionError("connection reset")))
    assert (
        main(
            ["build", "gmm", "--out", str(out), *TINY_BUILD, "--push-to-hub", "me/eps", "--private"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("hf-icl: error:") == 1
    assert f"pushing {out} to me/eps failed: the Hugging Face Hub is unreachable" in err
    assert f"push them later with `hf-icl push {out} me/eps --private`" in err
    files = sorted(os.listdir(out))
    assert {"README.md", "dataset_dict.json", "train", "test"} <= set(files)
    monkeypatch.setattr(HfApi, "upload_folder", recording)  # the Hub is back
    online.clear()
    assert main(["push", str(out), "me/eps", "--private"]) == 0
    assert "pushed to https://huggingface.co/datasets/me/eps" in capsys.readouterr().out
    assert online == [
        ("whoami",),
        ("create_repo", "me/eps", {"repo_type": "dataset", "private": True, "exist_ok": True}),
        ("upload_folder", "me/eps", "dataset", str(out), files),
    ]


def test_push_subcommand_uploads_a_train_runs_model_folder(tmp_path, capsys, online):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "README.md"):
        (run / "model" / name).write_text("{}")
    (run / "results.json").write_text("{}")
    assert main(["push", str(run), "me/learner"]) == 0
    assert capsys.readouterr().out.strip() == "pushed to https://huggingface.co/me/learner"
    assert online == [
        ("whoami",),
        ("create_repo", "me/learner", {"repo_type": "model", "private": False, "exist_ok": True}),
        (
            "upload_folder",
            "me/learner",
            "model",
            str(run / "model"),
            ["README.md", "config.json", "model.safetensors"],
        ),
    ]


def test_push_subcommand_refuses_a_folder_with_nothing_to_push(tmp_path, capsys, online):
    (tmp_path / "notes.txt").write_text("mine")
    line = fails_cleanly(capsys, tmp_path, ["push", str(tmp_path), "me/x"])
    assert "nothing to push: neither a finished train run" in line and online == []
    line = fails_cleanly(capsys, tmp_path, ["push", str(tmp_path / "missing"), "me/x"])
    assert "nothing to push" in line


def test_failed_push_after_training_keeps_the_run(tmp_path, capsys, monkeypatch, online):
    from accelerate.state import AcceleratorState

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(TRAIN))
    run = tmp_path / "run"
    monkeypatch.setattr(
        HfApi, "create_repo", refuse(RuntimeError("403 Forbidden: no write access"))
    )
    try:
        assert (
            main(
                [
                    "train",
                    str(config),
                    "--out",
                    str(run),
                    "--quiet",
                    "--push-to-hub",
                    "someone-else/model",
                ]
            )
            == 2
        )
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("hf-icl: error:") == 1
    assert (
        f"pushing {run / 'model'} to someone-else/model failed: 403 Forbidden: no write access"
        in err
    )
    assert f"push them later with `hf-icl push {run} someone-else/model`" in err
    assert (run / "results.json").is_file() and (run / "model" / "README.md").is_file()
