"""Fine-tuning arms on a tiny random llama: what they train, how, and bitwise restoration."""

import numpy as np
import pytest
import torch

from hf_icl.config import from_dict
from hf_icl.errors import HfIclError
from hf_icl.finetune import (
    FT_ARMS,
    HeldOut,
    choose_lr,
    lm_loss,
    make_arm,
    training_demos,
)
from hf_icl.finetune_config import FT_ARM_NAMES, ArmSpec, FinetuneConfig
from hf_icl.models import load_model
from hf_icl.render import TextRenderer
from hf_icl.tasks import load_task

KV = ("k_proj", "v_proj")


@pytest.fixture(scope="module")
def llama():
    """A private copy: these tests change weights (and must leave them as they were)."""
    return load_model("tiny-random-llama")


@pytest.fixture(scope="module")
def episode_and_demos(llama):
    _, sampler = load_task("sentiment")
    episode = sampler.episode(0, 3, 4)
    renderer = TextRenderer(llama[1])
    rendered = renderer.render_episode(episode)
    return episode, rendered, training_demos(renderer, episode, rendered, 3)


def arm(model, name: str, **overrides):
    return make_arm(model, FinetuneConfig(**overrides).settings(ArmSpec(name)))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def test_registry_and_config_errors():
    assert FT_ARMS.names() == ["dai", "full", "layer_causal", "lora"]
    with pytest.raises(
        HfIclError,
        match=r"cfg.yaml: finetune.arms.0: unknown fine-tuning arm "
        r"'daii' \(did you mean 'dai'\?\); allowed: dai, full, layer_causal, lora",
    ):
        from_dict(FinetuneConfig, {"arms": ["daii"]}, source="cfg.yaml", prefix="finetune")
    with pytest.raises(HfIclError, match="learning rates must be > 0"):
        from_dict(FinetuneConfig, {"arms": [{"name": "lora", "lr": -1}]}, source="cfg.yaml")
    settings = FinetuneConfig(arms=[ArmSpec("lora", lr=0.5)], lr=0.1, epochs=2)
    lora = settings.settings(settings.arms[0])
    assert (lora.lr, lora.epochs, lora.optimizer) == (0.5, 2, "sgd")


def test_training_demos_are_the_prompt_tokens(llama, episode_and_demos):
    episode, rendered, demos = episode_and_demos
    tokenizer = llama[1]
    for demo, text in zip(demos, TextRenderer(tokenizer).demo_texts(episode)):
        tokens = demo.ids[demo.skip :]
        assert rendered.prefix_ids[demo.start : demo.start + len(tokens)] == tokens
        assert tokenizer.decode(tokens) == text  # input + label, no delimiter
    assert [d.start for d in demos] == rendered.boundaries[:3]


@pytest.mark.parametrize("name", ["dai", "lora", "full", "layer_causal"])
def test_every_arm_restores_the_base_model_bitwise(llama, episode_and_demos, name):
    model, _ = llama
    _, rendered, demos = episode_and_demos
    ids = torch.tensor([rendered.prefix_ids])
    before, flags = snapshot(model), [p.requires_grad for p in model.parameters()]
    with torch.no_grad():
        logits = model(ids).logits
    with arm(model, name, optimizer="adam").fine_tuned(demos, lr=0.05, seed=1):
        with torch.no_grad():
            assert not torch.equal(model(ids).logits, logits)
        changed = {
            n for n, p in snapshot(model).items() if n in before and not torch.equal(p, before[n])
        }
        if name in ("dai", "layer_causal"):
            assert changed and all(n.split(".")[-2] in KV for n in changed)
        elif name == "full":
            assert any("mlp" in n for n in changed)
        else:
            assert not changed  # LoRA trains its adapter only
    after = snapshot(model)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[n], before[n]) for n in before)
    assert [p.requires_grad for p in model.parameters()] == flags
    with torch.no_grad():
        assert torch.equal(model(ids).logits, logits)


def kv_gradients(model, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    names = [n for n, _ in model.named_parameters() if n.split(".")[-2] in KV]
    params = dict(model.named_parameters())
    return dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names])))


def test_dai_is_one_plain_sgd_step_per_demonstration(llama, episode_and_demos):
    model, _ = llama
    demo = episode_and_demos[2][0]
    ids = torch.tensor([demo.ids])
    for p in model.parameters():
        p.requires_grad_(True)
    grads = kv_gradients(model, lm_loss(model(ids).logits, ids, demo.skip))
    before = snapshot(model)
    with arm(model, "dai").fine_tuned([demo], lr=0.1):
        after = snapshot(model)
    for name, grad in grads.items():
        torch.testing.assert_close(after[name], before[name] - 0.1 * grad, rtol=1e-5, atol=1e-7)


def test_layer_causal_updates_each_layer_from_its_own_loss(llama, episode_and_demos):
    """Stop-gradient between layers: layer 0's update ignores layer 1; the last layer's local
    loss is the model's loss, so its gradient equals the plain one."""
    model, _ = llama
    demo = episode_and_demos[2][1]
    ids = torch.tensor([demo.ids])
    for p in model.parameters():
        p.requires_grad_(True)
    causal, plain = arm(model, "layer_causal"), arm(model, "dai")
    layer_causal = kv_gradients(model, causal.loss(ids, demo.skip))
    dai = kv_gradients(model, plain.loss(ids, demo.skip))
    last = [n for n in dai if n.startswith("model.layers.1.")]
    first = [n for n in dai if n.startswith("model.layers.0.")]
    for name in last:
        torch.testing.assert_close(layer_causal[name], dai[name], rtol=1e-4, atol=1e-7)
    assert not any(torch.allclose(layer_causal[n], dai[n]) for n in first)
    mlp = model.model.layers[1].mlp.down_proj.weight
    saved = mlp.detach().clone()
    with torch.no_grad():
        mlp.mul_(3.0)
    try:
        moved = kv_gradients(model, causal.loss(ids, demo.skip))
        moved_dai = kv_gradients(model, plain.loss(ids, demo.skip))
    finally:
        with torch.no_grad():
            mlp.copy_(saved)
    for name in first:
        torch.testing.assert_close(moved[name], layer_causal[name])
    assert not all(torch.allclose(moved_dai[n], dai[n]) for n in first)


def test_choose_lr_picks_the_best_held_out_candidate_and_restores(llama, episode_and_demos):
    model, _ = llama
    _, rendered, demos = episode_and_demos
    weight = model.model.layers[0].self_attn.k_proj.weight
    base = weight.detach().clone()
    gold = np.array([0, 1, 1, 0])

    def score(moved_far: bool):
        """Held-out scores that are right only when fine-tuning moved the weights far (or not)."""

        def scores(_rendered):
            far = float((weight.detach() - base).norm()) > 1e-3
            right = far == moved_far
            return np.eye(2)[gold if right else 1 - gold]

        return scores

    episodes = [HeldOut(demos, rendered, gold)]
    dai = arm(model, "dai")
    assert choose_lr(dai, [1e-9, 1.0], episodes, score(moved_far=True)) == 1.0
    assert choose_lr(dai, [1e-9, 1.0], episodes, score(moved_far=False)) == 1e-9
    assert torch.equal(weight, base)


def test_light_arm_names_are_the_registered_arms():
    assert sorted(FT_ARMS) == sorted(FT_ARM_NAMES)
