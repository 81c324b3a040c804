"""What a KV cache holds, for momentum: the positions of its tokens and, for the recursive
variant, their raw attention outputs. Recorded on the cache object by the decoder hooks, so a
prefix cache that is cropped or shared by a batch gives the same numbers as a full forward; a
cache filled while momentum was off is taken to hold the tokens right before the current ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hf_icl.attention.momentum import cat_rows


def preceding_positions(query_positions: torch.Tensor, count: int) -> torch.Tensor:
    """Positions of `count` cached tokens assumed to come right before the current ones."""
    steps = torch.arange(-count, 0, device=query_positions.device, dtype=query_positions.dtype)
    return query_positions[:, :1] + steps


@dataclass
class History:
    """What the tokens in a cache were: positions, and raw attention outputs (recursive variant)."""

    positions: torch.Tensor
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)

    def first(self, length: int) -> History:
        """The history of a cache cropped to `length` tokens."""
        outputs = {layer: out[:, :, :length] for layer, out in self.outputs.items()}
        return History(self.positions[:, :length], outputs)


@dataclass
class ForwardContext:
    """One decoder forward: the cache it starts from and what it adds to it."""

    past_length: int
    history: History | None
    new_positions: torch.Tensor | None = None
    new_outputs: dict[int, torch.Tensor] = field(default_factory=dict)
    key_positions: dict[int, torch.Tensor] = field(default_factory=dict)

    def cached_positions(self, query_positions: torch.Tensor, count: int) -> torch.Tensor:
        """Positions of the last `count` cached tokens (a sliding layer keeps only its window)."""
        if self.history is None:
            return preceding_positions(query_positions, count)
        if count > self.past_length:
            raise RuntimeError(
                f"momentum: a layer received {count} cached keys of {self.past_length}"
            )
        return self.history.positions[:, self.past_length - count :]

    def cached_outputs(self, layer: int, count: int) -> torch.Tensor:
        outputs = self.history.outputs.get(layer) if self.history is not None else None
        if outputs is None:
            raise RuntimeError(
                "recursive momentum with a KV cache needs a cache filled while it was enabled"
            )
        return outputs[:, :, self.past_length - count :]

    def extended_history(self) -> History:
        cached = self.cached_positions(self.new_positions, self.past_length)
        positions = cat_rows(cached, self.new_positions, dim=-1)
        outputs = {
            layer: cat_rows(self.cached_outputs(layer, self.past_length), new, dim=2)
            if self.past_length
            else new
            for layer, new in self.new_outputs.items()
        }
        return History(positions, outputs)


def key_positions(
    context: ForwardContext | None,
    query_positions: torch.Tensor | None,
    query_len: int,
    cached: int,
    device: torch.device,
) -> torch.Tensor:
    """Positions of every key a layer receives: its `cached` tokens, then the current ones."""
    if context is not None and cached in context.key_positions:
        return context.key_positions[cached]
    if query_positions is None:  # the models read here pass them; keep the model's default
        start = context.past_length if context is not None else cached
        query_positions = torch.arange(start, start + query_len, device=device)[None]
    if context is None:
        return cat_rows(preceding_positions(query_positions, cached), query_positions, dim=-1)
    if context.new_positions is None:
        context.new_positions = query_positions
    positions = cat_rows(context.cached_positions(query_positions, cached), query_positions, -1)
    # Every layer of one forward gets the same position ids; sliding layers fewer cached keys.
    context.key_positions[cached] = positions
    return positions
