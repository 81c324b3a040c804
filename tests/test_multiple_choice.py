"""Multiple-choice lm-eval tasks: log-likelihoods and predictions equal lm-eval's own, run here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_icl.lm_eval_tasks import DemoSelection, LmEvalEncoder, load_lm_eval_tasks, mc_documents
from hf_icl.models import load_model
from hf_icl.multiple_choice import (
    lm_eval_requests,
    predictions,
    score_choices,
    score_lm_eval_task,
    unconditional_scores,
)

SHOTS = [0, 2, 5]
LIMIT = 10


@pytest.fixture(scope="module")
def sharp_llama():
    """Tiny random Llama whose LM head is scaled so choices differ by real margins."""
    model, tokenizer = load_model("tiny-random-llama")
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model, tokenizer


def lm_eval_samples(
    model, tokenizer, folder, task: str, shots: int, limit: int, batch_size: int = 4
) -> list[dict]:
    """lm-eval's logged samples for ``task`` at ``shots`` (its default few-shot seed)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[task],
        num_fewshot=shots,
        limit=limit,
        task_manager=manager,
        log_samples=True,
        verbosity="ERROR",
    )
    return sorted(out["samples"][task], key=lambda s: s["doc_id"])


def assert_same_as_lm_eval(ours, samples, docs, unconditional=None) -> None:
    for q, (doc, score, sample) in enumerate(zip(docs, ours, samples)):
        assert sample["doc_id"] == doc.doc_id
        n = len(doc.choices)
        every = np.array([r[0][0] for r in sample["resps"]])
        theirs = every[:n]
        np.testing.assert_allclose(score.loglikelihoods, theirs, atol=1e-4, rtol=0)
        assert score.greedy == [bool(r[0][1]) for r in sample["resps"][:n]]
        if "acc_mutual_info" in sample:  # lm-eval scored each choice after an empty context too
            prior = unconditional[q].loglikelihoods
            np.testing.assert_allclose(prior, every[n:], atol=1e-4, rtol=0)
            gain = np.sort(theirs - every[n:])[-2:]
            if gain[1] - gain[0] > 1e-3:
                pred = int(np.argmax(np.array(score.loglikelihoods) - prior))
                assert float(pred == doc.gold) == sample["acc_mutual_info"]
        pred, pred_norm = predictions(score, doc.choices)
        top = np.sort(theirs)[-2:]
        if top[1] - top[0] > 1e-3:
            assert float(pred == doc.gold) == sample["acc"]
        norm = np.sort(theirs / np.array([len(c) for c in doc.choices]))[-2:]
        if norm[1] - norm[0] > 1e-3:
            assert float(pred_norm == doc.gold) == sample["acc_norm"]


def test_group_matches_lm_eval(sharp_llama, lm_eval_task_dir):
    """A group of two subtasks (include:, !function process_docs and doc_to_text, Jinja, a
    description; first_n and lm-eval's random sampler; acc_mutual_info on one), per-document
    3-5 multi-token choices."""
    model, tokenizer = sharp_llama
    tasks = load_lm_eval_tasks(str(lm_eval_task_dir / "mc_group.yaml"))
    assert [(t.name, t.group, t.task_sampler) for t in tasks] == [
        ("mc_sum", "mc_group", "first_n"),
        ("mc_words", "mc_group", "default"),
    ]
    for task in tasks:
        docs = mc_documents(task, LIMIT)
        assert {len(d.choices) for d in docs} == {3, 4, 5}
        curve = score_lm_eval_task(
            model, tokenizer, task, docs, SHOTS, DemoSelection(), pack_tokens=256
        )
        prior = unconditional_scores(model, tokenizer, task, docs)
        for k in SHOTS:
            samples = lm_eval_samples(model, tokenizer, lm_eval_task_dir, task.name, k, LIMIT)
            assert len(samples) == LIMIT
            assert ("acc_mutual_info" in samples[0]) == (task.name == "mc_words")
            assert_same_as_lm_eval(curve[k], samples, docs, prior)


def test_random_demos_replayed_per_shot_count(lm_eval_task_dir, tokenizer):
    """lm-eval's default sampler: a document's 2-shot demos are not the start of its 5-shot
    demos, and each shot count replays the sampler from the seed."""
    task = load_lm_eval_tasks("mc_words", str(lm_eval_task_dir))[0]
    docs = mc_documents(task, 4)
    encoder = LmEvalEncoder(tokenizer)
    selection = DemoSelection("lm_eval_default", seed=1234)
    two = lm_eval_requests(task, docs, 2, selection, encoder)
    five = lm_eval_requests(task, docs, 5, selection, encoder)
    assert two[0].context != five[0].context[: len(two[0].context)]
    assert lm_eval_requests(task, docs, 2, selection, encoder)[3].context == two[3].context
    other = lm_eval_requests(task, docs, 2, DemoSelection("lm_eval_default", seed=7), encoder)
    assert other[0].context != two[0].context


def test_fixed_demos_share_one_prefix(sharp_llama, lm_eval_task_dir):
    """A fixed demo list: every prompt reuses the cached prefix and scores like a plain forward."""
    model, tokenizer = sharp_llama
    task = load_lm_eval_tasks("mc_sum", str(lm_eval_task_dir))[0]
    docs = mc_documents(task, 6)
    requests = lm_eval_requests(
        task, docs, 3, DemoSelection("fixed", indices=(5, 0, 9)), LmEvalEncoder(tokenizer)
    )
    prefix = requests[0].context[:-1]
    scores = score_choices(model, requests, prefix=prefix, pack_tokens=128)
    with torch.no_grad():
        for req, score in zip(requests, scores):
            for cont, ll in zip(req.continuations, score.loglikelihoods):
                logits = model(torch.tensor([req.context + cont[:-1]])).logits[0, -len(cont) :]
                ref = logits.float().log_softmax(-1).gather(1, torch.tensor(cont)[:, None]).sum()
                assert abs(float(ref) - ll) < 1e-4


def test_sliding_window_model_scores_like_plain_forward(tiny_gemma3, lm_eval_task_dir):
    """Gemma 3 with a 16-token window: prompts far longer than it, prefix cache reused."""
    model, tokenizer = tiny_gemma3
    task = load_lm_eval_tasks("mc_sum", str(lm_eval_task_dir))[0]
    docs = mc_documents(task, 3)
    curve = score_lm_eval_task(
        model, tokenizer, task, docs, [0, 4], DemoSelection(), pack_tokens=128
    )
    requests = lm_eval_requests(task, docs, 4, DemoSelection(), LmEvalEncoder(tokenizer))
    assert len(requests[0].context) > 64
    with torch.no_grad():
        for req, score in zip(requests, curve[4]):
            cont = req.continuations[0]
            logits = model(torch.tensor([req.context + cont[:-1]])).logits[0, -len(cont) :]
            ref = logits.float().log_softmax(-1).gather(1, torch.tensor(cont)[:, None]).sum()
            assert abs(float(ref) - score.loglikelihoods[0]) < 1e-4


@pytest.mark.real_model
def test_smollm2_predictions_match_lm_eval(smollm2, lm_eval_task_dir):
    model, tokenizer = smollm2
    task = load_lm_eval_tasks("mc_sum", str(lm_eval_task_dir))[0]
    docs = mc_documents(task, 8)
    curve = score_lm_eval_task(model, tokenizer, task, docs, [0, 3], DemoSelection())
    for k in (0, 3):
        samples = lm_eval_samples(model, tokenizer, lm_eval_task_dir, "mc_sum", k, 8, 8)
        for doc, score, sample in zip(docs, curve[k], samples):
            theirs = [r[0][0] for r in sample["resps"]]
            assert predictions(score, doc.choices)[0] == int(np.argmax(theirs))
            np.testing.assert_allclose(score.loglikelihoods, theirs, atol=1e-3, rtol=0)
