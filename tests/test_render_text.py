import numpy as np
import pytest

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.models import resolve_source
from hf_icl.render import RenderOptions, TextRenderer
from hf_icl.tasks import load_task


def _decode(tok, ids):
    return tok.decode(ids)


def test_prefix_boundaries_match_whole_prompt_tokenization(tokenizer):
    _, sampler = load_task("sentiment")
    episode = sampler.episode(0, 6, 5)
    renderer = TextRenderer(tokenizer)
    r = renderer.render_episode(episode)
    demos = renderer.demo_texts(episode)
    assert demos[0] == episode.demo_x[0] + episode.label_words[episode.demo_y[0]]
    for k in range(7):
        for q in range(5):
            text = "".join(d + "\n\n" for d in demos[:k]) + episode.query_x[q]
            whole = tokenizer(text).input_ids
            query = r.query_ids[q] if k else r.query_ids_alone[q]
            assert r.prefix_ids[: r.boundaries[k]] + query == whole


def test_label_tokens_decode_to_the_label_words(tokenizer):
    _, sampler = load_task("topic")
    r = TextRenderer(tokenizer).render_episode(sampler.episode(0, 2, 2))
    assert [_decode(tokenizer, c) for c in r.candidates] == [
        " world",
        " sports",
        " business",
        " science",
    ]


def test_numeric_episode_renders_integers_and_letter_labels(tokenizer):
    ep = Episode(
        task="t",
        family="projected",
        task_id=0,
        demo_x=np.array([[0.14, -1.26], [2.0, 0.0]]),
        demo_y=np.array([1, 0]),
        query_x=np.array([[0.5, 0.5]]),
        query_y=np.array([1]),
        num_classes=2,
    )
    renderer = TextRenderer(tokenizer, RenderOptions(precision=1))
    assert renderer.demo_texts(ep) == ["Input: 1 -13\nOutput: B", "Input: 20 0\nOutput: A"]
    seq = renderer.render_sequence(ep)
    for pos, y in zip(seq.label_positions, ep.demo_y):
        assert seq.ids[pos + 1] == seq.candidates[y][0]
    assert [_decode(tokenizer, c) for c in seq.candidates] == [" A", " B"]


def test_regression_targets_use_single_token_digit_bins(tokenizer):
    ep = Episode(
        task="t",
        family="regression",
        task_id=0,
        demo_x=np.zeros((3, 2)),
        demo_y=np.array([-2.9, 0.1, 2.99]),
        query_x=np.zeros((1, 2)),
        query_y=np.array([0.0]),
        num_classes=None,
    )
    renderer = TextRenderer(tokenizer)
    r = renderer.render_episode(ep)
    assert all(len(c) == 1 for c in r.candidates)  # the shared space token moved to the query
    assert [_decode(tokenizer, c) for c in r.candidates] == [str(d) for d in range(10)]
    assert list(renderer.label_index(ep, ep.demo_y)) == [0, 5, 9]
    assert np.allclose(renderer.bin_centres()[[0, 9]], [-2.7, 2.7])


def test_multi_token_labels_are_supported_and_indistinct_ones_rejected(tokenizer):
    ep = Episode(
        task="t",
        family="text_classification",
        task_id=0,
        demo_x=["a:", "b:"],
        demo_y=np.array([0, 1]),
        query_x=["c:"],
        query_y=np.array([0]),
        num_classes=2,
        label_words=[" extraordinarily", " unremarkable"],
    )
    r = TextRenderer(tokenizer).render_episode(ep)
    assert any(len(c) > 1 for c in r.candidates)
    assert [_decode(tokenizer, c) for c in r.candidates] == [" extraordinarily", " unremarkable"]


@pytest.mark.real_model
def test_gemma3_tokenizer_positions():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_source("gemma3-270m"))
    _, sampler = load_task("sentiment")
    episode = sampler.episode(1, 4, 3)
    renderer = TextRenderer(tok)
    assert renderer.special_prefix == [tok.bos_token_id]
    r = renderer.render_episode(episode)
    demos = renderer.demo_texts(episode)
    for k in (0, 2, 4):
        text = "".join(d + "\n\n" for d in demos[:k]) + episode.query_x[0]
        query = r.query_ids[0] if k else r.query_ids_alone[0]
        assert r.prefix_ids[: r.boundaries[k]] + query == tok(text).input_ids
    assert [tok.decode(c) for c in r.candidates] == [" negative", " positive"]


def test_straddling_token_is_an_error(tokenizer):
    renderer = TextRenderer(tokenizer)
    with pytest.raises(HfIclError, match="merges text across a prompt boundary"):
        renderer.split_tokens("Sentiment", [2])
