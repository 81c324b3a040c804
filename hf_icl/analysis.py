"""What ICL and fine-tuning do inside the model, query by query (Dai et al. §5).

For ZS (base model, no demos), ICL (base model, k demos) and FT (fine-tuned model, no demos),
at the scored position p* — the last query token, whose next-token distribution gives the
label — `capture_queries` records per layer the self-attention output after o_proj and before
the residual, and per layer and head the raw pre-softmax scores from p* to the query's own
tokens (demonstrations and BOS excluded). Queries are packed into rows after the prefix with a
block mask (hf_icl.packing, as the scorer), so each query sees the prefix and itself only.

Kendall τ also needs fine-tuning's "attention to training tokens". Dai et al.'s dual form
writes the fine-tuning update of a projection W as ΔW = Σ_j e_j x_jᵀ over training tokens j
(x_j its input, e_j the error signal), so its effect on the query is Σ_j e_j (x_jᵀ x_p*). For
the key/value arms this is exact: an SGD step changes p*'s key by −lr Σ_j (∂ℓ/∂k_j)(x_j·x_p*),
and the same for its value. `record_kv_gradients` keeps x_j and ‖∂ℓ/∂k_j‖ + ‖∂ℓ/∂v_j‖ per
training step, and token j's importance for a query is |x_j·x_p*| (‖∂ℓ/∂k_j‖ + ‖∂ℓ/∂v_j‖),
summed over epochs, with x_p* taken from the fine-tuned model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from hf_icl.attention import capture_attention
from hf_icl.finetune import TrainingDemo
from hf_icl.metrics import load_metric
from hf_icl.packing import build_masks, pack_rows, packed_row


@dataclass
class Captured:
    """Per-query records at p*; L layers, H heads, J demonstration tokens."""

    outputs: np.ndarray  # (N, L, hidden) attention output after o_proj, before the residual
    query_scores: list[
        np.ndarray
    ]  # per query (L, H, own tokens) raw scores p* → the query's tokens
    inputs: np.ndarray  # (N, L, hidden) input of the key/value projections at p*
    demo_attention: np.ndarray | None  # (N, L, J) softmax weight p* → demo token, mean over heads


def _layer_masks(model, masks) -> list[torch.Tensor]:
    """Each layer's (S, S) boolean mask (sliding-window layers have their own)."""
    config = model.config.get_text_config()
    if isinstance(masks, dict):
        return [masks[kind][0, 0] for kind in config.layer_types]
    return [masks[0, 0]] * config.num_hidden_layers


@contextmanager
def _kv_inputs(model, positions: torch.Tensor) -> Iterator[dict[int, torch.Tensor]]:
    """The key/value projections' input at `positions` of the last forward, per layer."""
    seen: dict[int, torch.Tensor] = {}
    layers = model.get_decoder().layers
    hooks = [
        layer.self_attn.k_proj.register_forward_pre_hook(
            lambda m, args, i=i: seen.__setitem__(i, args[0][0, positions].detach().float().cpu())
        )
        for i, layer in enumerate(layers)
    ]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def capture_queries(
    model,
    prefix: list[int],
    queries: list[list[int]],
    *,
    demo_positions: list[int] | None = None,
    pack_tokens: int = 768,
) -> Captured:
    """Records at every query's p* after `prefix`; `demo_positions` (indices into the prefix)
    also gives ICL's attention weights to those tokens."""
    device = model.device
    layers = range(model.config.get_text_config().num_hidden_layers)
    outputs, scores, inputs, attention = [], [], [], []
    for row in pack_rows([len(q) for q in queries], pack_tokens):
        lengths = [len(queries[i]) for i in row]
        positions, _, allowed = packed_row(len(prefix), lengths, device, with_prefix=True)
        masks = build_masks(model, allowed, positions, positions)
        ends = len(prefix) + torch.tensor(lengths).cumsum(0)
        p_star = ends - 1
        ids = torch.tensor([prefix + [t for i in row for t in queries[i]]], device=device)
        with capture_attention(model, p_star[None]) as cap, _kv_inputs(model, p_star) as kv:
            model(
                input_ids=ids, position_ids=positions[None], attention_mask=masks, logits_to_keep=1
            )
        outputs.append(torch.stack([cap.outputs[layer][0] for layer in layers], 1))
        inputs.append(torch.stack([kv[layer] for layer in layers], 1))
        raw = torch.stack([cap.scores[layer][0] for layer in layers], 1)  # (n, L, H, S)
        scores += [
            raw[q, :, :, int(end) - n : int(end)].numpy()
            for q, (end, n) in enumerate(zip(ends, lengths))
        ]
        if demo_positions is not None:
            attention.append(
                _demo_attention(raw, _layer_masks(model, masks), p_star, demo_positions)
            )
    return Captured(
        torch.cat(outputs).numpy(),
        scores,
        torch.cat(inputs).numpy(),
        torch.cat(attention).numpy() if attention else None,
    )


def _demo_attention(
    raw: torch.Tensor,
    layer_masks: list[torch.Tensor],
    p_star: torch.Tensor,
    demo_positions: list[int],
) -> torch.Tensor:
    """Softmax of the raw scores over the keys p* may attend to, mean over heads, at the demos.

    (No softcapping: none of the supported models caps attention logits.)
    """
    allowed = torch.stack([mask[p_star].cpu() for mask in layer_masks], 1)  # (n, L, S)
    weights = raw.masked_fill(~allowed[:, :, None], float("-inf")).softmax(-1).mean(2)
    return weights[:, :, demo_positions]


@dataclass
class TrainingTokens:
    """Per training step (forward with gradients) and layer: x_j and ‖∂ℓ/∂k_j‖ + ‖∂ℓ/∂v_j‖."""

    inputs: list[dict[int, torch.Tensor]] = field(default_factory=list)
    grad_norms: list[dict[int, torch.Tensor]] = field(default_factory=list)

    def importance(self, query_inputs: np.ndarray, demos: list[TrainingDemo]) -> np.ndarray:
        """(N, L, J): each demonstration token's share of the update to each query's p*."""
        queries = torch.from_numpy(query_inputs)
        layers = range(queries.shape[1])
        per_demo: list[torch.Tensor | float] = [0.0] * len(demos)
        for step, (inputs, norms) in enumerate(zip(self.inputs, self.grad_norms)):
            d = step % len(demos)
            skip = demos[d].skip
            x = torch.stack([inputs[layer][skip:] for layer in layers])  # (L, T, hidden)
            g = torch.stack([norms[layer][skip:] for layer in layers])  # (L, T)
            per_demo[d] = per_demo[d] + torch.einsum("nlh,lth->nlt", queries, x).abs() * g
        return torch.cat(per_demo, -1).numpy()


@contextmanager
def record_kv_gradients(model) -> Iterator[TrainingTokens]:
    """Record what `TrainingTokens` holds during training forwards (grad enabled) only."""
    tokens = TrainingTokens()

    def start(module, args):
        if torch.is_grad_enabled():
            tokens.inputs.append({})
            tokens.grad_norms.append({})

    def keep_input(layer: int, module, args):
        if torch.is_grad_enabled():
            tokens.inputs[-1][layer] = args[0][0].detach().float().cpu()

    def keep_grad(layer: int, module, args, output):
        if torch.is_grad_enabled() and output.requires_grad:
            norms = tokens.grad_norms[-1]
            output.register_hook(
                lambda grad: norms.__setitem__(
                    layer, norms.get(layer, 0) + grad[0].float().norm(dim=-1).cpu()
                )
            )

    hooks = [model.register_forward_pre_hook(start)]
    for i, layer in enumerate(model.get_decoder().layers):
        attn: nn.Module = layer.self_attn
        hooks.append(attn.k_proj.register_forward_pre_hook(lambda m, a, i=i: keep_input(i, m, a)))
        hooks += [
            proj.register_forward_hook(lambda m, a, o, i=i: keep_grad(i, m, a, o))
            for proj in (attn.k_proj, attn.v_proj)
        ]
    try:
        yield tokens
    finally:
        for hook in hooks:
            hook.remove()


def _clean(values) -> list:
    """Per-layer values for a JSON row: rounded, NaN (undefined) as None."""
    return [None if v is None or np.isnan(v) else round(float(v), 5) for v in values]


def similarities(
    zs: Captured, icl: Captured, ft: Captured, importance: np.ndarray | None, seed: int
) -> list[dict[str, list]]:
    """Per query, per-layer SimAOU, SimAM and (with `importance`) Kendall τ, with baselines."""
    results = [
        load_metric("simaou").compute(
            icl=list(icl.outputs), ft=list(ft.outputs), zs=list(zs.outputs), seed=seed
        ),
        load_metric("simam").compute(icl=icl.query_scores, ft=ft.query_scores, zs=zs.query_scores),
    ]
    if importance is not None:
        results.append(
            load_metric("kendall_tau").compute(
                icl=list(icl.demo_attention), ft=list(importance), seed=seed
            )
        )
    per_example = {
        key.removesuffix("_per_example"): values
        for r in results
        for key, values in r.items()
        if key.endswith("_per_example")
    }
    return [
        {name: _clean(values[q]) for name, values in per_example.items()}
        for q in range(len(zs.outputs))
    ]
