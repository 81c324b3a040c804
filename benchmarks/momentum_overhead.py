"""Forward-time overhead of momentum attention (η=0.1, all layers) on SmolLM2-135M.

1,024 tokens, batch 1, float32, inference mode, logits of the last position only (as scoring
reads them, so the LM head does not dilute the attention cost). The overhead is the median of
per-round time ratios; the times are medians.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch

from hf_icl.attention import disable_momentum, enable_momentum
from hf_icl.models import load_model

TOKENS = 1024
REPEATS = 7
ETA = 0.1
RESULTS = Path(__file__).parent / "results" / "momentum_overhead.json"


def forward_ms(model, ids: torch.Tensor) -> float:
    start = time.perf_counter()
    model(input_ids=ids, logits_to_keep=1)
    return (time.perf_counter() - start) * 1000


def measure(model, ids: torch.Tensor) -> list[tuple[float, float]]:
    """(unpatched, patched) forward times per round, back to back in alternating order so that
    bursts of load and drift hit both alike; the first round only warms up."""
    rounds = []
    with torch.inference_mode():
        for repeat in range(REPEATS + 1):
            times = {}
            for patched in (False, True) if repeat % 2 else (True, False):
                if patched:
                    enable_momentum(model, ETA)
                times[patched] = forward_ms(model, ids)
                disable_momentum(model)
            if repeat:
                rounds.append((times[False], times[True]))
    return rounds


def main() -> None:
    model, _ = load_model("smollm2-135m")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, TOKENS), generator=generator)
    rounds = measure(model, ids)
    ratios = [patched / base for base, patched in rounds]
    result = {
        "overhead": statistics.median(ratios) - 1,
        "base_ms": statistics.median(base for base, _ in rounds),
        "momentum_ms": statistics.median(patched for _, patched in rounds),
        "tokens": TOKENS,
        "eta": ETA,
        "repeats": REPEATS,
        "overhead_range": [min(ratios) - 1, max(ratios) - 1],
        "threads": torch.get_num_threads(),
        # Other work on the machine inflates both times and, with more threads than free cores,
        # the cost of every small op: read the figures with this in mind.
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"RESULT momentum_overhead overhead={result['overhead']:.4f} base_ms={result['base_ms']:.1f} "
        f"momentum_ms={result['momentum_ms']:.1f} tokens={TOKENS}"
    )


if __name__ == "__main__":
    main()
