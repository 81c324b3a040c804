import numpy as np
import pytest
import torch

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.render import RenderOptions, TextRenderer
from hf_icl.scoring import score_queries, score_sequences
from hf_icl.tasks import load_task

SHOTS = [0, 1, 3, 6]


def naive_scores(model, tok, renderer, episode, k, q, candidates, length_normalise=False):
    """Score one full prompt from scratch: the reference the fast path must equal."""
    demos = renderer.demo_texts(episode)[:k]
    text = "".join(d + renderer.options.delimiter for d in demos) + renderer.format_x(
        episode.query_x[q]
    )
    ids = tok(text).input_ids
    out = []
    for cand in candidates:
        with torch.no_grad():
            logp = model(torch.tensor([ids + cand])).logits[0].float().log_softmax(-1)
        lp = sum(logp[len(ids) - 1 + i, t].item() for i, t in enumerate(cand))
        out.append(lp / len(cand) if length_normalise else lp)
    return np.array(out)


def check_against_naive(model, tok, episode, options=None, tol=1e-4, pack_tokens=64, shots=SHOTS):
    renderer = TextRenderer(tok, options)
    rendered = renderer.render_episode(episode)
    fast = score_queries(
        model,
        rendered,
        shots,
        pack_tokens=pack_tokens,
        length_normalise=renderer.options.length_normalise,
    )
    for k in shots:
        for q in range(episode.num_queries):
            ref = naive_scores(
                model,
                tok,
                renderer,
                episode,
                k,
                q,
                rendered.candidates,
                renderer.options.length_normalise,
            )
            assert np.abs(fast[k][q] - ref).max() <= tol, (k, q)
    return fast


def sentiment_episode(seed=0, queries=4):
    return load_task("sentiment")[1].episode(seed, max(SHOTS), queries)


def test_kv_reuse_equals_full_prompts_tiny_llama(tiny_llama):
    check_against_naive(*tiny_llama, sentiment_episode())


def test_kv_reuse_honours_gemma3_sliding_window(tiny_gemma3):
    model, tok = tiny_gemma3
    assert model.config.sliding_window == 16
    episode = sentiment_episode(1)
    rendered = TextRenderer(tok).render_episode(episode)
    assert rendered.boundaries[max(SHOTS)] > 4 * model.config.sliding_window
    check_against_naive(model, tok, episode)


def test_multi_token_labels_and_length_normalisation(tiny_llama):
    episode = sentiment_episode(2, 3)
    episode.label_words = [" extraordinarily", " unremarkable"]
    check_against_naive(*tiny_llama, episode, RenderOptions(length_normalise=True))


def test_calibration_subtracts_content_free_log_probs(tiny_llama):
    model, tok = tiny_llama
    episode = sentiment_episode(3, 3)
    rendered = TextRenderer(tok).render_episode(episode)
    plain = score_queries(model, rendered, [0, 2])
    calibrated = score_queries(model, rendered, [0, 2], calibrate=True)
    cf = score_queries(
        model,
        rendered.__class__(
            **{
                **rendered.__dict__,
                "query_ids": [rendered.content_free_ids[0]],
                "query_ids_alone": [rendered.content_free_ids[1]],
            }
        ),
        [0, 2],
    )
    for k in (0, 2):
        log_p_cf = cf[k][0] - np.logaddexp.reduce(cf[k][0])
        assert np.allclose(calibrated[k], plain[k] - log_p_cf, atol=1e-5)


def test_sequential_scores_equal_per_position_prompts(tiny_llama):
    model, tok = tiny_llama
    ep = Episode(
        task="t",
        family="projected",
        task_id=0,
        demo_x=np.random.default_rng(0).normal(size=(5, 3)),
        demo_y=np.array([0, 1, 1, 0, 1]),
        query_x=np.zeros((0, 3)),
        query_y=np.zeros(0, dtype=np.int64),
        num_classes=2,
    )
    renderer = TextRenderer(tok)
    seq = renderer.render_sequence(ep)
    [scores] = score_sequences(model, [seq, seq][:1])
    demos = renderer.demo_texts(ep)
    for i in range(5):
        prompt = "".join(d + "\n\n" for d in demos[:i]) + renderer.format_x(ep.demo_x[i])
        with torch.no_grad():
            logp = model(torch.tensor([tok(prompt).input_ids])).logits[0, -1].log_softmax(-1)
        ref = logp[[c[0] for c in seq.candidates]].numpy()
        assert np.abs(scores[i] - ref).max() < 1e-4


def test_too_many_shots_and_too_long_prompts_are_errors(tiny_llama):
    model, tok = tiny_llama
    rendered = TextRenderer(tok).render_episode(sentiment_episode())
    with pytest.raises(HfIclError, match="7 shots requested but the episode has only 6"):
        score_queries(model, rendered, [7])
    limit = model.config.max_position_embeddings
    model.config.max_position_embeddings = 50
    try:
        with pytest.raises(HfIclError, match="exceeds the model's context window of 50 tokens"):
            score_queries(model, rendered, [6])
    finally:
        model.config.max_position_embeddings = limit


@pytest.mark.real_model
def test_kv_reuse_equals_full_prompts_smollm2(smollm2):
    fast = check_against_naive(*smollm2, sentiment_episode(0, 2), pack_tokens=768, shots=[0, 6])
    assert fast[6].shape == (2, 2)
