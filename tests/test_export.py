"""`hf-icl export lm-eval`: lm-eval runs the exported task as is and gets hf-icl's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_icl.cli import main
from hf_icl.models import load_model
from hf_icl.render import TextRenderer
from hf_icl.scoring import score_queries
from hf_icl.tasks import load_task

SHOTS = [0, 2, 4]


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
