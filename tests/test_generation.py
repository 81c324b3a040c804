"""Generation from the cached demo prefix equals generation from each full prompt."""

import copy

import numpy as np
import pytest
import torch

from hf_icl.attention import disable_momentum, enable_momentum
from hf_icl.errors import HfIclError
from hf_icl.generation import _query, generate_queries, plan_batches, prefill_chunks
from hf_icl.render import RenderOptions, TextRenderer
from hf_icl.render.generation import render_generation
from hf_icl.tasks import load_task

SHOTS = [0, 1, 3]


def peaked(model, scale: float = 40.0):
    """A copy whose LM head is scaled: random tiny models have near-uniform logits, so greedy
    tokens would hinge on float noise; scaled logits give clear winners to compare."""
    model = copy.deepcopy(model)
    head = model.get_output_embeddings()
    new = torch.nn.Linear(head.in_features, head.out_features, bias=False)
    new.weight.data = head.weight.detach().clone() * scale
    model.set_output_embeddings(new)
    return model


def sentiment_prompts(tok, options=None, queries=4):
    episode = load_task("sentiment")[1].episode(0, max(SHOTS), queries)
    return render_generation(TextRenderer(tok, options), episode)


def full_prompt(prompts, k, q):
    query = prompts.query_ids[q] if k else prompts.query_ids_alone[q]
    return prompts.prefix_ids[: prompts.boundaries[k]] + query


def check_against_full_prompts(
    model, tok, prompts, max_new_tokens=6, until=(), batch_size=3, prefill_tokens=4096
):
    fast = generate_queries(
        model,
        tok,
        prompts,
        SHOTS,
        until=list(until),
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        record=True,
        prefill_tokens=prefill_tokens,
    )
    for k in SHOTS:
        for q, gen in enumerate(fast[k]):
            ids = full_prompt(prompts, k, q)
            with torch.no_grad():
                logits = model(torch.tensor([ids + gen.tokens[:-1]])).logits[0, len(ids) - 1 :]
            forced = logits.float().log_softmax(-1).numpy()
            assert np.abs(forced - gen.logprobs).max() <= 1e-4, (k, q)
            reference = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=len(gen.tokens),
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )[0, len(ids) :].tolist()
            for step, (mine, theirs) in enumerate(zip(gen.tokens, reference)):
                top2 = np.sort(gen.logprobs[step])[-2:]
                if top2[1] - top2[0] <= 1e-3:
                    break  # a near tie: later tokens may legitimately differ
                assert mine == theirs, (k, q, step)
    return fast


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma3"])
def test_cached_prefix_generation_equals_full_prompts(fixture, request):
    model, tok = request.getfixturevalue(fixture)
    prompts = sentiment_prompts(tok)
    if fixture == "tiny_gemma3":
        assert prompts.boundaries[max(SHOTS)] > 4 * model.config.sliding_window
    check_against_full_prompts(peaked(model), tok, prompts)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gemma3"])
def test_one_batch_of_all_shot_counts_prefilled_in_chunks_equals_full_prompts(fixture, request):
    """Every prompt of every shot count decodes in one batch, its queries encoded a few rows at
    a time (chunks of different widths, joined for decoding)."""
    model, tok = request.getfixturevalue(fixture)
    prompts = sentiment_prompts(tok, queries=5)
    (batch,) = plan_batches(prompts, SHOTS, batch_size=64)
    assert {k for k, _ in batch} == set(SHOTS)
    lengths = [len(_query(prompts, k, q)) for k, q in batch]
    assert lengths == sorted(lengths) and len(set(lengths)) > 1
    chunks = prefill_chunks(lengths, 40)
    assert len({max(lengths[r] for r in rows) for rows in chunks}) > 1
    check_against_full_prompts(peaked(model), tok, prompts, batch_size=64, prefill_tokens=40)
    assert model.config._attn_implementation == "sdpa"  # the model's own attention again


def test_batches_follow_shot_counts_then_length_and_chunks_fit_the_token_budget(tokenizer):
    prompts = sentiment_prompts(tokenizer, queries=4)
    batches = plan_batches(prompts, [3, 0, 1], batch_size=5)
    assert [len(b) for b in batches] == [5, 5, 2]
    assert [k for k, _ in batches[0]].count(0) == 4  # shot counts in order, the tail joins
    assert sorted(p for b in batches for p in b) == [(k, q) for k in (0, 1, 3) for q in range(4)]
    for batch in batches:
        lengths = [len(_query(prompts, k, q)) for k, q in batch]
        assert lengths == sorted(lengths)
    assert prefill_chunks([3, 3, 4, 9, 9], 12) == [[0, 1, 2], [3], [4]]
    assert prefill_chunks([20], 12) == [[0]]  # a row longer than the budget still gets a chunk


def test_momentum_models_are_refused_and_keep_their_attention(tiny_llama):
    model, tok = tiny_llama
    enable_momentum(model, 0.1)
    try:
        name = model.config._attn_implementation
        with pytest.raises(HfIclError, match="momentum attention or attention capture"):
            generate_queries(model, tok, sentiment_prompts(tok), [1], until=[], max_new_tokens=2)
        assert model.config._attn_implementation == name
    finally:
        disable_momentum(model)
    assert model.config._attn_implementation == "sdpa"


def test_chat_generation_equals_full_prompts(tiny_llama):
    model, tok = tiny_llama
    prompts = sentiment_prompts(tok, RenderOptions(chat_template=True, system="Answer briefly."))
    assert prompts.until == []
    check_against_full_prompts(peaked(model), tok, prompts)


def test_stop_strings_end_each_query_and_are_cut(tiny_llama):
    model, tok = tiny_llama
    model = peaked(model)
    prompts = sentiment_prompts(tok)
    free = generate_queries(model, tok, prompts, [1], until=[], max_new_tokens=8)[1]
    stop = tok.decode(free[0].tokens[2:3])  # what query 0 writes third
    stopped = generate_queries(model, tok, prompts, [1], until=[stop], max_new_tokens=8)[1]
    assert len(stopped[0].tokens) <= 3 and stop not in stopped[0].text
    assert stopped[0].text == free[0].text.split(stop)[0]
    for before, after in zip(free, stopped):  # the others: same tokens up to where they stop
        assert before.tokens[: len(after.tokens)] == after.tokens


def test_bad_generation_settings_are_one_line_errors(tiny_llama):
    model, tok = tiny_llama
    prompts = sentiment_prompts(tok)
    with pytest.raises(HfIclError, match="max_new_tokens must be ≥ 1"):
        generate_queries(model, tok, prompts, [0], until=[], max_new_tokens=0)
    with pytest.raises(HfIclError, match="context window"):
        generate_queries(model, tok, prompts, [3], until=[], max_new_tokens=5000)


@pytest.mark.real_model
def test_smollm2_generations_equal_full_prompt_greedy_decoding(smollm2):
    model, tok = smollm2
    prompts = sentiment_prompts(tok, queries=3)
    fast = generate_queries(model, tok, prompts, [0, 3], until=["\n\n"], max_new_tokens=8)
    for k in (0, 3):
        for q, gen in enumerate(fast[k]):
            ids = full_prompt(prompts, k, q)
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=8,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            text = tok.decode(out[0, len(ids) :], skip_special_tokens=True).split("\n\n")[0]
            assert gen.text == text, (k, q)
