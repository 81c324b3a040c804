"""Embedding renderer: read-in layout, label positions, causality, and save/reload of trained
read-in/read-out with their model."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from hf_icl.cli import main
from hf_icl.config import from_dict
from hf_icl.models import (
    ICLModel,
    SmallModelConfig,
    build_small_model,
    embedding_batch,
    load_trained,
)
from hf_icl.render.embedding import EmbeddingRenderer, ReadIn
from hf_icl.tasks import load_task
from hf_icl.training.config import TrainConfig
from hf_icl.training.setup import build_learner

REGRESSION = {"name": "linear_regression", "dim": 3, "render": {"renderer": "embedding"}}
GMM = {"name": "gmm", "dim": 4, "render": {"renderer": "embedding"}}


@pytest.fixture(autouse=True)
def fresh_accelerate():
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def test_regression_read_in_interleaves_inputs_and_targets():
    _, sampler = load_task(REGRESSION)
    episodes = sampler.episodes(0, 2, 5, 0, "train")
    batch = embedding_batch(EmbeddingRenderer(3, None), episodes, final_only=False)
    read_in = ReadIn(3, 8, regression=True)
    embeds = read_in(batch.inputs["x"], batch.inputs["labels"], token_embedding=None)
    weight, bias = read_in.linear.weight, read_in.linear.bias
    x, y = torch.tensor(episodes[1].demo_x[2], dtype=torch.float32), float(episodes[1].demo_y[2])
    torch.testing.assert_close(embeds[1, 4], weight[:, :3] @ x + bias)  # [x, 0]
    torch.testing.assert_close(embeds[1, 5], weight[:, 3] * y + bias)  # [0, ..., 0, y]
    assert batch.cols.tolist() == [0, 2, 4, 6, 8] * 2 and batch.candidates is None
    torch.testing.assert_close(batch.targets[7], torch.tensor(y))


def test_class_labels_enter_as_label_token_embeddings():
    _, sampler = load_task(GMM)
    episodes = sampler.episodes(0, 3, 6, 0, "train")
    renderer = EmbeddingRenderer(4, label_token_ids=[7, 9])
    batch = embedding_batch(renderer, episodes, final_only=True)
    tokens = nn.Embedding(12, 8)
    embeds = ReadIn(4, 8, regression=False)(batch.inputs["x"], batch.inputs["labels"], tokens)
    label = int(episodes[2].demo_y[3])
    torch.testing.assert_close(embeds[2, 7], tokens.weight[[7, 9][label]])
    assert batch.rows.tolist() == [0, 1, 2] and batch.cols.tolist() == [10] * 3
    assert batch.candidates.tolist() == [7, 9]


def test_prediction_at_an_example_does_not_see_its_own_label():
    model = ICLModel(
        build_small_model(SmallModelConfig(layers=1, hidden=16, heads=2)),
        ReadIn(3, 16, regression=True),
        nn.Linear(16, 1),
    ).eval()
    x, y = torch.randn(1, 4, 3), torch.randn(1, 4)
    rows, cols = torch.zeros(4, dtype=torch.long), torch.tensor([0, 2, 4, 6])
    changed = y.clone()
    changed[0, 1] += 5.0
    with torch.no_grad():
        before = model(rows, cols, x=x, labels=y)[0]
        after = model(rows, cols, x=x, labels=changed)[0]
    assert torch.equal(before[:2], after[:2]) and not torch.equal(before[2:], after[2:])


@pytest.mark.parametrize(
    "learner",
    [
        {"small_model": {"layers": 2, "hidden": 32, "heads": 2}, "tasks": [REGRESSION]},
        {
            "small_model": {
                "architecture": "looped",
                "layers": 1,
                "hidden": 32,
                "heads": 2,
                "loops": 3,
                "loss_loops": 2,
            },
            "tasks": [GMM],
        },
        {"model": "tiny-random-llama", "tasks": [GMM], "train": {"finetune": "read_in"}},
    ],
)
def test_trained_model_saved_and_reloaded_predicts_identically(tmp_path, learner):
    train = {
        "steps": 4,
        "batch_size": 4,
        "num_examples": 6,
        "lr": 0.01,
        "eval_episodes": 2,
        "checkpoint_every": 4,
        **learner.get("train", {}),
    }
    data = {"job": "train", **learner, "train": train}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "cfg.yaml"), "--out", str(out), "--quiet"]) == 0
    trained, _, tasks = build_learner(from_dict(TrainConfig, data))
    trained.load_state_dict(
        load_file(str(out / "checkpoints/step-4/model.safetensors")), strict=False
    )  # the checkpoint holds every trainable tensor
    reloaded, _ = load_trained(out / "model")
    batch = tasks[0].render(tasks[0].eval_episodes("test", 3, 6), False)
    with torch.no_grad():
        expected = trained.eval()(batch.rows, batch.cols, **batch.inputs)
        got = reloaded(batch.rows, batch.cols, **batch.inputs)
    assert torch.equal(expected, got)
    assert not torch.equal(
        trained.read_in.linear.weight,
        build_learner(from_dict(TrainConfig, data))[0].read_in.linear.weight,
    )
