"""Embedding renderer: continuous inputs enter the model through a trained linear read-in.

Garg et al.'s layout: example i takes two positions, x_i then its label, and the prediction of
y_i is read at x_i's position (it sees the i earlier examples, not y_i). Inputs go through
the read-in as ``[x, 0]``; a regression target goes through the same read-in as ``[0, …, 0, y]``
and is predicted by a linear read-out, while a class label enters as the embedding of its label
token and is predicted by the LM head's logits over the label tokens. The read-in and read-out
are trained with the model and saved next to it (``read_in_out.safetensors``);
``load_read_in_out`` restores them.

The ``paired`` layout (the theory papers' linear self-attention) takes one position per
example, the token z_i = [x_i; y_i] itself (no read-in): a regression target as it is, a class
of a two-class task as y = −1 (class 0) or +1 (class 1). The model predicts y_i at position i
from the query [x_i; 0] and the i examples before it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError

READ_IN_OUT_FILE = "read_in_out.safetensors"


@dataclass
class EmbeddedEpisodes:
    """A batch of episodes as arrays: ``x`` (B, n, dim) and ``labels`` (B, n), which hold label
    token ids (classification) or float targets (regression)."""

    x: torch.Tensor
    labels: torch.Tensor


class EmbeddingRenderer:
    """Episodes → arrays for the read-in; knows the input size and the label tokens."""

    def __init__(
        self, dim: int, label_token_ids: list[int] | None, layout: str = "interleaved"
    ) -> None:
        self.dim = dim
        self.label_token_ids = label_token_ids  # None: regression (read-out)
        self.layout = layout  # interleaved (x then y positions) or paired (one per example)

    @property
    def positions_per_example(self) -> int:
        return 1 if self.layout == "paired" else 2

    def render(self, episodes: list[Episode]) -> EmbeddedEpisodes:
        x = np.stack([np.asarray(ep.demo_x, dtype=np.float32) for ep in episodes])
        if x.ndim != 3 or x.shape[2] != self.dim:
            raise HfIclError(
                f"task {episodes[0].task!r}: the embedding renderer needs numeric "
                f"inputs of size {self.dim}, got shape {x.shape[1:]}"
            )
        y = np.stack([np.asarray(ep.demo_y) for ep in episodes])
        if self.label_token_ids is None:
            return EmbeddedEpisodes(torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)))
        if self.layout == "paired" and episodes[0].num_classes != 2:
            raise HfIclError(
                f"task {episodes[0].task!r}: the paired layout reads a class as "
                f"y = ±1, so it takes two-class tasks only, not "
                f"{episodes[0].num_classes}"
            )
        if y.max() >= len(self.label_token_ids):
            raise HfIclError(
                f"task {episodes[0].task!r}: class {int(y.max())} has no label token "
                f"({len(self.label_token_ids)} available)"
            )
        tokens = np.asarray(self.label_token_ids, dtype=np.int64)[y]
        return EmbeddedEpisodes(torch.from_numpy(x), torch.from_numpy(tokens))


def paired_tokens(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, n, dim) inputs and (B, n) labels → (B, n, dim + 1) tokens [x_i; y_i]; integer labels
    are the two classes' token ids 0 and 1, entered as −1 and +1."""
    y = labels.to(x.dtype) if labels.is_floating_point() else 2.0 * labels.to(x.dtype) - 1.0
    return torch.cat([x, y[..., None]], -1)


class ReadIn(nn.Module):
    """Linear map of inputs (and of regression targets) into the model's embedding space."""

    def __init__(self, dim: int, hidden: int, regression: bool) -> None:
        super().__init__()
        self.dim = dim
        self.regression = regression
        self.linear = nn.Linear(dim + int(regression), hidden)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor, token_embedding: nn.Module
    ) -> torch.Tensor:
        """(B, n, dim) inputs and (B, n) labels → (B, 2n, hidden) interleaved embeddings."""
        if self.regression:
            zeros = x.new_zeros(*x.shape[:2], 1)
            xs = self.linear(torch.cat([x, zeros], -1))
            ys = self.linear(torch.cat([torch.zeros_like(x), labels[..., None].to(x.dtype)], -1))
        else:
            xs = self.linear(x)
            ys = token_embedding(labels).to(xs.dtype)
        return torch.stack([xs, ys], dim=2).flatten(1, 2)


def save_read_in_out(folder: Path, read_in: ReadIn, state: dict[str, torch.Tensor]) -> None:
    """Save the ``read_in.*``/``read_out.*`` entries of a learner's state dict."""
    tensors = {
        k: v.detach().cpu().contiguous()
        for k, v in state.items()
        if k.startswith(("read_in.", "read_out."))
    }
    meta = {
        "dim": read_in.dim,
        "hidden": read_in.linear.out_features,
        "regression": read_in.regression,
    }
    save_file(tensors, str(folder / READ_IN_OUT_FILE), metadata={"hf_icl": json.dumps(meta)})


def load_read_in_out(folder: Path) -> tuple[ReadIn, nn.Linear | None] | None:
    """The read-in and read-out saved in ``folder``, or None when it holds none."""
    path = folder / READ_IN_OUT_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["hf_icl"])
    tensors = load_file(str(path))
    read_in = ReadIn(meta["dim"], meta["hidden"], meta["regression"])
    read_in.load_state_dict(
        {k.removeprefix("read_in."): v for k, v in tensors.items() if k.startswith("read_in.")}
    )
    read_out = None
    if meta["regression"]:
        read_out = nn.Linear(meta["hidden"], 1)
        read_out.load_state_dict(
            {
                k.removeprefix("read_out."): v
                for k, v in tensors.items()
                if k.startswith("read_out.")
            }
        )
    return read_in, read_out
