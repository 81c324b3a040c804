import subprocess
import sys

import pytest
import torch

from hf_icl.errors import HfIclError
from hf_icl.models import ModelSpec, check_model_spec, list_aliases, load_model, resolve_source


def test_aliases_are_listed_and_installed():
    rows = {alias: installed for alias, _, installed in list_aliases()}
    assert set(rows) == {
        "smollm2-135m",
        "gemma3-270m",
        "tiny-random-llama",
        "tiny-random-gemma3",
        "tiny-random-qwen2",
    }
    assert all(rows.values())


def test_bad_spec_lists_aliases_with_suggestion():
    with pytest.raises(
        HfIclError,
        match=r"unknown model spec 'smollm-135m' \(did you mean 'smollm2-135m'\?\).*gemma3-270m",
    ):
        load_model("smollm-135m")
    with pytest.raises(HfIclError, match=r"unknown tiny model 'tiny-random-gpt9'"):
        load_model("tiny-random-gpt9")
    with pytest.raises(HfIclError, match="no such .gguf file"):
        load_model("/nonexistent/model.gguf")


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2"])
def test_tiny_models_use_the_real_tokenizer(arch):
    model, tok = load_model(f"tiny-random-{arch}")
    assert len(tok) == 49152 and model.config.vocab_size == len(tok)
    ids = tok("Review: great\nSentiment:", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()


def test_bfloat16_is_cast_after_float32_load():
    model, _ = load_model(ModelSpec(spec="tiny-random-llama", dtype="bfloat16"))
    assert next(model.parameters()).dtype == torch.bfloat16


@pytest.mark.real_model
def test_smollm2_gguf_saves_and_reloads_identically(smollm2, tmp_path):
    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert getattr(model, "hf_quantizer", None) is None
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded, _ = load_model(str(tmp_path))
    ids = tok("Review: a gripping film\nSentiment:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)


@pytest.mark.real_model
def test_gguf_file_spec_and_untrained_control(smollm2):
    from hf_icl.models import smollm2_gguf

    folder = resolve_source(str(smollm2_gguf()))
    assert folder == resolve_source("smollm2-135m")
    random_model, _ = load_model(ModelSpec(spec="smollm2-135m", init="random"))
    w_random = random_model.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(w_random, smollm2[0].model.layers[0].self_attn.q_proj.weight)
    assert ModelSpec(spec="smollm2-135m", init="random").label == "smollm2-135m (untrained)"


def _qlora_run(folder, inference_layout: bool) -> tuple[float, list[float]]:
    from peft import LoraConfig, get_peft_model

    model, tok = load_model(
        ModelSpec(spec=str(folder), quantization="4bit", bnb_cpu_inference_layout=inference_layout)
    )
    ids = tok("Review: dull\nSentiment: negative", return_tensors="pt").input_ids
    with torch.no_grad():
        model(ids)  # an evaluation forward first: the trap fires here
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    losses, grad_norm = [], 0.0
    for step in range(6):
        loss = model(ids, labels=ids).loss
        loss.backward()
        if step == 0:
            grad_norm = sum(
                p.grad.abs().sum().item()
                for n, p in model.named_parameters()
                if "lora_" in n and p.grad is not None
            )
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return grad_norm, losses


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    model, tok = load_model("tiny-random-llama")
    folder = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_qlora_trains_after_an_eval_forward(tiny_folder):
    grad_norm, losses = _qlora_run(tiny_folder, inference_layout=False)
    assert grad_norm > 0
    assert losses[-1] < losses[0]


def test_inference_layout_breaks_training_on_avx512bf16_cpus(tiny_folder):
    from bitsandbytes.nn.modules import has_avx512bf16

    if not has_avx512bf16():
        pytest.skip("the CPU has no AVX512-BF16: bitsandbytes keeps the trainable layout")
    grad_norm, _ = _qlora_run(tiny_folder, inference_layout=True)
    assert grad_norm == 0.0  # the failure the loader's fix prevents


def test_model_specs_are_checked_without_importing_torch():
    code = (
        "import sys\n"
        "from hf_icl.errors import HfIclError\n"
        "from hf_icl.models import ModelSpec, check_model_spec\n"
        "check_model_spec(ModelSpec(spec='tiny-random-llama'), 'cfg.yaml: models.0')\n"
        "try:\n"
        "    check_model_spec(ModelSpec(spec='./missing/model'), 'cfg.yaml: models.1')\n"
        "except HfIclError as err:\n"
        "    print(err)\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.splitlines() == [
        "cfg.yaml: models.1: model spec './missing/model': no such local folder",
        "False False",
    ]


def test_bad_momentum_in_any_model_fails_before_anything_runs(tmp_path):
    """The second model's eta is rejected in one line when the config loads, before the first
    model runs, and without importing torch."""
    (tmp_path / "bad.yaml").write_text(
        "job: evaluate\nmodels:\n  - {spec: tiny-random-llama, momentum: {eta: 0.1}}\n"
        "  - {spec: tiny-random-llama, momentum: {eta: 2}}\ntasks: [sentiment]\nshots: [0]\n"
    )
    code = (
        "import sys\n"
        "from hf_icl.cli import main\n"
        "try:\n"
        "    code = main(['evaluate', 'bad.yaml', '--out', 'out'])\n"
        "except SystemExit as err:\n"
        "    code = err.code\n"
        "print(code, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.stdout.splitlines() == ["2 False False"]
    assert proc.stderr.splitlines() == [
        "hf-icl: error: bad.yaml: models.1.momentum.eta: must be a number in [0, 1), got 2.0"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_custom_model_code_is_accepted_with_trust_remote_code(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"model_type": "my_arch", "auto_map": {"AutoConfig": "m.C"}}'
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(HfIclError, match="trust_remote_code: true"):
        check_model_spec(ModelSpec(spec=str(tmp_path)))
    check_model_spec(ModelSpec(spec=str(tmp_path), trust_remote_code=True))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    check_model_spec(ModelSpec(spec=str(tmp_path)))


def test_loading_from_an_unreachable_hub_is_one_line(monkeypatch):
    import huggingface_hub.constants

    import hf_icl.models.spec

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_icl.models.spec, "hub_offline", lambda: False)  # past the cheap check
    with pytest.raises(
        HfIclError,
        match=r"^model spec 'HuggingFaceTB/SmolLM2-135M': cannot load "
        r"its tokenizer: the Hugging Face Hub is unreachable: offline mode is on",
    ):
        load_model("HuggingFaceTB/SmolLM2-135M")


def test_a_trained_small_model_folder_loads_as_its_learner(tmp_path):
    from hf_icl.config import to_dict
    from hf_icl.models import (
        ICLModel,
        SmallModelConfig,
        build_small_model,
        load_tokenizer,
        save_learner,
    )

    config = SmallModelConfig(architecture="looped_linear_attention", loops=3, init_std=0.3)
    lsa = build_small_model(config, seed=0, dim=4).eval()
    info = {"kind": "small", "small_model": to_dict(config), "read_in": False}
    save_learner(ICLModel(lsa), tmp_path, None, info)
    code = (
        "import sys\n"
        "from hf_icl.models import ModelSpec, check_model_spec\n"
        f"check_model_spec(ModelSpec(spec={str(tmp_path)!r}, eval_loops=[6]))\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout == "False\n"  # its own model_type is no error, and no torch is needed
    model, tokenizer = load_model(str(tmp_path))
    assert isinstance(model, ICLModel) and tokenizer is None and not model.training
    x, y = torch.randn(2, 5, 4), torch.randn(2, 5)
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([4, 2, 4])
    with torch.no_grad():
        torch.testing.assert_close(
            model(rows, cols, x=x, labels=y), ICLModel(lsa)(rows, cols, x=x, labels=y)
        )
    with pytest.raises(HfIclError, match="small model reads numeric tasks .* has no tokenizer"):
        load_tokenizer(str(tmp_path))
