"""hf_icl: study and evaluate in-context learning in Hugging Face causal LMs.

The names in ``__all__`` are the stable API a script uses; everything else may move. Names
resolve on first use, so ``import hf_icl`` (and the command line's config checks) imports
neither torch nor transformers.

    import hf_icl
    results = hf_icl.run("quickstart", overrides=["num_queries=20"])
    model, tokenizer = hf_icl.load_model("smollm2-135m")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_icl.lazy import lazy_exports

__version__ = "0.1.0"

_HOMES = {
    # run a config exactly as the command line does (resolved lazily: the top of the stack)
    "run": "hf_icl.jobs.runner",
    # models
    "ModelSpec": "hf_icl.models",
    "load_model": "hf_icl.models",
    "load_tokenizer": "hf_icl.models",
    "load_trained": "hf_icl.models",
    # tasks, episodes, prompts
    "Episode": "hf_icl.episode",
    "load_task": "hf_icl.tasks",
    "build_dataset": "hf_icl.build",
    "RenderOptions": "hf_icl.render",
    "TextRenderer": "hf_icl.render",
    # scoring with demo-prefix KV reuse
    "score_queries": "hf_icl.scoring",
    "score_sequences": "hf_icl.scoring",
    # demonstration selection and per-query scoring
    "DemoOptions": "hf_icl.demos",
    "plan_demos": "hf_icl.demos",
    "score_plan": "hf_icl.demo_scoring",
    # attention features
    "MomentumConfig": "hf_icl.attention",
    "enable_momentum": "hf_icl.attention",
    "disable_momentum": "hf_icl.attention",
    "capture_attention": "hf_icl.attention",
    # learners without tokens
    "make_baseline": "hf_icl.baselines",
    # errors a script may catch
    "HfIclError": "hf_icl.errors",
}

__all__ = [
    "DemoOptions",
    "Episode",
    "HfIclError",
    "ModelSpec",
    "MomentumConfig",
    "RenderOptions",
    "TextRenderer",
    "build_dataset",
    "capture_attention",
    "disable_momentum",
    "enable_momentum",
    "load_model",
    "load_task",
    "load_tokenizer",
    "load_trained",
    "make_baseline",
    "plan_demos",
    "run",
    "score_plan",
    "score_queries",
    "score_sequences",
]

if TYPE_CHECKING:
    from hf_icl.attention import (
        MomentumConfig,
        capture_attention,
        disable_momentum,
        enable_momentum,
    )
    from hf_icl.baselines import make_baseline
    from hf_icl.build import build_dataset
    from hf_icl.demo_scoring import score_plan
    from hf_icl.demos import DemoOptions, plan_demos
    from hf_icl.episode import Episode
    from hf_icl.errors import HfIclError
    from hf_icl.models import ModelSpec, load_model, load_tokenizer, load_trained
    from hf_icl.render import RenderOptions, TextRenderer
    from hf_icl.scoring import score_queries, score_sequences
    from hf_icl.tasks import load_task


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
