"""Linear self-attention (LSA), the model class of the in-context-learning theory papers.

Tokens come in the embedding renderer's ``paired`` layout: one per example, z_i = [x_i; y_i] in
R^{d+1}, entering as they are (no read-in). The prediction of y_i reads the query column
q_i = [x_i; 0] with the i examples before it as context. One layer, in Ahn et al.'s and
Gatmiry et al.'s convention (arXiv 2306.00297, 2410.08292):

    Z ← Z − (1/n) · P · Z M Zᵀ · Q · Z,     M = diag(I_n, 0),

so every column (context and query) is updated from the n context columns only, and the
prediction is ŷ = −[Z]_{d+1, query} (the query's y coordinate starts at 0). With
P = [[0, 0], [0, 1]] and Q = [[Γ, 0], [0, 0]] one layer gives ŷ = x_qᵀ Γᵀ (1/n) Σ y_i x_i, one
GD step from w = 0 preconditioned by A = Γᵀ (von Oswald et al.), and L applications give L
steps of that preconditioned GD (the context columns' y coordinates become the residuals).

- ``linear_attention``: one layer. ``looped_linear_attention``: the same layer (shared weights)
  applied ``loops`` times; training reads the last ``loss_loops`` loops (the loss is their
  average), evaluation the last one, and ``config.loops`` may be changed at test time.
- ``parameterization: full``: P and Q are free (d+1)×(d+1) matrices (Zhang, Frei & Bartlett);
  ``bilinear``: only Γ (d×d) is trained, P and the other blocks of Q fixed as above — Magen &
  Vardi's simplified model ŷ = x_qᵀ W (1/n) Σ y_i x_i, and Gatmiry et al.'s looped model.
- Two-class tasks put y = ±1 in the token; the learner turns ŷ into the logits [0, ŷ], so the
  cross-entropy is the logistic loss log(1 + e^{−y ŷ}).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel


class LinearAttentionConfig(PretrainedConfig):
    model_type = "hf_icl_linear_attention"

    def __init__(
        self,
        dim: int = 1,
        loops: int = 1,
        loss_loops: int | None = None,
        eval_loops: list[int] | None = None,
        parameterization: str = "full",
        init_std: float = 0.01,
        **kwargs,
    ) -> None:
        self.dim = dim
        self.loops = loops
        self.loss_loops = loss_loops or loops
        self.eval_loops = list(eval_loops or [])
        self.parameterization = parameterization
        self.init_std = init_std
        super().__init__(**kwargs)


class LinearAttentionModel(PreTrainedModel):
    """Predictions of y at every position of (B, n, d+1) paired tokens: (loops read, B, n)."""

    config_class = LinearAttentionConfig
    base_model_prefix = "lsa"
    paired_layout = True

    def __init__(self, config: LinearAttentionConfig) -> None:
        super().__init__(config)
        d, std = config.dim, config.init_std
        if config.parameterization == "bilinear":
            self.gamma = nn.Parameter(std * torch.randn(d, d))
        else:
            self.p = nn.Parameter(std * torch.randn(d + 1, d + 1))
            self.q = nn.Parameter(std * torch.randn(d + 1, d + 1))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """The weights are drawn in __init__ (seeded by the caller); nothing to redo."""

    def get_input_embeddings(self) -> None:
        return None

    def get_output_embeddings(self) -> None:
        return None

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, Q) as (d+1)×(d+1) matrices, whatever the parameterization."""
        if self.config.parameterization != "bilinear":
            return self.p, self.q
        d = self.config.dim
        p = self.gamma.new_zeros(d + 1, d + 1)
        p[d, d] = 1.0
        q = torch.zeros_like(p)
        q[:d, :d] = self.gamma
        return p, q

    def preconditioner(self) -> torch.Tensor:
        """A in w ← w − A ∇L(w) as read off the weights: (P_yy · Q_xx)ᵀ, exact for the bilinear
        parameterization and for full weights of the GD form (other blocks zero)."""
        p, q = self.matrices()
        d = self.config.dim
        return (p[d, d] * q[:d, :d]).T

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(loops read, B, m): predictions at ``positions`` (m sorted indices; None: all n)."""
        n = tokens.shape[1]
        positions = torch.arange(n, device=tokens.device) if positions is None else positions
        loops = self.config.loops
        read = self.config.loss_loops if self.training else 1
        if loops == 1:
            return self._one_layer(tokens)[None, :, positions]
        return self._looped(tokens, positions, loops, min(read, loops))

    def _one_layer(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n): one layer; the context columns are shared by all queries."""
        p, q = self.matrices()
        d = self.config.dim
        queries = torch.cat([tokens[..., :d], torch.zeros_like(tokens[..., d:])], -1)
        values = tokens @ p[d]  # (B, n): y coordinate of P z_j
        scores = tokens @ (queries @ q.T).transpose(1, 2)  # [j, i] = z_jᵀ Q q_i
        n = tokens.shape[1]
        before = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)  # j < i
        counts = torch.arange(n, device=tokens.device).clamp(min=1).to(tokens.dtype)
        summed = (values[:, :, None] * scores).transpose(1, 2).masked_fill(~before, 0.0).sum(-1)
        return summed / counts

    def _looped(
        self, tokens: torch.Tensor, positions: torch.Tensor, loops: int, read: int
    ) -> torch.Tensor:
        """(read, B, m): query i's sequence (its i context columns, then q_i) updated ``loops``
        times; every column changes, so each query carries its own copy of the context."""
        p, q = self.matrices()
        batch, n, width = tokens.shape
        d = self.config.dim
        queries = torch.cat(
            [tokens[:, positions, :d], tokens.new_zeros(batch, len(positions), 1)], -1
        )
        z = torch.cat(
            [tokens[:, None].expand(batch, len(positions), n, width), queries[:, :, None]], 2
        )
        context = torch.arange(n, device=tokens.device)[None] < positions[:, None]  # [i, j]
        context = torch.cat([context, context.new_zeros(len(positions), 1)], 1).to(tokens.dtype)
        counts = positions.clamp(min=1).to(tokens.dtype)
        scale = (context / counts[:, None])[None, :, :, None]  # (1, i, j, 1)
        outputs = []
        for loop in range(loops):
            scores = z @ (z @ q.T).transpose(-1, -2)  # [.., j, c] = z_jᵀ Q z_c
            values = (z @ p.T) * scale  # P z_j / i on context columns, 0 elsewhere
            z = z - scores.transpose(-1, -2) @ values
            if loop >= loops - read:
                outputs.append(-z[:, :, n, d])
        return torch.stack(outputs)


AutoConfig.register(LinearAttentionConfig.model_type, LinearAttentionConfig)
AutoModel.register(LinearAttentionConfig, LinearAttentionModel)


def build_linear_attention(config, dim: int) -> LinearAttentionModel:
    """A fresh model for ``dim``-dimensional inputs from a ``small_model`` section (the caller
    seeds torch); ``linear_attention`` is one layer, ``looped_linear_attention`` loops."""
    looped = config.architecture == "looped_linear_attention"
    return LinearAttentionModel(
        LinearAttentionConfig(
            dim=dim,
            loops=config.loops if looped else 1,
            loss_loops=config.loss_loops if looped else 1,
            eval_loops=config.eval_loops if looped else [],
            parameterization=config.parameterization,
            init_std=config.init_std,
        )
    )
