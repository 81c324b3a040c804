"""Helpers shared by the benchmarks: the RESULT line, results JSON, matmul peak, peak RSS."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def report(name: str, figures: dict, details: dict | None = None) -> None:
    """Write benchmarks/results/NAME.json and print the `RESULT name key=value ...` last line."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"name": name, **figures, "details": details or {}}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    print(f"RESULT {name} " + " ".join(f"{k}={v}" for k, v in figures.items()))


def matmul_peak_gflops(dtype_name: str = "float32", size: int = 2048, repeats: int = 5) -> float:
    """Best-of-N square matmul throughput in this process: the roofline for FLOPs utilisation."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    """The machine's roofline, which the other benchmarks' FLOPs utilisation is measured against."""
    import torch

    f32, bf16 = matmul_peak_gflops("float32"), matmul_peak_gflops("bfloat16")
    report(
        "common",
        {
            "matmul_float32_gflops": round(f32, 1),
            "matmul_bfloat16_gflops": round(bf16, 1),
            "bf16_over_f32": round(bf16 / f32, 2),
        },
        {"size": 2048, "threads": torch.get_num_threads(), "torch": torch.__version__},
    )


if __name__ == "__main__":
    main()
