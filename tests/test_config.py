from dataclasses import dataclass
from typing import Literal

import pytest

from hf_icl.config import apply_overrides, from_dict, option, read_yaml
from hf_icl.errors import ConfigError
from hf_icl.jobs.evaluate_config import EvaluateConfig


@dataclass
class Inner:
    eta: float = option(0.0)


@dataclass
class Outer:
    name: str = option()
    mode: Literal["fast", "slow"] = option("fast")
    shots: list[int] = option(default_factory=list)
    inner: Inner | None = option(None)


def test_valid_config_converts_types():
    cfg = from_dict(Outer, {"name": "x", "shots": [0, 1.0], "inner": {"eta": 1}})
    assert cfg.shots == [0, 1] and cfg.inner.eta == 1.0 and isinstance(cfg.inner.eta, float)


def test_unknown_key_names_file_key_and_suggestion():
    with pytest.raises(
        ConfigError, match=r"run\.yaml: unknown key 'shot' \(did you mean 'shots'\?\)"
    ):
        from_dict(Outer, {"name": "x", "shot": [1]}, source="run.yaml")


def test_nested_unknown_key_is_reported_with_its_path():
    with pytest.raises(ConfigError, match=r"unknown key 'inner\.etaa' \(did you mean 'eta'\?\)"):
        from_dict(Outer, {"name": "x", "inner": {"etaa": 1}}, source="run.yaml")


def test_wrong_type_and_bad_choice():
    with pytest.raises(ConfigError, match=r"shots\.1: expected int, got 'two'"):
        from_dict(Outer, {"name": "x", "shots": [1, "two"]})
    with pytest.raises(
        ConfigError,
        match=r"mode: invalid value 'fsat' \(did you mean 'fast'\?\); allowed: fast, slow",
    ):
        from_dict(Outer, {"name": "x", "mode": "fsat"})


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        from_dict(Outer, {})


def test_overrides_follow_dots_and_list_indices():
    data = {"models": [{"spec": "a"}], "tasks": ["sentiment"], "shots": [0]}
    apply_overrides(data, ["models.0.dtype=bfloat16", "shots=[0, 4]", "tasks.0.proj_dim=4"])
    assert data == {
        "models": [{"spec": "a", "dtype": "bfloat16"}],
        "shots": [0, 4],
        "tasks": [{"name": "sentiment", "proj_dim": 4}],
    }
    with pytest.raises(ConfigError, match="not an index of a list of length 1"):
        apply_overrides(data, ["models.3.dtype=float32"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(data, ["models"])


def test_evaluate_config_accepts_bare_model_strings_and_validates():
    cfg = from_dict(EvaluateConfig, {"models": ["smollm2-135m"], "tasks": ["sentiment"]})
    assert cfg.models[0].spec == "smollm2-135m" and cfg.models[0].dtype == "float32"
    with pytest.raises(ConfigError, match=r"models\.0\.dtype: invalid value 'bf16'"):
        from_dict(EvaluateConfig, {"models": [{"spec": "x", "dtype": "bf16"}], "tasks": ["t"]})
    with pytest.raises(ConfigError, match="shots: expected a non-empty list"):
        from_dict(EvaluateConfig, {"models": ["x"], "tasks": ["t"], "shots": []})


def test_read_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid YAML"):
        read_yaml(bad)
    with pytest.raises(ConfigError, match="no such file"):
        read_yaml(tmp_path / "missing.yaml")
