"""Trainer options for meta-fine-tuning a pretrained model: which weights train (read-in, LoRA,
full, from a random init), save → load round trips, and the refusals made before a run folder
exists."""

from __future__ import annotations

import pytest
import torch
import yaml

from hf_icl.cli import main
from hf_icl.config import from_dict
from hf_icl.errors import HfIclError
from hf_icl.models import load_trained, save_learner
from hf_icl.training.config import TrainConfig
from hf_icl.training.loop import make_optimizer, train_step
from hf_icl.training.setup import build_learner, learner_info, load_lm

EMBEDDED = {"renderer": "embedding"}
CLASSES = {"name": "digits_projected", "classes": [0, 1, 2], "proj_dim": 4, "render": EMBEDDED}
REGRESSION = {"name": "linear_regression", "dim": 3, "render": EMBEDDED}
TEXT = {"name": "digits_projected", "classes": [0, 1, 2], "render": {"precision": 0}}


@pytest.fixture(autouse=True)
def fresh_accelerate():
    """Each run builds its own Accelerator, as each CLI process does."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def train_config(finetune: str, task: dict, init: str = "pretrained", seed: int = 0) -> dict:
    return {
        "job": "train",
        "model": {"spec": "tiny-random-llama", "init": init},
        "tasks": [task],
        "train": {
            "finetune": finetune,
            "steps": 2,
            "batch_size": 4,
            "num_examples": 6,
            "lr": 0.01,
            "seed": seed,
            "eval_every": 2,
            "eval_episodes": 2,
            "checkpoint_every": 0,
        },
    }


def trained(data: dict, steps: int = 2):
    """The learner after ``steps`` real training steps, its accelerator, tokenizer and tasks,
    plus the parameters it started from."""
    from accelerate import Accelerator

    config = from_dict(TrainConfig, data)
    learner, tokenizer, tasks = build_learner(config)
    start = {n: p.detach().clone() for n, p in learner.named_parameters()}
    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler = accelerator.prepare(
        learner, *make_optimizer(learner, config.train)
    )
    for step in range(steps):
        train_step(model, optimizer, scheduler, accelerator, tasks[0], step, config.train, 0)
    return config, accelerator, model, tokenizer, tasks, start


def changed(model, start: dict) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}


def lm_weights(names) -> set[str]:
    return {n for n in names if n.startswith("lm.")}


@pytest.mark.parametrize(
    "finetune, task, init, moved",
    [
        ("read_in", CLASSES, "pretrained", "read-in"),
        ("lora", CLASSES, "pretrained", "adapters and read-in"),
        ("full", CLASSES, "pretrained", "everything"),
        ("full", CLASSES, "random", "everything"),
        ("full", REGRESSION, "pretrained", "all but the token embeddings and LM head"),
    ],
    ids=["read_in", "lora", "full", "full from random init", "full with a read-out"],
)
def test_only_the_intended_parameters_train(finetune, task, init, moved):
    _, _, model, _, tasks, start = trained(train_config(finetune, task, init))
    names = set(start)
    read_in = {n for n in names if n.startswith(("read_in.", "read_out."))}
    expected = {
        "read-in": read_in,
        "adapters and read-in": read_in | {n for n in names if "lora_" in n},
        "everything": names,
        "all but the token embeddings and LM head": names
        - {"lm.model.embed_tokens.weight", "lm.lm_head.weight"},
    }[moved]
    read_out = {"read_out.weight", "read_out.bias"} if task is REGRESSION else set()
    assert read_in == {"read_in.linear.weight", "read_in.linear.bias"} | read_out
    assert changed(model, start) == expected
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    if moved == "everything":
        # inputs enter through the read-in: only the label tokens' embedding rows move
        embeddings = model.lm.model.embed_tokens.weight
        rows = (embeddings != start["lm.model.embed_tokens.weight"]).any(-1).nonzero()
        labels = tasks[0].render(tasks[0].draw(0, 1, 6, "train"), False).candidates
        assert rows.flatten().tolist() == sorted(labels.tolist())


def test_random_init_is_the_same_architecture_drawn_from_the_seed():
    def model(init: str, seed: int):
        return load_lm(from_dict(TrainConfig, train_config("full", CLASSES, init, seed)))

    pretrained, random0, again, random1 = (
        model("pretrained", 0),
        model("random", 0),
        model("random", 0),
        model("random", 1),
    )
    assert pretrained.config.to_dict() == random0.config.to_dict()
    weights = [dict(m.named_parameters()) for m in (pretrained, random0, again, random1)]
    assert [list(w) for w in weights[1:]] == [list(weights[0])] * 3
    q = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(weights[1][q], weights[2][q])
    assert not torch.equal(weights[1][q], weights[3][q])
    assert not torch.equal(weights[1][q], weights[0][q])
    # transformers' own initialisation: normal with the config's initializer_range
    assert weights[3][q].std().item() == pytest.approx(random1.config.initializer_range, rel=0.05)


@pytest.mark.parametrize(
    "task, init",
    [(CLASSES, "pretrained"), (REGRESSION, "pretrained"), (TEXT, "random")],
    ids=["read-in + full", "read-in/read-out + full", "random init + full"],
)
def test_saved_model_loads_with_identical_predictions(tmp_path, task, init):
    config, accelerator, model, tokenizer, tasks, _ = trained(train_config("full", task, init))
    learner = accelerator.unwrap_model(model).eval()
    info = {**learner_info(config), "read_in": learner.read_in is not None}
    save_learner(learner, tmp_path, tokenizer, info, accelerator.get_state_dict(model))
    loaded, _ = load_trained(tmp_path)
    batch = tasks[0].render(tasks[0].eval_episodes("test", 3, 8), False)
    with torch.no_grad():
        before = learner(batch.rows, batch.cols, **batch.inputs)
        after = loaded(batch.rows, batch.cols, **batch.inputs)
    assert before.shape[1] == 3 * 8
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def no_inputs_embeds(monkeypatch) -> None:
    """A decoder whose forward takes token ids only, as some architectures' do."""
    from transformers.models.llama import modeling_llama

    def forward(self, input_ids=None, attention_mask=None):
        raise AssertionError("the check reads the signature; nothing runs the model")

    monkeypatch.setattr(modeling_llama.LlamaModel, "forward", forward)


REFUSALS = {
    "random init + lora": (
        train_config("lora", CLASSES, "random"),
        "train.finetune: 'lora' with model.init: random: there is nothing pretrained to adapt; "
        "use finetune: full",
    ),
    "random init + read_in": (
        train_config("read_in", CLASSES, "random"),
        "train.finetune: 'read_in' with model.init: random: only a read-in would train, into a "
        "frozen random model; use finetune: full",
    ),
    "read-in without inputs_embeds": (
        train_config("full", CLASSES),
        "model 'tiny-random-llama': its decoder (LlamaModel) takes no inputs_embeds, which the "
        "embedding renderer's read-in needs; render the tasks as text",
    ),
    "text over the context window": (
        {**train_config("full", TEXT), "train": {"num_examples": 120, "eval_episodes": 2}},
        "task 'digits_projected': train.num_examples: a sequence of 120 examples is ",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_are_one_line_before_the_run_folder_exists(tmp_path, capsys, monkeypatch, case):
    data, message = REFUSALS[case]
    if "inputs_embeds" in case:
        no_inputs_embeds(monkeypatch)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "parent" / "run"
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hf-icl: error: {config}: ") and message in err, err
    assert err.count("\n") == 1 and not (tmp_path / "parent").exists()


def test_context_window_error_counts_the_examples_that_fit():
    data = {**train_config("full", TEXT), "train": {"num_examples": 120, "eval_episodes": 2}}
    with pytest.raises(HfIclError) as err:
        build_learner(from_dict(TrainConfig, data))
    words = str(err.value).split()
    length, fit = int(words[words.index("tokens,") - 1]), int(words[-3])
    assert length > 2048 and 0 < fit < 120
    # about the share of the 120 examples that 2048 of the tokens hold
    assert fit == pytest.approx(120 * 2048 / length, abs=6)
