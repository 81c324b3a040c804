"""The public API: what `hf_icl.__all__` promises, resolved lazily, and `hf_icl.run`."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

import hf_icl


def test_every_public_name_resolves():
    assert sorted(hf_icl.__all__) == sorted(hf_icl._HOMES)
    for name in hf_icl.__all__:
        assert getattr(hf_icl, name) is not None, name


def test_import_is_light():
    code = "import sys, hf_icl; print(json.dumps([m in sys.modules for m in ('torch', 'transformers')]))"
    out = subprocess.run(
        [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == [False, False]


def test_run_is_the_command_line_job(tmp_path):
    config = {
        "job": "evaluate",
        "models": ["tiny-random-llama"],
        "tasks": ["sentiment"],
        "shots": [0, 1],
        "num_seeds": 1,
        "num_queries": 3,
        "bootstrap": 20,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    results = hf_icl.run(
        path, out=str(tmp_path / "run"), overrides=["num_queries=2"], progress=False
    )
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results is not None and saved["config"]["num_queries"] == 2
