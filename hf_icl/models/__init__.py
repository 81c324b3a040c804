"""Models: specs and offline aliases, loading with quirk fixes, small from-scratch models and
the trainable in-context learner.

Names resolve on first use, so that ``from hf_icl.models import ModelSpec`` (config checks)
imports neither torch nor transformers' model code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_icl.lazy import lazy_exports

_HOMES = {
    "ModelSpec": "spec",
    "check_model_spec": "spec",
    "list_aliases": "spec",
    "cache_dir": "loading",
    "converted_gguf_folder": "loading",
    "gemma3_gguf": "loading",
    "keep_4bit_trainable": "loading",
    "add_lora": "loading",
    "load_model": "loading",
    "load_tokenizer": "loading",
    "resolve_source": "loading",
    "smollm2_gguf": "loading",
    "tiny_config": "loading",
    "torch_dtype": "loading",
    "LinearAttentionConfig": "linear_attention",
    "LinearAttentionModel": "linear_attention",
    "LoopedLlamaConfig": "small",
    "LoopedLlamaForCausalLM": "small",
    "SmallModelConfig": "small_config",
    "build_small_model": "small",
    "ICLModel": "learner",
    "LabelBatch": "learner",
    "embedding_batch": "learner",
    "load_trained": "learner",
    "loss_sum": "learner",
    "save_learner": "learner",
    "text_batch": "learner",
}

__all__ = [
    "add_lora",
    "ICLModel",
    "LabelBatch",
    "LinearAttentionConfig",
    "LinearAttentionModel",
    "LoopedLlamaConfig",
    "LoopedLlamaForCausalLM",
    "ModelSpec",
    "SmallModelConfig",
    "build_small_model",
    "cache_dir",
    "check_model_spec",
    "converted_gguf_folder",
    "embedding_batch",
    "gemma3_gguf",
    "keep_4bit_trainable",
    "list_aliases",
    "load_model",
    "load_tokenizer",
    "load_trained",
    "loss_sum",
    "resolve_source",
    "save_learner",
    "smollm2_gguf",
    "text_batch",
    "tiny_config",
    "torch_dtype",
]

if TYPE_CHECKING:
    from hf_icl.models.learner import (
        ICLModel,
        LabelBatch,
        embedding_batch,
        load_trained,
        loss_sum,
        save_learner,
        text_batch,
    )
    from hf_icl.models.linear_attention import LinearAttentionConfig, LinearAttentionModel
    from hf_icl.models.loading import (
        add_lora,
        cache_dir,
        converted_gguf_folder,
        gemma3_gguf,
        keep_4bit_trainable,
        load_model,
        load_tokenizer,
        resolve_source,
        smollm2_gguf,
        tiny_config,
        torch_dtype,
    )
    from hf_icl.models.small import LoopedLlamaConfig, LoopedLlamaForCausalLM, build_small_model
    from hf_icl.models.small_config import SmallModelConfig
    from hf_icl.models.spec import ModelSpec, check_model_spec, list_aliases


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
