"""Scoring per-query demonstrations equals scoring every prompt alone from scratch."""

from __future__ import annotations

import numpy as np
import pytest
from test_scoring import naive_scores

from hf_icl.demo_scoring import chains, score_plan
from hf_icl.demos import DemoOptions, SelectionContext, demo_pool, plan_demos
from hf_icl.render import RenderOptions, TextRenderer
from hf_icl.tasks import load_task

SHOTS = [0, 1, 2, 4]


def sentiment_plan(options: DemoOptions, queries: int = 3, seed: int = 0, shots=SHOTS):
    _, sampler = load_task("sentiment")
    episode = sampler.episode(seed, max(shots), queries)
    ctx = SelectionContext(
        "sentiment", demo_pool(sampler, episode), episode, max(shots), seed, options
    )
    return plan_demos(ctx, shots)


def check_plan(model, tok, plan, render=None, pack_tokens=160, shots=SHOTS, tol=1e-4):
    renderer = TextRenderer(tok, render)
    fast = score_plan(
        model,
        renderer,
        plan,
        shots,
        pack_tokens=pack_tokens,
        length_normalise=renderer.options.length_normalise,
    )
    for k in shots:
        for q in range(plan.episode.num_queries):
            episode = plan.episode_for(plan.rows(q, k), [q])
            candidates = renderer.render_episode(episode).candidates
            ref = naive_scores(
                model, tok, renderer, episode, k, 0, candidates, renderer.options.length_normalise
            )
            assert np.abs(fast[k][q] - ref).max() <= tol, (k, q)
    return fast


def test_chains_group_prompts_that_extend_one_another():
    assert chains({0: [], 1: [5], 2: [5, 3], 4: [5, 3, 1, 2]}) == [([5, 3, 1, 2], [0, 1, 2, 4])]
    assert chains({1: [5], 2: [3, 5], 4: [1, 2, 3, 5]}) == [
        ([1, 2, 3, 5], [4]),
        ([3, 5], [2]),
        ([5], [1]),
    ]


@pytest.mark.parametrize(
    "selection,order",
    [
        ("per_query_random", "as_selected"),
        ("topk", "nearest_first"),
        ("bm25", "nearest_last"),
        ("topk", "random"),
        ("first_n", "random"),
        ("balanced", "as_selected"),
    ],
)
def test_every_selection_and_order_equals_full_prompts_tiny_llama(tiny_llama, selection, order):
    check_plan(*tiny_llama, sentiment_plan(DemoOptions(selection=selection, order=order)))


def test_per_query_rows_honour_gemma3_sliding_window(tiny_gemma3):
    model, tok = tiny_gemma3
    assert model.config.sliding_window == 16
    for order in ("nearest_first", "nearest_last"):
        check_plan(
            model,
            tok,
            sentiment_plan(DemoOptions(selection="topk", order=order), seed=1),
            pack_tokens=400,
        )


def test_multi_token_labels_and_calibration(tiny_llama):
    model, tok = tiny_llama
    plan = sentiment_plan(DemoOptions(selection="bm25", order="nearest_last"), queries=2)
    plan.episode.label_words = [" extraordinarily", " unremarkable"]
    check_plan(model, tok, plan, RenderOptions(length_normalise=True))
    renderer = TextRenderer(tok)
    plain = score_plan(model, renderer, plan, [0, 2])
    calibrated = score_plan(model, renderer, plan, [0, 2], calibrate=True)
    for q in range(2):
        episode = plan.episode_for(plan.rows(q, 2), [q])
        episode.query_x = [episode.meta["content_free"]]
        rendered = renderer.render_episode(episode)
        cf = naive_scores(model, tok, renderer, episode, 2, 0, rendered.candidates)
        expected = plain[2][q] - (cf - np.logaddexp.reduce(cf))
        assert np.allclose(calibrated[2][q], expected, atol=1e-4)


@pytest.mark.real_model
def test_per_query_scoring_equals_full_prompts_smollm2(smollm2):
    plan = sentiment_plan(
        DemoOptions(selection="topk", order="nearest_last"), queries=2, shots=[0, 4]
    )
    check_plan(*smollm2, plan, pack_tokens=768, shots=[0, 4])
