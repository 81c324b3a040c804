"""Momentum attention and attention capture on tiny random llama, qwen2 and gemma3 models."""

from __future__ import annotations

import copy
import inspect
import json
import sys

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    DynamicCache,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from hf_icl.attention import (
    CONFIG_KEY,
    MomentumConfig,
    capture_attention,
    decaying_cumsum,
    disable_momentum,
    enable_momentum,
    momentum_output,
    restore_from_config,
    scan_plan,
)
from hf_icl.config import from_dict, to_dict
from hf_icl.errors import ConfigError, HfIclError
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.models import ModelSpec

VOCAB = 1000
WINDOW = 8
ARCHS = ["llama", "qwen2", "gemma3"]
# Every keyword the installed transformers takes the KV cache under (5.24 added `cache` and
# deprecated `past_key_values`): momentum's bookkeeping must see the cache under either.
CACHE_NAMES = ["past_key_values"] + (
    ["cache"] if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else []
)
cache_names = pytest.mark.parametrize("cache_name", CACHE_NAMES)


def tiny_model(arch: str, dtype: torch.dtype = torch.float32):
    """A 3-layer random model; gemma3 mixes sliding (window 8) and full layers."""
    torch.manual_seed(0)
    sizes = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**sizes))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**sizes))
    else:
        layer_types = ["sliding_attention", "full_attention", "sliding_attention"]
        config = Gemma3TextConfig(
            **sizes, head_dim=8, sliding_window=WINDOW, layer_types=layer_types
        )
        model = Gemma3ForCausalLM(config)
    return model.eval().to(dtype)


def tokens(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def reference_momentum(attn, value, keep, positions, eta, variant, include_current):
    """The paper's formulas written out per row over its real tokens (O(T²) weights)."""
    out = attn.clone()
    groups = attn.shape[2] // value.shape[1]
    for b in range(attn.shape[0]):
        real = [t for t in range(attn.shape[1]) if keep[b, t]]
        pos = positions[b].tolist()
        if variant == "recursive":
            previous = torch.zeros_like(attn[b, 0])
            for t in real:
                previous = (1 - eta) * attn[b, t] + eta * previous
                out[b, t] = previous
            continue
        weights = torch.zeros(attn.shape[1], attn.shape[1], dtype=attn.dtype)
        for t in real:
            for i in real:
                if i < t or (include_current and i == t):
                    weights[t, i] = eta ** (pos[t] - pos[i])
        values = value[b].repeat_interleave(groups, dim=0)
        out[b] += (weights @ values).transpose(0, 1)
    return out


def test_decaying_cumsum_matches_loop():
    x = torch.randn(2, 3, 11, 5)
    for eta in (0.0, 0.7):
        for inclusive in (False, True):
            expected = torch.zeros_like(x)
            for t in range(11):
                for i in range(t + int(inclusive)):
                    expected[..., t, :] += eta ** (t - i) * x[..., i, :]
            got = decaying_cumsum(x, eta, inclusive, chunk=4)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_decaying_cumsum_is_stable_on_long_sequences():
    x = torch.ones(1, 1, 20_000, 1)
    y = decaying_cumsum(x, 0.5, inclusive=False)
    assert torch.isfinite(y).all()
    assert y[0, 0, -1, 0].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("padding", ["none", "left", "right"])
@pytest.mark.parametrize(
    "variant,include_current", [("additive", False), ("additive", True), ("recursive", False)]
)
def test_momentum_output_matches_reference(padding, variant, include_current):
    batch, length, heads, kv_heads, dim = 2, 150, 4, 2, 8
    gen = torch.Generator().manual_seed(0)
    attn = torch.randn(batch, length, heads, dim, generator=gen)
    value = torch.randn(batch, kv_heads, length, dim, generator=gen)
    keep = torch.ones(batch, length, dtype=torch.bool)
    if padding == "left":
        keep[0, :37] = False
    elif padding == "right":
        keep[1, 120:] = False
    positions = torch.arange(length).repeat(batch, 1) + 5
    if padding == "left":  # generate's convention: cumulative count, pads set to 1
        positions = (keep.long().cumsum(-1) - 1).masked_fill(~keep, 1)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    mask = (causal & keep[:, None, :])[:, None]
    config = MomentumConfig(0.9, variant=variant, include_current=include_current)
    expected = reference_momentum(attn, value, keep, positions, 0.9, variant, include_current)

    assert scan_plan(mask, positions, length)[0]  # the O(T·d) path
    fast = momentum_output(attn, value, mask, positions, config)
    # A per-head mask takes the masked-matmul path on the same data.
    masked = momentum_output(attn, value, mask.expand(-1, heads, -1, -1), positions, config)
    for got in (fast, masked):
        torch.testing.assert_close(got[keep], expected[keep], rtol=1e-4, atol=1e-4)


def test_invalid_settings_raise_one_line_errors():
    model = tiny_model("llama")
    bad = [
        dict(eta=1.0),
        dict(eta=-0.1),
        dict(eta="0.5"),
        dict(eta=0.5, layers=[3]),
        dict(eta=0.5, layers="first"),
        dict(eta=0.5, variant="recursiv"),
        dict(eta=0.5, variant="recursive", include_current=True),
    ]
    for kwargs in bad:
        with pytest.raises(HfIclError) as error:
            enable_momentum(model, **kwargs)
        assert "\n" not in str(error.value)
    assert "did you mean 'recursive'" in _message(model, eta=0.5, variant="recursiv")
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"eta": 2}, "m.momentum.eta: must be a number in [0, 1), got 2.0"),
        (
            {"eta": 0.1, "variant": "recursiv"},
            "m.momentum.variant: invalid value 'recursiv' "
            "(did you mean 'recursive'?); allowed: additive, recursive",
        ),
        (
            {"eta": 0.1, "variant": "recursive", "include_current": True},
            "m.momentum.include_current: applies to the additive variant only",
        ),
        (
            {"eta": 0.1, "layers": []},
            "m.momentum.layers: must be 'all' or a non-empty list of layer indices ≥ 0, got []",
        ),
        (
            {"eta": 0.1, "layers": [0, -1]},
            "m.momentum.layers: must be 'all' or a non-empty "
            "list of layer indices ≥ 0, got [0, -1]",
        ),
    ],
)
def test_momentum_settings_are_checked_when_a_config_loads(settings, message):
    with pytest.raises(ConfigError) as error:
        from_dict(ModelSpec, {"spec": "tiny-random-llama", "momentum": settings}, "c.yaml", "m")
    assert str(error.value) == f"c.yaml: {message}"


def test_resolved_momentum_keeps_the_written_keys():
    """Run folders compare resolved configs: momentum resolves as written, defaults left out."""
    data = {
        "job": "evaluate",
        "momentum": {"variant": "recursive", "eta": 0.2},
        "models": [
            {"spec": "tiny-random-llama", "momentum": {"eta": 0.1, "layers": [1]}},
            "tiny-random-qwen2",
        ],
        "tasks": ["sentiment"],
    }
    resolved = to_dict(from_dict(EvaluateConfig, data))
    assert resolved["momentum"] == {"variant": "recursive", "eta": 0.2}
    assert [m["momentum"] for m in resolved["models"]] == [
        {"eta": 0.1, "layers": [1]},
        {"variant": "recursive", "eta": 0.2},
    ]
    spec = ModelSpec(spec="tiny-random-llama", momentum={"eta": 0.3})
    assert isinstance(spec.momentum, MomentumConfig) and spec.label == "tiny-random-llama η=0.3"
    assert to_dict(MomentumConfig(0.3)) == {
        "eta": 0.3,
        "layers": "all",
        "include_current": False,
        "variant": "additive",
    }


def _message(model, **kwargs) -> str:
    with pytest.raises(HfIclError) as error:
        enable_momentum(model, **kwargs)
    return str(error.value)


def test_eta_zero_is_identity_and_disable_restores():
    model = tiny_model("llama")
    ids = tokens(2, 20)
    with torch.no_grad():
        base = model(ids).logits
        enable_momentum(model, 0.0)
        assert (model(ids).logits - base).abs().max() <= 1e-6
        enable_momentum(model, 0.5, layers=[0, 2])
        assert (model(ids).logits - base).abs().max() > 1e-3
        disable_momentum(model)
        assert torch.equal(model(ids).logits, base)
    assert model.config._attn_implementation == "sdpa"
    assert not hasattr(model.config, CONFIG_KEY)


def packed_inputs(prefix: torch.Tensor, queries: list[tuple[int, torch.Tensor]]):
    """Prefix + query segments in one row: each segment sees prefix[:L] and itself, causally,
    with positions restarting at L. Returns ids, full and sliding masks (N×N), positions."""
    ids = torch.cat([prefix] + [q for _, q in queries])
    size = len(ids)
    full = torch.zeros(size, size, dtype=torch.bool)
    full[: len(prefix), : len(prefix)] = True
    positions = list(range(len(prefix)))
    start = len(prefix)
    for cut, query in queries:
        rows = slice(start, start + len(query))
        full[rows, :cut] = True
        full[rows, rows] = True
        positions += range(cut, cut + len(query))
        start += len(query)
    full &= torch.ones(size, size, dtype=torch.bool).tril()
    positions = torch.tensor(positions)
    sliding = full & (positions[:, None] - positions[None, :] < WINDOW)
    return ids, full, sliding, positions


def mask_argument(arch: str, full: torch.Tensor, sliding: torch.Tensor):
    if arch == "gemma3":
        return {"full_attention": full[None, None], "sliding_attention": sliding[None, None]}
    return full[None, None]


@pytest.mark.filterwarnings("ignore:.*deprecated:FutureWarning")
@cache_names
@pytest.mark.parametrize("arch", ARCHS)
def test_packed_and_prefix_cached_scoring_match_separate_prompts(arch, cache_name):
    model = tiny_model(arch)
    enable_momentum(model, 0.8)
    prefix = tokens(14, seed=2)
    queries = [(10, tokens(3, seed=4)), (14, tokens(4, seed=3)), (5, tokens(5, seed=5))]
    ids, full, sliding, positions = packed_inputs(prefix, queries)
    ends = (len(prefix) + torch.tensor([len(q) for _, q in queries]).cumsum(0) - 1).tolist()
    with torch.no_grad():
        separate = torch.stack(
            [model(torch.cat([prefix[:cut], q])[None]).logits[0, -1] for cut, q in queries]
        )
        packed = model(
            ids[None],
            attention_mask=mask_argument(arch, full, sliding),
            position_ids=positions[None],
        ).logits[0, ends]
        # A config-less DynamicCache keeps every prefix token in sliding layers too; the mask
        # applies the window.
        cache = DynamicCache()
        model(prefix[None], **{cache_name: cache}, use_cache=True)
        rows = slice(len(prefix), None)
        cached = model(
            ids[None, rows],
            attention_mask=mask_argument(arch, full[rows], sliding[rows]),
            position_ids=positions[None, rows],
            **{cache_name: copy.deepcopy(cache)},
        ).logits[0, [e - len(prefix) for e in ends]]
        cropped = []
        for cut, query in queries:
            short = copy.deepcopy(cache)
            short.crop(cut - len(prefix))  # 5.23: a negative count of tokens to drop
            cropped.append(model(query[None], **{cache_name: short}).logits[0, -1])
    for got in (packed, cached, torch.stack(cropped)):
        torch.testing.assert_close(got, separate, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:.*deprecated:FutureWarning")
@cache_names
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", ["additive", "recursive"])
def test_cached_decoding_matches_full_forward(arch, variant, cache_name):
    model = tiny_model(arch)
    enable_momentum(model, 0.7, variant=variant)
    ids = tokens(2, 20, seed=6)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, :3] = 0
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, :7], attention_mask=mask[:, :7], **{cache_name: cache}).logits]
        for t in range(7, 20):
            step = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], **{cache_name: cache})
            steps.append(step.logits)
    real = mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[real], full[real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_generate_matches_greedy_full_forwards(arch):
    model = tiny_model(arch)
    enable_momentum(model, 0.7)
    ids = tokens(2, 10, seed=7)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, :4] = 0
    with torch.no_grad():
        generated = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
        sequence, seq_mask = ids, mask
        for _ in range(4):
            positions = (seq_mask.cumsum(-1) - 1).clamp_min(0)
            logits = model(sequence, attention_mask=seq_mask, position_ids=positions).logits
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], 1)
            seq_mask = torch.cat([seq_mask, torch.ones(2, 1, dtype=torch.long)], 1)
    assert torch.equal(generated, sequence)


def test_save_and_restore_round_trip(tmp_path):
    model = tiny_model("llama")
    enabled = enable_momentum(model, 0.4, layers=[0, 2], variant="recursive")
    ids = tokens(2, 12, seed=8)
    with torch.no_grad():
        expected = model(ids).logits
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved[CONFIG_KEY] == {
        "eta": 0.4,
        "layers": [0, 2],
        "include_current": False,
        "variant": "recursive",
    }
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config._attn_implementation == "sdpa"
    assert restore_from_config(loaded).to_dict() == enabled.to_dict()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["additive", "recursive"])
def test_momentum_gradient_matches_finite_differences(variant):
    gen = torch.Generator().manual_seed(9)
    attn = torch.randn(1, 70, 2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    value = torch.randn(1, 1, 70, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    positions = torch.arange(70)[None]
    config = MomentumConfig(0.6, variant=variant)
    left_padded = torch.ones(70, 70, dtype=torch.bool).tril()[None, None].clone()
    left_padded[..., :5] = False
    # None: the scan over more than one chunk; a per-head mask: the masked matmul.
    for mask in (None, left_padded, left_padded.expand(-1, 2, -1, -1)):

        def momentum(a, v, mask=mask):
            return momentum_output(a, v, mask, positions, config)

        assert torch.autograd.gradcheck(momentum, (attn, value), fast_mode=True)


def test_model_gradient_includes_momentum():
    """Autograd through a float64 model with momentum matches a central difference (the model's
    RMSNorm runs in float32, hence the tolerance)."""
    model = tiny_model("llama", dtype=torch.float64)
    enable_momentum(model, 0.6)
    gen = torch.Generator().manual_seed(9)
    embeds = torch.randn(1, 70, 32, generator=gen, dtype=torch.float64)
    readout = torch.randn(1, 70, VOCAB, generator=gen, dtype=torch.float64)
    direction = torch.randn(embeds.shape, generator=gen, dtype=torch.float64)

    def loss(x: torch.Tensor) -> torch.Tensor:
        return (model(inputs_embeds=x, use_cache=False).logits * readout).sum()

    embeds.requires_grad_(True)
    loss(embeds).backward()
    analytic = (embeds.grad * direction).sum().item()
    step = 1e-3
    with torch.no_grad():
        difference = loss(embeds + step * direction) - loss(embeds - step * direction)
    numeric = difference.item() / (2 * step)
    assert analytic == pytest.approx(numeric, rel=2e-4)


def attention_inputs(model) -> dict[int, dict]:
    """Hooks that keep each attention module's inputs (hidden states, rotary cos/sin)."""
    seen = {}
    for layer in model.model.layers:
        layer.self_attn.register_forward_pre_hook(
            lambda module, args, kwargs: seen.__setitem__(module.layer_idx, kwargs),
            with_kwargs=True,
        )
    return seen


def attention_by_hand(module, inputs, eta):
    """Raw scores and o_proj output (momentum included) recomputed from the module's weights."""
    hidden = inputs["hidden_states"]
    batch, length, _ = hidden.shape
    shape = (batch, length, -1, module.head_dim)
    q = module.q_proj(hidden).view(shape).transpose(1, 2)
    k = module.k_proj(hidden).view(shape).transpose(1, 2)
    v = module.v_proj(hidden).view(shape).transpose(1, 2)
    if hasattr(module, "q_norm"):
        q, k = module.q_norm(q), module.k_norm(k)
    rotary = sys.modules[type(module).__module__].apply_rotary_pos_emb
    q, k = rotary(q, k, *inputs["position_embeddings"])
    groups = q.shape[1] // k.shape[1]
    scores = q @ k.repeat_interleave(groups, 1).transpose(-1, -2) * module.scaling
    index = torch.arange(length)
    allowed = index[None, :] <= index[:, None]
    if getattr(module, "sliding_window", None):
        allowed &= index[:, None] - index[None, :] < module.sliding_window
    attn = scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v.repeat_interleave(groups, 1)
    weights = torch.where(
        allowed & (index[None, :] < index[:, None]),
        eta ** (index[:, None] - index[None, :]).float(),
        0,
    )
    attn = attn + weights @ v.repeat_interleave(groups, 1)
    output = module.o_proj(attn.transpose(1, 2).reshape(batch, length, -1))
    return scores, output


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_capture_matches_manual_recomputation(arch):
    model = tiny_model(arch)
    enable_momentum(model, 0.5)
    seen = attention_inputs(model)
    ids = tokens(2, 12, seed=10)
    where = torch.tensor([11, 6])
    with torch.no_grad(), capture_attention(model, where) as capture:
        model(ids)
    assert sorted(capture.outputs) == sorted(capture.scores) == [0, 1, 2]
    rows = torch.arange(2)
    with torch.no_grad():
        for layer in model.model.layers:
            module = layer.self_attn
            scores, output = attention_by_hand(module, seen[module.layer_idx], eta=0.5)
            got_scores = capture.scores[module.layer_idx]
            got_output = capture.outputs[module.layer_idx]
            assert got_scores.dtype == got_output.dtype == torch.float32
            assert got_scores.device.type == got_output.device.type == "cpu"
            torch.testing.assert_close(got_scores, scores[rows, :, where], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got_output, output[rows, where], rtol=1e-5, atol=1e-5)


def test_capture_and_momentum_leave_each_other_intact():
    model = tiny_model("llama")
    ids = tokens(1, 9, seed=11)
    with torch.no_grad():
        base = model(ids).logits
        with capture_attention(model, [[3, 8]]) as capture:
            assert torch.equal(model(ids).logits, base)
            enable_momentum(model, 0.5)
            with_momentum = model(ids).logits
        assert capture.outputs[0].shape == (1, 2, 32)
        assert capture.scores[0].shape == (1, 2, 4, 9)
        assert model.config._attn_implementation == "hf_icl_sdpa"
        assert torch.equal(model(ids).logits, with_momentum)
        with capture_attention(model, [0]):
            disable_momentum(model)
            assert torch.equal(model(ids).logits, base)
        assert model.config._attn_implementation == "sdpa"
