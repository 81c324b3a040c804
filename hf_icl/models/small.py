"""Small from-scratch transformers for synthetic ICL studies, used with the embedding renderer.

- ``llama``: a Llama-style decoder (default 4 layers, hidden 128, 4 heads), built with
  transformers' own classes so it saves and loads like any HF model.
- ``looped`` (Yang et al., arXiv 2311.12424): one block of ``layers`` decoder layers applied
  ``loops`` times with input injection ``z ← f(z + e)`` from ``z = 0``. Training reads the
  outputs of the last ``loss_loops`` loops (the loss is their average) and runs the earlier
  loops without gradients; evaluation reads the last loop only.
- ``linear_attention``, ``looped_linear_attention``: the theory papers' linear self-attention
  (models/linear_attention.py), reading the paired layout without a read-in.

Builders are registered by name in ``ARCHITECTURES``. The Llama models' vocabulary is only the
label tokens of classification tasks (ids 0..C-1): the embedding renderer feeds continuous
inputs through its read-in, never through token ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.models.llama.modeling_llama import LlamaModel

from hf_icl.kv_cache import cache_argument
from hf_icl.models.linear_attention import build_linear_attention
from hf_icl.models.small_config import SmallModelConfig
from hf_icl.registry import Registry


class LoopedLlamaConfig(LlamaConfig):
    model_type = "hf_icl_looped_llama"

    def __init__(
        self,
        loops: int = 12,
        loss_loops: int | None = None,
        eval_loops: list[int] | None = None,
        **kwargs,
    ) -> None:
        self.loops = loops
        self.loss_loops = loss_loops or loops
        self.eval_loops = list(eval_loops or [])
        super().__init__(**kwargs)


@dataclass
class LoopedOutput(BaseModelOutputWithPast):
    """``last_hidden_state`` is the last loop's; ``loop_states`` the loops that enter the loss."""

    loop_states: tuple[torch.Tensor, ...] | None = None


class LoopedLlamaModel(LlamaModel):
    config_class = LoopedLlamaConfig

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> LoopedOutput:
        embeds = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is None:
            position_ids = torch.arange(embeds.shape[1], device=embeds.device)[None]
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            **{cache_argument(create_causal_mask): None},
            position_ids=position_ids,
        )
        rope = self.rotary_emb(embeds, position_ids=position_ids)
        loops = self.config.loops
        read_from = loops - (self.config.loss_loops if self.training else 1)
        z = torch.zeros_like(embeds)
        states = []
        for loop in range(loops):
            with torch.set_grad_enabled(torch.is_grad_enabled() and loop >= read_from):
                z = z + embeds
                for layer in self.layers:
                    z = layer(
                        z, attention_mask=mask, position_embeddings=rope, position_ids=position_ids
                    )
            if loop >= read_from:
                states.append(self.norm(z))
        return LoopedOutput(last_hidden_state=states[-1], loop_states=tuple(states))


class LoopedLlamaForCausalLM(LlamaForCausalLM):
    config_class = LoopedLlamaConfig

    def __init__(self, config: LoopedLlamaConfig) -> None:
        super().__init__(config)
        self.model = LoopedLlamaModel(config)
        self.post_init()


AutoConfig.register(LoopedLlamaConfig.model_type, LoopedLlamaConfig)
AutoModelForCausalLM.register(LoopedLlamaConfig, LoopedLlamaForCausalLM)


ARCHITECTURES: Registry[Callable[[SmallModelConfig, int], nn.Module]] = Registry("architecture")


@ARCHITECTURES.register("llama")
def _llama(config: SmallModelConfig, dim: int) -> LlamaForCausalLM:
    hf_config = LlamaConfig(**_llama_settings(config))
    hf_config._attn_implementation = "sdpa"
    return LlamaForCausalLM(hf_config)


@ARCHITECTURES.register("looped")
def _looped(config: SmallModelConfig, dim: int) -> LoopedLlamaForCausalLM:
    return LoopedLlamaForCausalLM(
        LoopedLlamaConfig(
            loops=config.loops,
            loss_loops=config.loss_loops,
            eval_loops=config.eval_loops,
            **_llama_settings(config),
        )
    )


ARCHITECTURES.register("linear_attention")(build_linear_attention)
ARCHITECTURES.register("looped_linear_attention")(build_linear_attention)


def _llama_settings(config: SmallModelConfig) -> dict:
    return dict(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden,
        intermediate_size=config.intermediate or 4 * config.hidden,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=False,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )


def build_small_model(config: SmallModelConfig, seed: int = 0, dim: int = 1) -> nn.Module:
    """A randomly initialised small model (seeded, so every process builds the same one);
    ``dim``: the input size, which the linear-attention models read without a read-in."""
    torch.manual_seed(seed)
    model = ARCHITECTURES.get(config.architecture, "small_model.architecture")(config, dim)
    if config.momentum is not None:
        from hf_icl.attention import enable_momentum

        enable_momentum(model, **dataclasses.asdict(config.momentum))
    return model
