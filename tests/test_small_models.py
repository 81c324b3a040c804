"""Small from-scratch models: the default Llama-style shape, and the looped model's loops."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from hf_icl.config import ConfigError, from_dict
from hf_icl.models import LoopedLlamaForCausalLM, SmallModelConfig, build_small_model


def test_default_small_model_is_llama_4_layers_hidden_128_4_heads():
    model = build_small_model(SmallModelConfig())
    config = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (4, 128, 4)
    assert config.intermediate_size == 512 and not config.tie_word_embeddings
    same = build_small_model(SmallModelConfig())  # seeded: every process builds the same one
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters()))


def looped(loops: int = 5, loss_loops: int = 2) -> LoopedLlamaForCausalLM:
    return build_small_model(
        SmallModelConfig(
            architecture="looped", layers=1, hidden=32, heads=2, loops=loops, loss_loops=loss_loops
        )
    )


def test_looped_model_applies_one_block_with_input_injection():
    model = looped().eval()
    embeds = torch.randn(2, 6, 32)
    block = model.model.layers[0]
    rope = model.model.rotary_emb(embeds, position_ids=torch.arange(6)[None])
    z = torch.zeros_like(embeds)
    with torch.no_grad():
        for _ in range(5):
            z = block(z + embeds, attention_mask=None, position_embeddings=rope)
        out = model.model(inputs_embeds=embeds)
    assert len(out.loop_states) == 1  # evaluation reads the last loop only
    torch.testing.assert_close(out.last_hidden_state, model.model.norm(z))


def test_looped_training_reads_last_loops_and_earlier_loops_have_no_grad():
    model = looped(loops=5, loss_loops=2).train()
    grad_modes = []
    model.model.layers[0].register_forward_hook(
        lambda *_: grad_modes.append(torch.is_grad_enabled())
    )
    out = model.model(inputs_embeds=torch.randn(1, 4, 32))
    assert grad_modes == [False, False, False, True, True]
    assert len(out.loop_states) == 2 and out.last_hidden_state is out.loop_states[-1]
    torch.stack(out.loop_states).sum().backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_looped_model_saves_and_reloads_through_auto_classes(tmp_path):
    model = looped().eval()
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is LoopedLlamaForCausalLM and reloaded.config.loss_loops == 2
    embeds = torch.randn(1, 6, 32)
    with torch.no_grad():
        assert torch.equal(
            model.model(inputs_embeds=embeds).last_hidden_state,
            reloaded.model(inputs_embeds=embeds).last_hidden_state,
        )


@pytest.mark.parametrize(
    "data, message",
    [
        ({"hidden": 30, "heads": 4}, "multiple of heads"),
        ({"architecture": "looped", "loops": 4, "loss_loops": 6}, "outside 1..loops"),
        ({"architecture": "loopd"}, "did you mean 'looped'"),
    ],
)
def test_small_model_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(SmallModelConfig, data, source="cfg.yaml", prefix="small_model")


def test_momentum_from_initialisation_is_saved_and_restored(tmp_path):
    from hf_icl.models import ICLModel, load_trained, save_learner

    settings = {"layers": 1, "hidden": 16, "heads": 2}
    plain = build_small_model(from_dict(SmallModelConfig, settings, source="cfg")).eval()
    config = from_dict(SmallModelConfig, {**settings, "momentum": {"eta": 0.3}}, source="cfg")
    model = build_small_model(config).eval()
    embeds = torch.randn(1, 6, 16)
    with torch.no_grad():
        with_momentum = model.model(inputs_embeds=embeds).last_hidden_state
        assert not torch.allclose(
            with_momentum, plain.model(inputs_embeds=embeds).last_hidden_state
        )
    save_learner(ICLModel(model), tmp_path, None, {"kind": "small", "small_model": settings})
    loaded, _ = load_trained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.lm.model(inputs_embeds=embeds).last_hidden_state, with_momentum
        )
