"""Attention capture: per layer, at chosen positions, the output of ``o_proj`` and raw scores."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.integrations.sdpa_attention import repeat_kv

from hf_icl.attention.registration import attention_modules, install, release_if_idle
from hf_icl.errors import HfIclError


@dataclass
class AttentionCapture:
    """Per-layer records at chosen positions of the last forward inside `capture_attention`.

    ``outputs[layer]``: (B, [P,] hidden), the self-attention output after ``o_proj`` and before
    the residual (momentum included). ``scores[layer]``: (B, [P,] heads, keys), raw scores
    q·k·scaling to every key the layer receives (cache included; a sliding-window layer with a
    cache receives only its window), before softcapping and masking. CPU, float32.
    """

    positions: torch.Tensor
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    scores: dict[int, torch.Tensor] = field(default_factory=dict)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """x[b, positions[b]] for x of shape (B, T, ...)."""
        positions = self.positions.to(x.device)
        if positions.shape[0] != x.shape[0]:
            raise HfIclError(
                f"capture positions have {positions.shape[0]} rows, the batch has {x.shape[0]}"
            )
        if int(positions.max()) >= x.shape[1] or int(positions.min()) < 0:
            raise HfIclError(
                f"capture positions must lie in [0, {x.shape[1]}), got {positions.tolist()}"
            )
        batch = torch.arange(x.shape[0], device=x.device).view(-1, *[1] * (positions.dim() - 1))
        return x[batch, positions]

    def record_output(
        self, layer: int, module: nn.Module, args: tuple, output: torch.Tensor
    ) -> None:
        self.outputs[layer] = self._rows(output).detach().float().cpu()

    def record_scores(
        self, layer: int, query: torch.Tensor, key: torch.Tensor, scaling: float
    ) -> None:
        query = self._rows(query.transpose(1, 2))
        key = repeat_kv(key, query.shape[-2] // key.shape[1])
        scores = torch.einsum("b...hd,bhsd->b...hs", query, key) * scaling
        self.scores[layer] = scores.detach().float().cpu()


@contextmanager
def capture_attention(
    model: PreTrainedModel, positions: torch.Tensor | Sequence
) -> Iterator[AttentionCapture]:
    """Record o_proj outputs and raw scores at `positions` ((B,) or (B, P) indices into the input)."""
    positions = torch.as_tensor(positions, dtype=torch.long)
    if positions.dim() not in (1, 2) or positions.numel() == 0:
        raise HfIclError(
            f"capture positions must be (batch,) or (batch, n) indices, got shape {tuple(positions.shape)}"
        )
    state = install(model)
    if state.capture is not None:
        raise HfIclError("capture_attention is already active on this model")
    capture = AttentionCapture(positions)
    handles = [
        module.o_proj.register_forward_hook(
            functools.partial(capture.record_output, module.layer_idx)
        )
        for module in attention_modules(model)
    ]
    state.capture = capture
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()
        state.capture = None
        release_if_idle(model, state)
