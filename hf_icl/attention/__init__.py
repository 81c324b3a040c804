"""Custom attention: momentum attention and attention capture, behind one registration.

A model gets one attention function, registered through transformers' ``AttentionInterface``
as ``hf_icl_<base>`` where ``base`` is the model's own implementation (``sdpa`` or ``eager``).
It calls that implementation unchanged, then applies whichever features are on:

- **momentum** (Dai et al.): each attention output, per head and before ``o_proj``, gains a
  decaying sum of the values before it, ``MoAttn_t = Attn_t + Σ_i η^(pos_t − pos_i) v_i``.
  The ``recursive`` variant is ``(1 − η)·Attn_t + η·MoAttn_(t−1)``, i.e.
  ``(1 − η) Σ_i η^(pos_t − pos_i) Attn_i`` over the same keys plus ``t`` itself.
- **capture**: per layer, at chosen positions, the output of ``o_proj`` and the raw scores.

What the momentum sum covers: the keys query ``t`` may attend to (attention mask True) that lie
before it in position (``include_current`` adds its own value), weighted by η to the position
distance. So padding adds nothing, a sliding-window layer sums over its window only, and prompts
packed into one sequence (block mask, position ids restarting per segment) each get exactly the
sum they would get alone. Plain causal/padding masks use a chunked scan, O(T·chunk·d); other
masks use one masked (T×S) matmul, the same cost class as attention itself.

The keys a layer receives include its cache. The positions of cached tokens (and, for the
recursive variant, their attention outputs) are recorded on the cache object by hooks on the
decoder, so a prefix cache that is cropped, or shared by a batch, gives the same numbers as
a full forward. A cache filled while momentum was off is taken to hold the tokens immediately
before the current ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hf_icl.lazy import lazy_exports

# Names resolve on first use, so that reading momentum settings (a config check) imports no torch.
_HOMES = {
    "AttentionCapture": "capture",
    "capture_attention": "capture",
    "CONFIG_KEY": "settings",
    "VARIANTS": "settings",
    "MomentumConfig": "settings",
    "SCAN_CHUNK": "momentum",
    "decaying_cumsum": "momentum",
    "momentum_output": "momentum",
    "scan_plan": "momentum",
    "disable_momentum": "registration",
    "enable_momentum": "registration",
    "restore_from_config": "registration",
}

__all__ = [
    "CONFIG_KEY",
    "SCAN_CHUNK",
    "VARIANTS",
    "AttentionCapture",
    "MomentumConfig",
    "capture_attention",
    "decaying_cumsum",
    "disable_momentum",
    "enable_momentum",
    "momentum_output",
    "restore_from_config",
    "scan_plan",
]

if TYPE_CHECKING:
    from hf_icl.attention.capture import AttentionCapture, capture_attention
    from hf_icl.attention.momentum import SCAN_CHUNK, decaying_cumsum, momentum_output, scan_plan
    from hf_icl.attention.registration import (
        disable_momentum,
        enable_momentum,
        restore_from_config,
    )
    from hf_icl.attention.settings import CONFIG_KEY, VARIANTS, MomentumConfig


__getattr__, __dir__ = lazy_exports(__name__, _HOMES)
