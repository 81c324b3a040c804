"""`dpp`: relevant and diverse demonstrations (OpenICL's DPP retriever, Ye et al. 2022).

Per query, the `candidates` nearest pool rows (by the same embeddings as `topk`) form a kernel
L = diag(r)·S·diag(r), with r each candidate's relevance to the query and S their similarity to
one another (both OpenICL's: cosines mapped to [0, 1], relevance sharpened by
exp(rel / (2·0.1))). Greedy MAP inference (Chen et al. 2018, fast greedy MAP) adds, one at a
time, the candidate that most increases det(L) of the chosen set: the first is the nearest, a
near-duplicate of a chosen row adds almost nothing. The greedy order is incremental, so the
k-shot set is the first k of the largest and the curve keeps each query's prefix.
"""

from __future__ import annotations

import numpy as np

from hf_icl.demos.base import EMBEDDING_SELECTIONS, SELECTIONS, Selection, SelectionContext
from hf_icl.demos.retrieval import allowed_rows, embeddings, rank
from hf_icl.errors import HfIclError

CANDIDATES_PER_SHOT = 4
SCALE = 0.1  # OpenICL's scale_factor: smaller weighs relevance more against diversity
GAIN_FLOOR = 1e-10  # below this a candidate adds nothing new to the chosen set


def dpp_kernel(relevance: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """L for candidates with cosine ``relevance`` to the query and unit-norm ``vectors``."""
    rel = (relevance + 1) / 2
    r = np.exp((rel - rel.max()) / (2 * SCALE))  # max-shifted: no overflow
    similarity = (vectors @ vectors.T + 1) / 2  # non-negative, still positive semidefinite
    return r[:, None] * similarity * r[None, :]


def greedy_map(kernel: np.ndarray, count: int) -> list[int]:
    """Indices in the order greedy MAP inference picks them (Chen et al. 2018, Algorithm 1).

    Each step takes the largest marginal gain d² (ties: the lower index, i.e. the nearer
    candidate); once no candidate adds anything, the rest follow in index order."""
    n = len(kernel)
    c = np.zeros((count, n))
    gains = np.diag(kernel).astype(np.float64).copy()
    chosen: list[int] = []
    while len(chosen) < count:
        open_gains = gains.copy()
        open_gains[chosen] = -np.inf
        best = int(np.argmax(open_gains))
        if open_gains[best] <= GAIN_FLOOR:
            break
        j = len(chosen)
        e = (kernel[best] - c[:j, best] @ c[:j]) / np.sqrt(gains[best])
        c[j] = e
        gains -= e**2
        chosen.append(best)
    rest = [i for i in range(n) if i not in chosen]
    return chosen + rest[: count - len(chosen)]


@SELECTIONS.register("dpp")
def dpp(ctx: SelectionContext) -> Selection:
    """Per query, a diverse set of its nearest pool rows, in greedy MAP order."""
    pool, queries = embeddings(ctx)
    similarity = queries @ pool.T
    allowed = allowed_rows(ctx)
    wanted = ctx.options.candidates or CANDIDATES_PER_SHOT * ctx.shots
    if wanted < ctx.shots:
        raise HfIclError(
            f"{ctx.where}.candidates: {wanted} candidates cannot give {ctx.shots} shots; "
            f"set candidates ≥ {ctx.shots}"
        )
    near = rank(similarity, allowed, min(wanted, min(len(a) for a in allowed))).ranked
    ranked = np.stack(
        [
            rows[greedy_map(dpp_kernel(similarity[q, rows], pool[rows]), ctx.shots)]
            for q, rows in enumerate(near)
        ]
    )
    return Selection(ranked, shared=False, similarity=np.take_along_axis(similarity, ranked, 1))


EMBEDDING_SELECTIONS.add("dpp")
