"""Captures at p*, fine-tuning's token importances, and the compare job end to end."""

import json

import numpy as np
import pytest
import torch
import yaml

from hf_icl.analysis import capture_queries, record_kv_gradients
from hf_icl.attention import capture_attention
from hf_icl.cli import main
from hf_icl.finetune import lm_loss, make_arm, training_demos
from hf_icl.finetune_config import ArmSpec, FinetuneConfig
from hf_icl.jobs import compare as compare_job
from hf_icl.models import ModelSpec, load_model
from hf_icl.render import TextRenderer
from hf_icl.samplers.text import TextClassificationSampler
from hf_icl.tasks import load_task


def rendered_sentiment(tokenizer, shots: int, queries: int):
    _, sampler = load_task("sentiment")
    episode = sampler.episode(0, shots, queries)
    renderer = TextRenderer(tokenizer)
    rendered = renderer.render_episode(episode)
    return rendered, training_demos(renderer, episode, rendered, shots)


def one_prompt(model, ids: list[int]):
    """Reference: the prompt alone, default causal (and sliding-window) masking."""
    seen = {}
    hooks = [
        layer.self_attn.k_proj.register_forward_pre_hook(
            lambda m, args, i=i: seen.__setitem__(i, args[0][0, -1])
        )
        for i, layer in enumerate(model.model.layers)
    ]
    try:
        with torch.no_grad(), capture_attention(model, [len(ids) - 1]) as cap:
            out = model(torch.tensor([ids]), output_attentions=True)
    finally:
        for hook in hooks:
            hook.remove()
    return cap, seen, out.attentions


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_packed_captures_equal_each_prompt_alone(arch):
    """p* is the last query token; scores are sliced to the query's own tokens; ICL attention
    to demo tokens is the softmax the model computes (gemma3's layer 0 slides: window 16)."""
    momentum = {"eta": 0.3}
    model, tokenizer = load_model(ModelSpec(spec=f"tiny-random-{arch}", momentum=momentum))
    eager, _ = load_model(
        ModelSpec(spec=f"tiny-random-{arch}", momentum=momentum, attn_implementation="eager")
    )
    rendered, demos = rendered_sentiment(tokenizer, shots=3, queries=4)
    prefix = rendered.prefix_ids[: rendered.boundaries[3]]
    positions = [d.start + j for d in demos for j in range(len(d.ids) - d.skip)]
    got = capture_queries(
        model, prefix, rendered.query_ids, demo_positions=positions, pack_tokens=40
    )
    assert len(prefix) > 16 and got.outputs.shape == (4, 2, 64)
    for q, query in enumerate(rendered.query_ids):
        cap, inputs, _ = one_prompt(model, prefix + query)
        _, _, attentions = one_prompt(eager, prefix + query)
        n = len(query)
        for layer in range(2):
            torch.testing.assert_close(
                torch.from_numpy(got.outputs[q, layer]), cap.outputs[layer][0], rtol=1e-4, atol=1e-5
            )
            torch.testing.assert_close(
                torch.from_numpy(got.query_scores[q][layer]),
                cap.scores[layer][0, :, -n:],
                rtol=1e-4,
                atol=1e-4,
            )
            torch.testing.assert_close(
                torch.from_numpy(got.inputs[q, layer]), inputs[layer], rtol=1e-4, atol=1e-5
            )
            weights = attentions[layer][0, :, -1].mean(0)[positions]
            torch.testing.assert_close(
                torch.from_numpy(got.demo_attention[q, layer]), weights, rtol=1e-4, atol=1e-6
            )
    if arch == "gemma3":  # the window hides the first demo tokens from p* at layer 0 only
        assert (got.demo_attention[:, 0, :3] == 0).all() and (got.demo_attention[:, 1] > 0).all()


def test_training_token_importance_is_the_dual_form():
    """|x_j · x_p*| (‖∂ℓ/∂k_j‖ + ‖∂ℓ/∂v_j‖) per layer, from the step's own gradients."""
    model, tokenizer = load_model("tiny-random-llama")
    _, demos = rendered_sentiment(tokenizer, shots=1, queries=1)
    demo = demos[0]
    ids = torch.tensor([demo.ids])
    layers = model.model.layers
    stash = {}
    hooks = [
        h
        for i, layer in enumerate(layers)
        for h in (
            layer.self_attn.k_proj.register_forward_pre_hook(
                lambda m, a, i=i: stash.__setitem__(("x", i), a[0])
            ),
            layer.self_attn.k_proj.register_forward_hook(
                lambda m, a, o, i=i: stash.__setitem__(("k", i), o)
            ),
            layer.self_attn.v_proj.register_forward_hook(
                lambda m, a, o, i=i: stash.__setitem__(("v", i), o)
            ),
        )
    ]
    for p in model.parameters():
        p.requires_grad_(True)
    loss = lm_loss(model(ids).logits, ids, demo.skip)
    for hook in hooks:
        hook.remove()
    keys = [(kind, i) for i in range(2) for kind in "kv"]
    grads = dict(zip(keys, torch.autograd.grad(loss, [stash[k] for k in keys])))
    queries = np.random.default_rng(0).standard_normal((3, 2, 64)).astype(np.float32)
    expected = np.stack(
        [
            (torch.from_numpy(queries[:, i]) @ stash[("x", i)][0].detach().T).abs().numpy()
            * (grads[("k", i)][0].norm(dim=-1) + grads[("v", i)][0].norm(dim=-1)).numpy()
            for i in range(2)
        ],
        1,
    )[:, :, demo.skip :]
    arm = make_arm(model, FinetuneConfig().settings(ArmSpec("dai")))
    with record_kv_gradients(model) as tokens, arm.fine_tuned([demo], lr=0.1):
        with torch.no_grad():
            model(ids)  # not a training forward: not recorded
    assert len(tokens.inputs) == 1
    np.testing.assert_allclose(tokens.importance(queries, [demo]), expected, rtol=1e-4, atol=1e-7)


def write_config(tmp_path, task_dir, **overrides):
    config = {
        "job": "compare",
        "models": ["tiny-random-llama"],
        "tasks": [str(task_dir / "mini.yaml")],
        "shots": [2],
        "num_seeds": 2,
        "num_queries": 3,
        "controls": ["untrained"],
        "finetune": {
            "arms": ["dai", "lora"],
            "lr_sweep": [0.001, 0.01],
            "sweep_episodes": 1,
            "sweep_queries": 2,
        },
        **overrides,
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_bad_compare_config_is_a_one_line_error(tmp_path, text_task_dir, capsys):
    assert main(["compare", str(write_config(tmp_path, text_task_dir, shots=[0, 2]))]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "shots: compare needs shot counts ≥ 1" in err


def test_compare_end_to_end_and_resume(tmp_path, text_task_dir, monkeypatch):
    splits, units = [], []
    episode = TextClassificationSampler.episode
    monkeypatch.setattr(
        TextClassificationSampler,
        "episode",
        lambda self, i, d, q, split="test": (
            splits.append((split, q)) or episode(self, i, d, q, split)
        ),
    )
    compare_unit = compare_job.compare_unit
    monkeypatch.setattr(
        compare_job, "compare_unit", lambda *args: units.append(args[2]) or compare_unit(*args)
    )
    path, out = write_config(tmp_path, text_task_dir), tmp_path / "out"
    assert main(["compare", str(path), "--out", str(out), "--quiet"]) == 0
    # the learning rate is swept on held-out training-split episodes only (2 arms × 2 models)
    assert [s for s in splits if s[0] == "train"] == [("train", 2)] * 4
    names = ["samples.jsonl", "results.json", "report.md", "layers-mini.png", "config.yaml"]
    first = {n: (out / n).read_bytes() for n in names}
    rows = [json.loads(line) for line in first["samples.jsonl"].splitlines()]
    assert len(units) == 4 and len(rows) == 4 * 3 * (1 + 1 + 2)  # units × queries × arms
    ft = [r for r in rows if r["arm"] in ("dai", "lora")]
    assert all(
        len(r["simaou"]) == len(r["simam_difference"]) == 2 and r["lr"] in (0.001, 0.01) for r in ft
    )
    assert all(("kendall_tau" in r) == (r["arm"] == "dai") for r in ft)
    summary = json.loads(first["results.json"])["summary"]
    assert [(s["model"], s["arm"]) for s in summary] == [
        ("tiny-random-llama", "dai"),
        ("tiny-random-llama", "lora"),
        ("tiny-random-llama (untrained)", "dai"),
        ("tiny-random-llama (untrained)", "lora"),
    ]
    assert all(
        0 <= s["zs"] <= 1 and -1 <= s["simaou"] <= 1 and len(s["simam_per_layer"]) == 2
        for s in summary
    )
    report = first["report.md"].decode()
    assert "| model | k | arm | lr | ZS | ICL | FT | Rec2FTP (n) | SimAOU |" in report
    assert "| tiny-random-llama (untrained) | 2 | lora |" in report
    assert "(layers-mini.png)" in report and first["layers-mini.png"][:4] == b"\x89PNG"
    # a crash after the first unit and half a line of the second: only the rest is redone
    lines = first["samples.jsonl"].decode().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:12]) + lines[12][:30])
    for name in ("results.json", "report.md", "layers-mini.png"):
        (out / name).unlink()
    units.clear()
    assert main(["compare", str(path), "--out", str(out), "--quiet"]) == 0
    assert len(units) == 3
    assert {n: (out / n).read_bytes() for n in names} == first


def test_order_sensitivity_counts_accuracy_spread_and_flipped_queries():
    from hf_icl.jobs.compare_report import order_sensitivity

    def rows(seed, order, preds, golds):
        return [
            {"seed": seed, "order": order, "query": q, "pred": p, "gold": g}
            for q, (p, g) in enumerate(zip(preds, golds))
        ]

    gold = [0, 1, 1, 0]
    data = (
        rows(0, 0, [0, 1, 1, 0], gold)
        + rows(0, 1, [0, 1, 0, 1], gold)
        + rows(1, 0, [1, 1, 1, 1], gold)
        + rows(1, 1, [1, 1, 1, 1], gold)
    )
    result = order_sensitivity(data)
    assert result["order_std"] == pytest.approx((0.25 + 0.0) / 2)  # accuracies 1, .5 | .5, .5
    assert result["order_flips"] == pytest.approx(2 / 8)
    assert order_sensitivity(rows(0, 0, [0, 1, 1, 0], gold)) == {
        "order_std": None,
        "order_flips": None,
    }


def test_shipped_dai_config_parses():
    from hf_icl.config import from_dict, read_yaml
    from hf_icl.resources import find_config

    path = find_config("dai_smollm2")
    config = from_dict(compare_job.Config, read_yaml(path), source=str(path))
    assert config.shots == [16] and config.num_seeds >= 3 and config.controls == ["untrained"]
    assert [m.label for m in config.all_models()] == ["smollm2-135m", "smollm2-135m (untrained)"]
    assert [a.name for a in config.finetune.arms] == ["dai"] and config.finetune.lr_sweep
    assert {"sentiment", "topic"} <= {t if isinstance(t, str) else t["name"] for t in config.tasks}


def test_repro_dai_configs_parse_and_hub_templates_render(monkeypatch, tokenizer):
    """The Hub tasks cannot load offline: fake rows from each template's fields, then render."""
    import string

    from hf_icl.config import from_dict, read_yaml
    from hf_icl.render import RenderOptions, TextRenderer
    from hf_icl.resources import find_config
    from hf_icl.tasks import load_task

    for name in ("repro_dai", "repro_dai_hub"):
        path = find_config(name)
        config = from_dict(compare_job.Config, read_yaml(path), source=str(path))
        assert config.demo_orders >= 2 and config.controls == ["untrained"]
    assert config.tasks == ["sst2", "sst5", "mr", "subj", "agnews", "cb"]

    def fake_split(self, split):
        fields = [f for _, f, _, _ in string.Formatter().parse(self.params.template) if f]
        rows = [
            {**{f: f"<{f} {i}>" for f in fields}, self.params.label_column: i % 2}
            for i in range(40)
        ]
        return self._check_rows(rows, [f"fake {split} row {i}" for i in range(40)], f"fake {split}")

    monkeypatch.setattr(TextClassificationSampler, "_load_split", fake_split)
    for task in config.tasks:
        definition, sampler = load_task(task)
        renderer = TextRenderer(tokenizer, from_dict(RenderOptions, definition.render))
        episode = sampler.episode(0, 2, 1)
        rendered = renderer.render_episode(episode)
        prompt = tokenizer.decode(rendered.prefix_ids + rendered.query_ids[0])
        template = sampler.params.template
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        assert template.split("{")[0].strip() in prompt
        assert all(prompt.count(f"<{f} ") == 3 for f in fields), prompt  # 2 demos + the query
        assert all(len(ids) == 1 for ids in rendered.candidates), (task, rendered.candidates)
