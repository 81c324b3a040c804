"""`hf-icl export lm-eval`: lm-eval runs the exported task as is and gets hf-icl's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from hf_icl.cli import main
from hf_icl.config import from_dict
from hf_icl.jobs.checks import check_evaluation
from hf_icl.jobs.evaluate_config import EvaluateConfig
from hf_icl.models import load_model
from hf_icl.multiple_choice import predictions, score_lm_eval_task
from hf_icl.render import TextRenderer
from hf_icl.scoring import score_queries
from hf_icl.tasks import load_task

SHOTS = [0, 2, 4]


@pytest.fixture(scope="module")
def sharp_llama():
    """Tiny random Llama whose LM head is scaled so choices differ by real margins."""
    model, tokenizer = load_model("tiny-random-llama")
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model, tokenizer


def lm_eval_run(model, tokenizer, folder, task: str, shots: int) -> tuple[list[dict], dict]:
    """lm-eval itself on an exported folder: its logged samples (by doc_id) and metrics."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    result = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8),
        tasks=[task],
        num_fewshot=shots,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
        log_samples=True,
        verbosity="ERROR",
    )
    samples = sorted(result["samples"][task], key=lambda s: s["doc_id"])
    return samples, result["results"][task]


def test_round_trip_gives_hf_icl_numbers(tmp_path, capsys):
    out = tmp_path / "exported"
    assert (
        main(
            [
                "export",
                "lm-eval",
                "sentiment",
                "--out",
                str(out),
                "--set",
                "num_queries=8",
                "--set",
                "shots=4",
            ]
        )
        == 0
    )
    assert "lm_eval run --include_path" in capsys.readouterr().out
    model, tokenizer = load_model("tiny-random-llama")
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # real margins between the label words
    _, sampler = load_task("sentiment")
    episode = sampler.episode(0, 4, 8, split="test")  # what evaluate draws for seed 0
    ours = score_queries(model, TextRenderer(tokenizer).render_episode(episode), SHOTS)

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    manager = TaskManager(include_path=str(out), include_defaults=False)
    for k in SHOTS:
        result = lm_eval.simple_evaluate(
            model=lm,
            tasks=["sentiment"],
            num_fewshot=k,
            task_manager=manager,
            log_samples=True,
            verbosity="ERROR",
        )
        samples = sorted(result["samples"]["sentiment_seed0"], key=lambda s: s["doc_id"])
        theirs = np.array([[r[0][0] for r in s["resps"]] for s in samples])
        np.testing.assert_allclose(ours[k], theirs, atol=1e-4, rtol=0)
        accuracy = np.mean(ours[k].argmax(1) == episode.query_y)
        assert result["results"]["sentiment_seed0"]["acc,none"] == pytest.approx(accuracy)


def test_numeric_family_is_refused(tmp_path, capsys):
    assert main(["export", "lm-eval", "gmm", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("hf-icl: error:") == 1 and "Traceback" not in err
    assert "family 'gaussian_mixture' cannot be exported to lm-eval" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "ref, sets, names",
    [
        ("DIR/mc_sum.yaml", [], ["mc_sum"]),
        (
            "{lm_eval: DIR/mc_group.yaml}",
            ["demos.selection=fixed", "demos.fixed=[5,0,7,2]"],
            ["mc_sum", "mc_words"],
        ),
    ],
)
def test_lm_eval_task_round_trip(tmp_path, lm_eval_task_dir, sharp_llama, capsys, ref, sets, names):
    """An lm-eval task (include:, !function hooks, a description, per-document multi-token
    choices; its first_n, or a fixed list for a group) exported and run by lm-eval as is: the
    log-likelihoods and predictions hf-icl's evaluate scores for the same demonstrations."""
    ref = ref.replace("DIR", str(lm_eval_task_dir))
    out = tmp_path / "exported"
    argv = ["export", "lm-eval", ref, "--out", str(out), "--set", "num_queries=6"]
    argv += ["--set", "shots=4", *(a for s in sets for a in ("--set", s))]
    assert main(argv) == 0
    assert f"(group {'mc_group' if len(names) > 1 else names[0]})" in capsys.readouterr().out
    queries = [
        json.loads(x) for x in (out / "mc_sum_seed0_queries.jsonl").read_text().split("\n")[:-1]
    ]
    assert [q["id"] for q in queries] == list(range(6))

    entry = yaml.safe_load(ref) if ref.startswith("{") else {"lm_eval": ref}
    if sets:
        entry["demos"] = {"selection": "fixed", "fixed": [5, 0, 7, 2]}
    cfg = {"job": "evaluate", "models": ["tiny-random-llama"], "tasks": [entry]}
    cfg |= {"shots": SHOTS, "num_queries": 6, "num_seeds": 1}
    runs = check_evaluation(from_dict(EvaluateConfig, cfg))
    assert [t.name for t in runs] == names
    model, tokenizer = sharp_llama
    for run in runs:
        source = run.lm_eval
        ours = score_lm_eval_task(
            model, tokenizer, source.task, source.docs, SHOTS, source.selection_for(0)
        )
        for k in SHOTS:
            samples, metrics = lm_eval_run(model, tokenizer, out, f"{run.name}_seed0", k)
            correct = []
            for doc, score, sample in zip(source.docs, ours[k], samples):
                theirs = np.array([r[0][0] for r in sample["resps"]])[: len(doc.choices)]
                np.testing.assert_allclose(score.loglikelihoods, theirs, atol=1e-4, rtol=0)
                correct.append(predictions(score, doc.choices)[0] == doc.gold)
            assert metrics["acc,none"] == pytest.approx(np.mean(correct))


def test_lm_eval_per_document_demos_are_refused(tmp_path, lm_eval_task_dir, capsys):
    """mc_words draws each document its own demonstrations (lm-eval's random sampler): one
    line, exit 2, nothing written."""
    out = tmp_path / "x"
    ref = f"{{lm_eval: mc_words, include_path: {lm_eval_task_dir}}}"
    assert main(["export", "lm-eval", ref, "--out", str(out), "--set", "shots=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("hf-icl: error:") == 1 and "Traceback" not in err
    assert "lm-eval task 'mc_words': demonstrations differ between documents" in err
    assert not out.exists()
