"""Demonstration selection and ordering: each does what it says, deterministically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_icl.demos import DemoOptions, SelectionContext, check_options, demo_pool, plan_demos
from hf_icl.demos import model_states as states
from hf_icl.demos.dpp import greedy_map
from hf_icl.demos.retrieval import bm25_scores
from hf_icl.episode import DemoPool, Episode
from hf_icl.errors import HfIclError
from hf_icl.models import ModelSpec
from hf_icl.tasks import load_task

POOL = [
    "the cat sat on the mat",
    "dogs bark at night",
    "stock markets fell sharply",
    "the cat chased a mouse",
    "football season starts soon",
    "markets rally on rate cut",
    "a dog and a cat played",
    "the team won the final",
]
LABELS = np.array([0, 0, 1, 0, 2, 1, 0, 2])


def context(
    options: DemoOptions,
    queries,
    shots: int,
    *,
    shares=False,
    query_ids=None,
    seed=0,
    pool=None,
) -> SelectionContext:
    x = list(POOL) if pool is None else pool
    y = LABELS.copy() if pool is None else np.zeros(len(pool), np.int64)
    pool = DemoPool(x=x, y=y, ids=list(range(len(x))), shares_queries=shares)
    ids = query_ids if query_ids is not None else list(range(100, 100 + len(queries)))
    episode = Episode(
        task="toy",
        family="text_classification",
        task_id=0,
        demo_x=[],
        demo_y=np.zeros(0, np.int64),
        query_x=queries,
        query_y=np.zeros(len(queries), np.int64),
        num_classes=3,
        demo_ids=[],
        query_ids=ids,
    )
    return SelectionContext("toy", pool, episode, shots, seed, options)


def test_first_n_takes_pool_rows_in_order():
    plan = plan_demos(context(DemoOptions(selection="first_n"), ["q"], 3), [0, 1, 3])
    assert plan.shared and plan.rows(0, 3) == [0, 1, 2] and plan.rows(0, 1) == [0]
    assert plan.prefix_consistent()


def test_first_n_skips_queries_when_pool_and_queries_share_rows():
    ctx = context(DemoOptions(selection="first_n"), ["a", "b"], 3, shares=True, query_ids=[0, 2])
    assert plan_demos(ctx, [3]).rows(0, 3) == [1, 3, 4]


def test_balanced_counts_at_every_k_and_label_order():
    plan = plan_demos(
        context(DemoOptions(selection="balanced", label_order=[2, 1, 0]), ["q"], 6), [1, 2, 3, 6]
    )
    labels = LABELS[plan.rows(0, 6)]
    assert list(labels) == [2, 1, 0, 2, 1, 0]
    for k in (1, 2, 3, 6):
        counts = np.bincount(LABELS[plan.rows(0, k)], minlength=3)
        assert counts.max() - counts.min() <= 1
    with pytest.raises(
        HfIclError, match="balanced: 8 shots need 3 examples of class 1 but .* has 2"
    ):
        plan_demos(context(DemoOptions(selection="balanced"), ["q"], 8), [8])


def test_fixed_ids_in_order_and_bad_ids():
    plan = plan_demos(context(DemoOptions(selection="fixed", fixed=[5, 1, 7]), ["q"], 3), [2, 3])
    assert plan.rows(0, 3) == [5, 1, 7] and plan.demo_ids(0, 2) == [5, 1]
    with pytest.raises(HfIclError, match="index 8 is out of range; .* rows 0..7"):
        plan_demos(context(DemoOptions(selection="fixed", fixed=[8]), ["q"], 1), [1])
    with pytest.raises(HfIclError, match="index 1 is listed twice"):
        plan_demos(context(DemoOptions(selection="fixed", fixed=[1, 1]), ["q"], 2), [2])
    with pytest.raises(HfIclError, match="row 1 is also a query"):
        plan_demos(
            context(
                DemoOptions(selection="fixed", fixed=[1, 2]), ["q"], 2, shares=True, query_ids=[1]
            ),
            [2],
        )


def test_fixed_ids_from_a_file(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("3\n0\n\n6\n")
    plan = plan_demos(context(DemoOptions(selection="fixed", fixed=str(path)), ["q"], 3), [3])
    assert plan.rows(0, 3) == [3, 0, 6]


def test_per_query_random_is_deterministic_prefix_consistent_and_never_self():
    options = DemoOptions(selection="per_query_random")
    ctx = context(options, ["a", "b", "c"], 5, shares=True, query_ids=[0, 1, 2])
    first, again = plan_demos(ctx, [1, 3, 5]), plan_demos(ctx, [1, 3, 5])
    assert first.prompts == again.prompts and first.prefix_consistent() and not first.shared
    assert len({tuple(first.rows(q, 5)) for q in range(3)}) > 1
    for q in range(3):
        assert q not in first.rows(q, 5)
    other = plan_demos(
        context(options, ["a", "b", "c"], 5, shares=True, query_ids=[0, 1, 2], seed=1), [5]
    )
    assert other.prompts != first.prompts


def test_bm25_returns_true_nearest_and_never_self():
    scores = bm25_scores(POOL, ["the cat and the mouse"])
    assert int(np.argmax(scores[0])) == 3
    plan = plan_demos(
        context(DemoOptions(selection="bm25"), ["the cat and the mouse", "markets fell"], 2), [1, 2]
    )
    assert plan.rows(0, 1) == [3] and plan.rows(1, 2)[0] in (2, 5)
    # the pool's own row 3 as a query (same split): never retrieved for itself
    self_plan = plan_demos(
        context(DemoOptions(selection="bm25"), [POOL[3]], 2, shares=True, query_ids=[3]), [2]
    )
    assert 3 not in self_plan.rows(0, 2)


def test_topk_nearest_by_embedding_and_orders():
    queries = ["a kitten sat on a rug", "the striker scored in the cup match"]
    plan = plan_demos(context(DemoOptions(selection="topk"), queries, 3), [1, 3])
    assert plan.rows(0, 1) == [0] and plan.rows(1, 1)[0] in (4, 7)
    last = plan_demos(
        context(DemoOptions(selection="topk", order="nearest_last"), queries, 3), [1, 3]
    )
    assert last.rows(0, 3) == plan.rows(0, 3)[::-1] and not last.prefix_consistent()
    shuffled = plan_demos(context(DemoOptions(selection="topk", order="random"), queries, 3), [3])
    assert sorted(shuffled.rows(0, 3)) == sorted(plan.rows(0, 3))


def test_order_errors_and_unknown_names():
    with pytest.raises(HfIclError, match="nearest_last.*use selection bm25 or topk"):
        plan_demos(context(DemoOptions(selection="first_n", order="nearest_last"), ["q"], 2), [2])
    with pytest.raises(
        HfIclError, match=r"unknown demo selection 'bm26' \(did you mean 'bm25'\?\)"
    ):
        plan_demos(context(DemoOptions(selection="bm26"), ["q"], 2), [2])


def test_permutations_reorder_shared_lists_and_keep_per_query_sets():
    ctx = context(DemoOptions(selection="first_n"), ["q"], 6)
    base, permuted = plan_demos(ctx, [3, 6]), plan_demos(ctx, [3, 6], permutation=1)
    assert sorted(permuted.rows(0, 6)) == base.rows(0, 6) != permuted.rows(0, 6)
    assert permuted.prefix_consistent()
    retrieved = context(DemoOptions(selection="bm25"), ["the cat and the mouse"], 4)
    base, permuted = plan_demos(retrieved, [2, 4]), plan_demos(retrieved, [2, 4], permutation=1)
    for k in (2, 4):
        assert sorted(permuted.rows(0, k)) == sorted(base.rows(0, k))


def test_text_task_pool_and_same_split(text_task_dir):
    _, sampler = load_task(str(text_task_dir / "mini.yaml"))
    pool = demo_pool(sampler, sampler.episode(0, 2, 3))
    assert len(pool) == 12 and pool.x[0].startswith("Review: ") and not pool.shares_queries
    _, same = load_task({"name": str(text_task_dir / "mini.yaml"), "test_file": "train.jsonl"})
    assert demo_pool(same, same.episode(0, 2, 3)).shares_queries


def hand_states(model, tokenizer, texts: list[str]) -> np.ndarray:
    """Each text alone through the decoder, its final states averaged: no batch, no padding."""
    with torch.no_grad():
        return np.stack(
            [
                model.model(input_ids=torch.tensor([tokenizer(t)["input_ids"]]))
                .last_hidden_state[0]
                .mean(0)
                .double()
                .numpy()
                for t in texts
            ]
        )


def test_model_states_are_mean_pooled_and_padding_changes_nothing(tiny_llama):
    model, tokenizer = tiny_llama
    texts = [POOL[2], "a", "the team won the final after extra time and penalties"]
    batch = states.mean_pooled_states(model, tokenizer, texts)  # "a" is padded to 11 tokens
    np.testing.assert_allclose(batch, hand_states(model, tokenizer, texts), atol=1e-5)
    for text, vector in zip(texts, batch):
        alone = states.mean_pooled_states(model, tokenizer, [text])[0]
        np.testing.assert_allclose(alone, vector, atol=1e-5)
    assert np.abs(batch[0] - batch[1]).max() > 0.1  # texts do get their own vectors


def test_topk_with_model_states_equals_brute_force_cosine_search(tiny_llama):
    model, tokenizer = tiny_llama
    queries = ["a kitten sat on a rug", "the striker scored in the cup match", "shares fell"]
    ctx = context(DemoOptions(selection="topk", encoder="model"), queries, 3)
    ctx.encode = lambda texts: states.mean_pooled_states(model, tokenizer, texts)
    plan = plan_demos(ctx, [1, 3])

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    cosine = (
        unit(hand_states(model, tokenizer, queries)) @ unit(hand_states(model, tokenizer, POOL)).T
    )
    for q in range(len(queries)):
        nearest = np.argsort(-cosine[q], kind="stable")
        assert cosine[q, nearest[2]] - cosine[q, nearest[3]] > 1e-4  # no near-tie at the cut
        assert plan.rows(q, 3) == [int(i) for i in nearest[:3]]
        assert plan.rows(q, 1) == [int(nearest[0])]
    assert len({tuple(plan.rows(q, 3)) for q in range(len(queries))}) > 1


def test_model_states_embed_each_text_once_with_the_lent_model(tiny_llama, monkeypatch):
    spec = ModelSpec(spec="tiny-random-llama", name="embed-once")
    calls = []
    real = states.mean_pooled_states

    def counted(model, tokenizer, texts):
        calls.append(list(texts))
        return real(model, tokenizer, texts)

    monkeypatch.setattr(states, "mean_pooled_states", counted)
    encode = states.model_states(spec)
    with states.lend_model(spec, *tiny_llama):
        first = encode(["x y", "z", "x y"])
        again = encode(["z", "w"])
    assert calls == [["x y", "z"], ["w"]]
    np.testing.assert_array_equal(first[1], again[0])
    np.testing.assert_array_equal(first[0], first[2])


def test_encoder_model_only_for_selections_that_embed():
    check_options(DemoOptions(selection="dpp", encoder="model"), "demos")
    with pytest.raises(
        HfIclError,
        match=r"demos.encoder: 'model' applies to the selections that embed \(dpp, topk\), "
        "not to 'bm25'",
    ):
        check_options(DemoOptions(selection="bm25", encoder="model"), "demos")
    numeric = context(
        DemoOptions(selection="topk", encoder="model"), np.ones((1, 2)), 1, pool=np.eye(2)
    )
    with pytest.raises(HfIclError, match="'model' embeds text, but task 'toy' has numeric"):
        plan_demos(numeric, [1])


# Query along x; rows 0 and 1 are near-duplicates, row 2 is less near but points elsewhere.
NEAR = np.array(
    [[1, 0.1, 0], [1, 0.1, 0.001], [1, -0.4, 0.3], [0, 1, 0], [-1, 0, 0], [0.2, 0, 1]], float
)


def test_dpp_takes_one_of_two_near_duplicates_where_topk_takes_both():
    query = np.array([[1.0, 0, 0]])
    top = plan_demos(context(DemoOptions(selection="topk"), query, 2, pool=NEAR), [2])
    assert top.rows(0, 2) == [0, 1]
    plan = plan_demos(context(DemoOptions(selection="dpp"), query, 3, pool=NEAR), [1, 2, 3])
    assert plan.rows(0, 1) == [0] and plan.rows(0, 2) == [0, 2]
    assert 1 not in plan.rows(0, 3) and plan.prefix_consistent()
    near_only = DemoOptions(selection="dpp", candidates=2)  # only the duplicates to choose from
    assert plan_demos(context(near_only, query, 2, pool=NEAR), [2]).rows(0, 2) == [0, 1]
    with pytest.raises(HfIclError, match="demos.candidates: 2 candidates cannot give 3 shots"):
        plan_demos(context(near_only, query, 3, pool=NEAR), [3])


def test_greedy_map_adds_the_largest_determinant_at_each_step():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(9, 4))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    relevance = rng.uniform(0.8, 1.0, size=9)  # close: diversity decides
    kernel = relevance[:, None] * (vectors @ vectors.T) * relevance[None, :]
    order = greedy_map(kernel, 4)
    assert order[1:] != sorted(order[1:], key=lambda i: -relevance[i])  # not relevance order
    assert order == greedy_map(kernel, 6)[:4]  # incremental: k-shot sets are prefixes
    for j in range(4):
        det = {
            i: np.linalg.det(kernel[np.ix_(order[:j] + [i], order[:j] + [i])])
            for i in range(9)
            if i not in order[:j]
        }
        assert order[j] == max(det, key=det.get)
