import numpy as np
import pytest

from hf_icl.errors import ConfigError, HfIclError
from hf_icl.tasks import load_task


def test_shipped_text_tasks_load_and_draw_reproducible_episodes():
    for name, classes in (("sentiment", 2), ("topic", 4)):
        _, sampler = load_task(name)
        a, b = sampler.episode(3, 8, 20), sampler.episode(3, 8, 20)
        assert a.demo_x == b.demo_x and a.query_ids == b.query_ids
        assert a.num_classes == classes and len(a.demo_x) == 8 and len(a.query_x) == 20
        assert sampler.episode(4, 8, 20).demo_ids != a.demo_ids
        assert a.demo_x[0].startswith(("Review: ", "Article: "))


def test_label_modes(text_task_dir):
    path = str(text_task_dir / "mini.yaml")
    gold = load_task(path)[1].episode(0, 4, 4)
    assert gold.label_words == [" negative", " positive"]
    flipped = load_task({"name": path, "label_mode": "flipped"})[1].episode(0, 4, 4)
    assert flipped.label_words == [" positive", " negative"]
    assert np.array_equal(flipped.demo_y, gold.demo_y)  # gold classes stay; words change
    _, permuted = load_task({"name": path, "label_mode": "permuted"})
    seen = {tuple(permuted.episode(i, 4, 4).label_words) for i in range(20)}
    assert seen == {(" negative", " positive"), (" positive", " negative")}
    unrelated = load_task({"name": path, "label_mode": "unrelated"})[1].episode(0, 4, 4)
    assert not set(unrelated.label_words) & {" negative", " positive"}
    assert len(set(unrelated.label_words)) == 2


def test_bad_text_tasks_give_one_line_errors(text_task_dir):
    path = str(text_task_dir / "mini.yaml")
    with pytest.raises(ConfigError, match=r"label_words: duplicate label word ' a'"):
        load_task({"name": path, "label_words": [" a", " a"]})
    with pytest.raises(ConfigError, match=r"label_words: empty label word"):
        load_task({"name": path, "label_words": [" a", " "]})
    with pytest.raises(
        HfIclError, match=r"12 demonstrations requested|100 demonstrations requested"
    ):
        load_task(path)[1].episode(0, 100, 1)
    with pytest.raises(HfIclError, match=r"no label column 'lbl'; columns: text, label"):
        load_task({"name": path, "label_column": "lbl"})[1].episode(0, 2, 2)
    with pytest.raises(HfIclError, match=r"unknown task 'sentimnt' \(did you mean 'sentiment'\?\)"):
        load_task("sentimnt")


def test_numbers_are_valid_text_fields_and_rows_are_checked_on_load(text_task_dir):
    (text_task_dir / "train.jsonl").write_text(
        "".join(f'{{"text": {n}, "label": {n % 2}}}\n' for n in range(6))
    )
    _, sampler = load_task(str(text_task_dir / "mini.yaml"))
    episode = sampler.episode(0, 4, 2, "train")
    assert set(episode.demo_x + episode.query_x) <= {f"Review: {n}\nSentiment:" for n in range(6)}
    (text_task_dir / "test.jsonl").write_text(
        '{"text": "ok", "label": 0}\n{"text": {}, "label": 1}\n'
    )
    with pytest.raises(
        HfIclError,
        match=r"test.jsonl:2: field 'text' must be text or a number, "
        r"got dict \{\}$",
    ):
        load_task(str(text_task_dir / "mini.yaml"))[1].episode(0, 2, 1)
