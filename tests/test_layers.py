"""The package's layers: imports only point down, and each mechanism has one home.

Read from the source (every `import`, including those inside functions), so a lazy import that
points up is caught as surely as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hf_icl"

# Top to bottom; a module may import its own layer or any layer below it.
LAYERS = [
    ["cli", "__main__"],
    ["jobs"],
    ["training", "finetune", "finetune_config", "analysis", "build", "export"],
    [
        "scoring",
        "packing",
        "attention",
        "models",
        "render",
        "samplers",
        "baselines",
        "metrics",
        "tasks",
        "hub",
        "plots",
        "kv_cache",
        "episode",
        "icl_model",
        "demos",
        "lm_eval_tasks",
        "lm_eval_entries",
        "multiple_choice",
        "demo_scoring",
        "filters",
        "generation",
        "generation_config",
        "lm_eval_generation",
    ],
    ["config", "registry", "errors", "results", "runtime", "resources", "lazy"],
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_builtin" not in p.parts)


def _top(path: Path) -> str:
    """The first-level name (package or module) a file belongs to."""
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    """First-level hf_icl names imported by a file (absolute imports; the package uses no others)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hf_icl."):
            names.append(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "hf_icl":
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name.split(".")[1] for a in node.names if a.name.startswith("hf_icl.")]
    return names


def test_every_module_has_a_layer():
    tops = {_top(p) for p in _modules()} - {"__init__"}
    assert tops <= set(LEVEL), f"place these in LAYERS: {sorted(tops - set(LEVEL))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    if path == PACKAGE / "__init__.py":
        return  # the public API re-exports from every layer, lazily
    level = LEVEL.get(_top(path))
    if level is None:
        pytest.skip("not placed in LAYERS (test_every_module_has_a_layer fails)")
    upward = [name for name in _imports(path) if LEVEL.get(name, len(LAYERS)) < level]
    assert not upward, f"{path.relative_to(PACKAGE)} imports a layer above it: {upward}"


def test_block_masks_are_built_only_in_the_packing_module():
    builders = [
        p
        for p in _modules()
        if "def build_masks" in p.read_text(encoding="utf-8")
        or "def packed_row" in p.read_text(encoding="utf-8")
    ]
    assert builders == [PACKAGE / "packing.py"]


def test_no_module_is_over_about_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420
    }
    assert not long, long
