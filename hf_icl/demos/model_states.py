"""`encoder: model`: the evaluated LM as the retrieval encoder (its mean-pooled last hidden states).

A text is tokenized as its tokenizer does by default (its own special tokens, nothing more) and
its final hidden states (after the last norm) are averaged over its own tokens. Texts go through
the model in length-sorted, right-padded batches with padding masked out, so a text's vector
does not depend on its batch. Vectors are kept per model spec and text for the whole process:
a pool is encoded once, whichever seed, unit or baseline asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from hf_icl.demos.base import TextEncoder

BATCH_TEXTS = 16
PROGRESS_FROM = 8  # batches; fewer take seconds and show no bar

_VECTORS: dict[str, dict[str, np.ndarray]] = {}  # spec key → text → mean state
_LENT: dict[str, tuple[Any, Any]] = {}  # spec key → (model, tokenizer) a job holds now
_BORROWED: dict[str, tuple[Any, Any]] = {}  # at most one copy loaded here for selection


def mean_pooled_states(
    model, tokenizer, texts: list[str], batch_size: int = BATCH_TEXTS
) -> np.ndarray:
    """(N, hidden) float64: each text's last hidden states averaged over its own tokens."""
    import torch
    from tqdm.auto import tqdm

    ids = tokenizer(texts)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    out = np.zeros((len(texts), model.config.get_text_config().hidden_size))
    pad = tokenizer.pad_token_id or 0
    bar = tqdm(
        batches,
        desc="embedding demos",
        unit="batch",
        leave=False,
        disable=True if len(batches) < PROGRESS_FROM else None,
    )
    with torch.inference_mode():
        for batch in bar:
            width = max(len(ids[i]) for i in batch)
            rows = [ids[i] + [pad] * (width - len(ids[i])) for i in batch]
            mask = [[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in batch]
            input_ids = torch.tensor(rows, device=model.device)
            attention = torch.tensor(mask, device=model.device)
            states = model(
                input_ids=input_ids,
                attention_mask=attention,
                output_hidden_states=True,
                logits_to_keep=1,  # only the states are wanted
            ).hidden_states[-1]
            weights = attention.unsqueeze(-1).to(states.dtype)
            means = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
            out[batch] = means.double().cpu().numpy()
    return out


def _key(spec) -> str:
    """Equal specs load equal weights; the name is kept, since a job may run one loaded model
    under several names with different settings."""
    return repr(spec)


@contextmanager
def lend_model(spec, model, tokenizer) -> Iterator[None]:
    """While a job holds a model, selection embeds with it rather than loading a copy."""
    key = _key(spec)
    _LENT[key] = (model, tokenizer)
    _BORROWED.pop(key, None)
    try:
        yield
    finally:
        _LENT.pop(key, None)


def _model(spec) -> tuple[Any, Any]:
    """The lent model, else one loaded for selection (a baseline resuming after its model's
    units); only the latest such copy is kept."""
    key = _key(spec)
    if key in _LENT:
        return _LENT[key]
    if key not in _BORROWED:
        from hf_icl.models import load_model

        _BORROWED.clear()
        _BORROWED[key] = load_model(spec)
    return _BORROWED[key]


def model_states(spec) -> TextEncoder:
    """Texts → the spec's mean-pooled states; each (model, text) is computed once."""
    key = _key(spec)

    def encode(texts: list[str]) -> np.ndarray:
        known = _VECTORS.setdefault(key, {})
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            model, tokenizer = _model(spec)
            known.update(zip(missing, mean_pooled_states(model, tokenizer, missing)))
        return np.stack([known[t] for t in texts])

    return encode


def placeholder_states(texts: list[str]) -> np.ndarray:
    """Before any model loads: every text equally near every other, so a plan's checks (pool
    size, input kind, options) run without weights; the real demonstrations come later."""
    return np.ones((len(texts), 1))
