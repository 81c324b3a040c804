"""The train job: loss, resume after a real kill, DDP, QLoRA, label masks, configs, Hub push."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import free_port
from safetensors.torch import load_file

from hf_icl.cli import main
from hf_icl.config import from_dict, read_yaml
from hf_icl.errors import HfIclError
from hf_icl.jobs.registry import job_module
from hf_icl.models import text_batch
from hf_icl.render import RenderOptions, TextRenderer
from hf_icl.tasks import load_task
from hf_icl.training.config import TrainConfig
from hf_icl.training.setup import build_learner

ROOT = Path(__file__).resolve().parents[1]
SMALL_REGRESSION = {
    "job": "train",
    "small_model": {"layers": 2, "hidden": 32, "heads": 2},
    "tasks": [{"name": "linear_regression", "dim": 3, "render": {"renderer": "embedding"}}],
    "train": {
        "steps": 60,
        "batch_size": 8,
        "num_examples": 8,
        "lr": 0.003,
        "log_every": 5,
        "eval_every": 20,
        "eval_episodes": 4,
        "checkpoint_every": 5,
    },
}
TEXT_DIGITS = {
    "name": "digits_projected",
    "classes": [0, 1, 2],
    "proj_dim": 3,
    "as": "digits3",
    "render": {"precision": 0},
}


@pytest.fixture(autouse=True)
def fresh_accelerate():
    """Each in-process run builds its own Accelerator, as each CLI process does."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def write_config(tmp_path: Path, data: dict, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def train_in_process(config: Path, out: Path, *extra: str) -> None:
    assert main(["train", str(config), "--out", str(out), "--quiet", *extra]) == 0


def rows(out: Path, kind: str) -> list[dict]:
    return [
        r
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if r["kind"] == kind
    ]


def weights(out: Path) -> dict[str, torch.Tensor]:
    return {
        **load_file(str(out / "model" / "model.safetensors")),
        **load_file(str(out / "model" / "read_in_out.safetensors")),
    }


def test_loss_decreases_and_outputs_are_written(tmp_path):
    """Full fine-tuning of a tiny Llama on text-rendered projected digits."""
    config = write_config(
        tmp_path,
        {
            "job": "train",
            "model": "tiny-random-llama",
            "tasks": [TEXT_DIGITS],
            "eval_tasks": ["iris_projected"],
            "train": {
                "steps": 8,
                "batch_size": 4,
                "gradient_accumulation_steps": 2,
                "num_examples": 6,
                "lr": 0.003,
                "log_every": 2,
                "eval_every": 4,
                "eval_episodes": 2,
                "checkpoint_every": 4,
                "keep_checkpoints": 1,
                "mixed_precision": "bf16",
            },
        },
    )
    out = tmp_path / "run"
    train_in_process(config, out)
    losses = [r["loss"] for r in rows(out, "train")]
    assert [r["step"] for r in rows(out, "train")] == [2, 4, 6, 8]
    assert losses[-1] < losses[0] - 1.0  # from ~ln(49152) = 10.8 towards the 3 label tokens
    evals = {(r["task"], r["split"], r["step"]) for r in rows(out, "eval")}
    assert ("iris_projected", "unseen", 8) in evals and ("digits3", "seen", 0) in evals
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-8"]
    results = json.loads((out / "results.json").read_text())
    assert {(s["task"], s["split"]) for s in results["summary"]} == {
        ("digits3", "seen"),
        ("digits3", "unseen"),
        ("iris_projected", "unseen"),
    }
    saved = {p.name for p in (out / "model").iterdir()}
    assert {"model.safetensors", "tokenizer.json", "README.md", "hf_icl_learner.json"} <= saved
    assert "load_trained" in (out / "model" / "README.md").read_text()
    assert (out / "curves.png").stat().st_size > 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """SMALL_REGRESSION trained without interruption (checkpoints step-55 and step-60 kept)."""
    folder = tmp_path_factory.mktemp("reference")
    train_in_process(write_config(folder, SMALL_REGRESSION), folder / "run")
    return folder / "run"


def assert_same_run(run: Path, reference: Path) -> None:
    """Bitwise the same final weights, and the same training log apart from timings."""
    resumed, uninterrupted = weights(run), weights(reference)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    strip = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows(run, "train")]
    assert strip == [
        {k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows(reference, "train")
    ]


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, reference, capsys):
    """SIGKILL while checkpoint 10 is being written (in practice: after accelerate wrote its
    first files, before the rest), then the same command resumes from step-5."""
    config = write_config(tmp_path, SMALL_REGRESSION)
    killed = tmp_path / "killed"
    saved = killed / "checkpoints"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hf_icl", "train", str(config), "--out", str(killed), "--quiet"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while not (
        (saved / "step-10.tmp" / "model.safetensors").exists() or (saved / "step-10").is_dir()
    ):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert (saved / "step-5").is_dir() and not (killed / "model").exists()
    train_in_process(config, killed)  # the same command continues from the checkpoint
    assert "skipped" not in capsys.readouterr().err  # step-10.tmp is no candidate
    assert_same_run(killed, reference)
    assert sorted(p.name for p in saved.iterdir()) == ["step-55", "step-60"]  # keep_checkpoints


def interrupted_copy(reference: Path, to: Path) -> Path:
    """The reference run as if killed after its last checkpoint, before the final outputs."""
    shutil.copytree(reference, to)
    (to / "results.json").unlink()
    shutil.rmtree(to / "model")
    return to


@pytest.mark.parametrize("damage", ["deleted file", "truncated file", "no marker"])
def test_half_written_checkpoint_resumes_from_the_previous_one(tmp_path, reference, capsys, damage):
    from hf_icl.training.checkpoints import MARKER, problem

    run = interrupted_copy(reference, tmp_path / "run")
    newest = run / "checkpoints" / "step-60"
    if damage == "deleted file":
        (newest / "optimizer.bin").unlink()
    elif damage == "truncated file":
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    else:  # as a checkpoint written before markers existed
        (newest / MARKER).unlink()
    train_in_process(write_config(tmp_path, SMALL_REGRESSION), run)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"hf-icl: warning: checkpoint {newest} ")
    assert warnings[0].endswith("; resuming from step-55")
    assert_same_run(run, reference)
    assert problem(newest) is None  # rewritten complete


def test_checkpoint_check_names_each_problem(tmp_path, reference, capsys):
    from hf_icl.training.checkpoints import MARKER, Checkpoints, problem

    saved = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints", saved)
    newest, older = saved / "step-60", saved / "step-55"
    assert problem(newest) is None and problem(older) is None
    state = newest / "scheduler.bin"
    original = state.read_bytes()
    state.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # same size, one bit flipped
    assert problem(newest) == "scheduler.bin does not match its SHA-256 in the marker"
    state.write_bytes(original + b"\0")
    assert problem(newest) == (
        f"scheduler.bin has {len(original) + 1} bytes, the marker lists {len(original)}"
    )
    (newest / MARKER).write_text(json.dumps({"step": 55, "files": {}}))
    assert problem(newest) == "its marker is for step 55"
    for broken in ('{"step": 6', '{"step": 60, "files": {"a": 5}}', "[]"):
        (newest / MARKER).write_text(broken)
        assert problem(newest).startswith(f"unreadable completion marker {MARKER}")
    (older / MARKER).unlink()
    assert Checkpoints(saved, 2).newest_complete() is None
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" skipped: ")[0] for line in err] == [
        f"hf-icl: warning: checkpoint {newest}",
        f"hf-icl: warning: checkpoint {older}",
    ]
    assert all(line.endswith("; training starts from step 0") for line in err)


def test_fsdp_without_gpu_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    """accelerate runs an FSDP config on a CPU-only machine as DDP: refused instead."""
    if torch.cuda.is_available():
        pytest.skip("FSDP runs on GPUs")
    for key, value in {
        "ACCELERATE_USE_FSDP": "true",
        "FSDP_VERSION": "2",
        "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    }.items():
        monkeypatch.setenv(key, value)  # what `accelerate launch` with fsdp_2gpu.yaml sets
    out = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path, SMALL_REGRESSION)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-icl: error: accelerate launch asked for FSDP") and "no GPU" in err
    assert err.count("\n") == 1 and not out.exists()


def test_two_processes_match_one(tmp_path):
    data = {
        **SMALL_REGRESSION,
        "train": {
            **SMALL_REGRESSION["train"],
            "steps": 6,
            "gradient_accumulation_steps": 2,
            "checkpoint_every": 0,
        },
    }
    config = write_config(tmp_path, data)
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
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
            "train",
            str(config),
            "--out",
            str(two),
            "--quiet",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one = tmp_path / "one"
    train_in_process(config, one)
    a, b = weights(one), weights(two)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert [r["loss"] for r in rows(one, "train")] == pytest.approx(
        [r["loss"] for r in rows(two, "train")], rel=1e-5
    )
    assert [r["tokens"] for r in rows(one, "train")] == [r["tokens"] for r in rows(two, "train")]


def test_qlora_trains_nonzero_lora_gradients_after_an_eval_forward(tiny_llama, tmp_path):
    import bitsandbytes as bnb

    model, tokenizer = tiny_llama
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    data = {
        "job": "train",
        "tasks": [TEXT_DIGITS],
        "model": {"spec": str(tmp_path / "tiny"), "quantization": "4bit"},
        "train": {
            "finetune": "lora",
            "gradient_checkpointing": True,
            "steps": 2,
            "batch_size": 2,
            "num_examples": 4,
            "eval_episodes": 2,
            "checkpoint_every": 0,
        },
    }
    learner, _, tasks = build_learner(from_dict(TrainConfig, data))
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in learner.modules())
    batch = tasks[0].render(tasks[0].draw(0, 2, 4, "train"), False)
    with torch.no_grad():  # bitsandbytes may repack 4-bit weights for inference here
        learner.eval()(batch.rows, batch.cols, **batch.inputs)
    learner.train()(batch.rows, batch.cols, **batch.inputs)[0].logsumexp(-1).sum().backward()
    lora_b = [p.grad for n, p in learner.named_parameters() if "lora_B" in n]
    assert lora_b and all(g is not None and g.abs().sum() > 0 for g in lora_b)
    assert all(not p.requires_grad for n, p in learner.named_parameters() if "lora_" not in n)
    out = tmp_path / "run"
    train_in_process(write_config(tmp_path, data), out)  # and the job runs end to end
    assert (out / "model" / "adapter_model.safetensors").is_file()


def test_momentum_attention_trains():
    outputs = []
    for momentum in (None, {"eta": 0.3}):
        config = from_dict(
            TrainConfig,
            {
                "model": {"spec": "tiny-random-llama", "momentum": momentum},
                "tasks": [TEXT_DIGITS],
                "train": {"finetune": "lora"},
            },
        )
        learner, _, tasks = build_learner(config)
        batch = tasks[0].render(tasks[0].draw(0, 2, 4, "train"), False)
        out = learner(batch.rows, batch.cols, **batch.inputs)
        out[0].logsumexp(-1).sum().backward()
        assert all(p.grad.abs().sum() > 0 for n, p in learner.named_parameters() if "lora_B" in n)
        outputs.append(out.detach())
    assert not torch.allclose(outputs[0], outputs[1])


def test_ranks_take_disjoint_slices_of_each_global_batch():
    from hf_icl.training.loop import my_slices

    for world in (1, 2, 4):
        taken = [
            i
            for rank in range(world)
            for part in my_slices(16, 2, rank, world)
            for i in range(16)[part]
        ]
        assert sorted(taken) == list(range(16))
    with pytest.raises(HfIclError, match="do not split"):
        my_slices(6, 2, 0, 2)


def test_curriculum_and_bias_fraction_follow_the_step_and_the_batch():
    data = {
        "small_model": {},
        "train": {"num_examples": 9},
        "tasks": [
            {
                "name": "linear_regression",
                "dim": 4,
                "render": {"renderer": "embedding"},
                "curriculum": {
                    "dims_start": 2,
                    "dims_end": 4,
                    "dims_inc": 1,
                    "points_start": 5,
                    "points_end": 9,
                    "points_inc": 2,
                    "interval": 10,
                },
            }
        ],
    }
    _, _, tasks = build_learner(from_dict(TrainConfig, data))
    section = from_dict(TrainConfig, data).train
    assert [tasks[0].stage(step, section) for step in (0, 10, 25)] == [(2, 5), (3, 7), (4, 9)]
    episodes = tasks[0].draw(0, 3, 5, "train", active_dims=2)
    assert all(ep.num_demos == 5 and not ep.demo_x[:, 2:].any() for ep in episodes)
    assert tasks[0].eval_episodes("test", 2, 9)[0].demo_x[:, 3].any()  # the last stage
    data = {
        "small_model": {},
        "tasks": [
            {"name": "digits_projected", "bias_fraction": 0.5, "render": {"renderer": "embedding"}}
        ],
    }
    _, _, tasks = build_learner(from_dict(TrainConfig, data))
    for first in (0, 8, 16):
        assert sum(ep.meta["biased"] for ep in tasks[0].draw(first, 8, 4, "train")) == 4


@pytest.mark.parametrize("final_only", [False, True])
def test_label_mask_hits_exactly_the_label_tokens(tokenizer, final_only):
    definition, sampler = load_task(TEXT_DIGITS)
    renderer = TextRenderer(tokenizer, from_dict(RenderOptions, definition.render))
    episodes = sampler.episodes(0, 3, 5, 0, "train")
    batch = text_batch(renderer, episodes, final_only, tokenizer.pad_token_id)
    ids = batch.inputs["input_ids"]
    expected = [(b, i) for b in range(3) for i in range(5) if not final_only or i == 4]
    assert list(zip(batch.rows.tolist(), batch.examples.tolist())) == expected
    words = renderer.label_words(episodes[0])
    for b, col, target, i in zip(batch.rows, batch.cols, batch.targets, batch.examples):
        assert target == ids[b, col + 1]  # the prediction at col is the next token: the label
        assert tokenizer.decode([int(target)]) == words[int(episodes[b].demo_y[i])]
    label_ids = {tokenizer.convert_tokens_to_ids(tokenizer.tokenize(w))[0] for w in words}
    lengths = [len(renderer.render_sequence(ep).ids) for ep in episodes]
    in_text = sum(int(t) in label_ids for b in range(3) for t in ids[b, : lengths[b]])
    assert in_text == 15 and len(batch.targets) == len(expected)


def test_shipped_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    for path in sorted((ROOT / "eval_configs").glob("*.yaml")):
        data = read_yaml(path)
        from_dict(job_module(data.get("job", "evaluate")).Config, data, source=str(path))
    accelerate = sorted((ROOT / "accelerate_configs").glob("*.yaml"))
    kinds = {str(load_config_from_file(str(p)).distributed_type) for p in accelerate}
    assert kinds == {"DistributedType.MULTI_GPU", "DistributedType.FSDP"}


def test_push_to_hub_uploads_the_model_folder(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the check before work
    monkeypatch.setattr(HfApi, "whoami", lambda self, **kw: {"name": "me"})
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw))
    )
    monkeypatch.setattr(
        HfApi,
        "upload_folder",
        lambda self, **kw: calls.append(
            ("upload_folder", kw["repo_id"], kw, sorted(os.listdir(kw["folder_path"])))
        ),
    )
    data = {**SMALL_REGRESSION, "train": {**SMALL_REGRESSION["train"], "steps": 2}}
    out = tmp_path / "run"
    train_in_process(write_config(tmp_path, data), out, "--push-to-hub", "me/linreg", "--private")
    (create, repo, kw), (upload, repo2, kw2, files) = calls
    assert (create, repo, kw) == (
        "create_repo",
        "me/linreg",
        {"repo_type": "model", "private": True, "exist_ok": True},
    )
    assert (upload, repo2, kw2["folder_path"]) == ("upload_folder", "me/linreg", str(out / "model"))
    assert {"README.md", "model.safetensors", "read_in_out.safetensors"} <= set(files)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tasks": ["linear_regression"]}, "embedding renderer"),
        ({"train": {"batch_size": 6, "gradient_accumulation_steps": 4}}, "multiple of"),
        ({"model": "tiny-random-llama"}, "exactly one of"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, change, message):
    data = {**SMALL_REGRESSION, **change}
    with pytest.raises(HfIclError, match=message) as err:
        config = from_dict(TrainConfig, data)
        build_learner(config)
    assert "\n" not in str(err.value)


EMBEDDED = {"renderer": "embedding"}
TOKENIZER_CHECKS = {
    "mixed renderers": (
        {
            "model": "tiny-random-llama",
            "tasks": [TEXT_DIGITS, {"name": "iris_projected", "render": EMBEDDED}],
        },
        "tasks: every task of a train run needs the same render.renderer; got embedding, text",
    ),
    "multi-token label word": (
        {
            "model": "tiny-random-llama",
            "tasks": [
                {
                    "name": "digits_projected",
                    "classes": [0, 1],
                    "render": {**EMBEDDED, "label_words": [" A", " zebra crossing"]},
                }
            ],
        },
        "label word ' zebra crossing' is 2 tokens; the embedding renderer needs single-token",
    ),
    "different read-in sizes": (
        {
            "tasks": [
                SMALL_REGRESSION["tasks"][0],
                {"name": "linear_regression", "dim": 4, "as": "wide", "render": EMBEDDED},
            ]
        },
        "tasks: the embedding renderer's read-in is shared",
    ),
}


@pytest.mark.parametrize("case", TOKENIZER_CHECKS)
def test_tokenizer_checks_run_before_the_run_folder_exists(tmp_path, capsys, case):
    change, message = TOKENIZER_CHECKS[case]
    data = {**SMALL_REGRESSION, **change}
    if "model" in change:  # a pretrained model instead of the small one
        del data["small_model"]
    config = write_config(tmp_path, data)
    out = tmp_path / "parent" / "run"
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hf-icl: error: {config}: ") and message in err, err
    assert err.count("\n") == 1 and not (tmp_path / "parent").exists()


def test_looped_model_is_also_evaluated_with_more_loops_than_in_training(tmp_path):
    data = {
        **SMALL_REGRESSION,
        "small_model": {
            "architecture": "looped",
            "layers": 1,
            "hidden": 32,
            "heads": 2,
            "loops": 3,
            "eval_loops": [6],
        },
        "train": {**SMALL_REGRESSION["train"], "steps": 4, "eval_every": 4, "checkpoint_every": 0},
    }
    out = tmp_path / "run"
    train_in_process(write_config(tmp_path, data), out)
    evals = rows(out, "eval")
    assert [(r["step"], r["split"]) for r in evals] == [
        (0, "seen"),
        (0, "unseen"),
        (0, "unseen, 6 loops"),
        (4, "seen"),
        (4, "unseen"),
        (4, "unseen, 6 loops"),
    ]
    assert evals[-1]["curve"] != evals[-2]["curve"]  # six loops compute something else
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["loops"] == 3 and saved["eval_loops"] == [6]
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert "unseen, 6 loops" in {s["split"] for s in summary}


def test_tuned_baselines_in_a_train_run_use_held_out_queries(tmp_path):
    data = {
        **SMALL_REGRESSION,
        "baselines": [{"name": "gd", "gd_steps": 5}, "ols"],
        "train": {
            **SMALL_REGRESSION["train"],
            "steps": 2,
            "eval_every": 2,
            "num_examples": 10,
            "eval_episodes": 16,
            "checkpoint_every": 0,
        },
    }
    out = tmp_path / "run"
    train_in_process(write_config(tmp_path, data), out)
    baselines = {
        b["baseline"]: b["curve"]
        for b in json.loads((out / "results.json").read_text())["baselines"]
    }
    # d = 3: with 9 examples least squares is exact and tuned 5-step GD gets most of the way
    assert baselines["ols"][-1] < 1e-6
    assert baselines["gd(gd_steps=5)"][-1] < 0.5 * baselines["gd(gd_steps=5)"][0]
