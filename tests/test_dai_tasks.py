"""Dai et al.'s six tasks load from the Hub when it is reachable; here their definitions are
checked offline by rendering a fixture row exactly as the research notes' templates say."""

import numpy as np
import pytest

from hf_icl.config import from_dict
from hf_icl.episode import Episode
from hf_icl.render import RenderOptions, TextRenderer
from hf_icl.tasks import load_task

FIXTURES = {
    "sst2": (
        {"sentence": "a gripping tale", "label": 1},
        "Sentence: a gripping tale Label:",
        [" Negative", " Positive"],
    ),
    "sst5": (
        {"text": "flat and dull", "label": 1},
        "Sentence: flat and dull Label:",
        [" terrible", " bad", " neutral", " good", " great"],
    ),
    "mr": (
        {"text": "a charming film", "label": 1},
        "Review: a charming film Sentiment:",
        [" Negative", " Positive"],
    ),
    "subj": (
        {"text": "the film opens in 1952", "label": 0},
        "Input: the film opens in 1952 Type:",
        [" objective", " subjective"],
    ),
    "agnews": (
        {"text": "Stocks rally", "label": 2},
        "Classify the news articles into the categories of World, Sports, Business, and "
        "Technology. Article: Stocks rally Answer:",
        [" World", " Sports", " Business", " Technology"],
    ),
    "cb": (
        {"premise": "It rained all day", "hypothesis": "the ground was wet", "label": 0},
        "It rained all day Question: the ground was wet. True, False, or Neither? Answer:",
        [" True", " False", " Neither"],
    ),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_dai_task_renders_fixture_row_exactly(name, tokenizer):

    row, expected, words = FIXTURES[name]
    task, sampler = load_task(name)
    assert sampler.params.dataset and sampler.params.label_words == words
    assert sampler.format_input(row) == expected
    sampler._check_rows([row], ["fixture row 0"], "fixture")
    episode = Episode(
        task=name,
        family=task.family,
        task_id=0,
        demo_x=[expected],
        demo_y=np.array([row["label"]]),
        query_x=[expected],
        query_y=np.array([row["label"]]),
        num_classes=len(words),
        label_words=words,
    )
    options = from_dict(RenderOptions, task.render)
    rendered = TextRenderer(tokenizer, options).render_episode(episode)
    assert tokenizer.decode(rendered.prefix_ids) == expected + words[row["label"]] + "\n"
    assert [tokenizer.decode(c) for c in rendered.candidates] == words
