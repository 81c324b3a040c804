"""Chat prompts equal lm-eval's --apply_chat_template prompts token for token, and keep KV reuse."""

import json

import numpy as np
import pytest

from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.render import RenderOptions, TextRenderer
from hf_icl.render.chat import bundled_template
from hf_icl.resources import builtin_dir

pytest.importorskip("lm_eval")

TEMPLATE = "Review: {text}\nSentiment:"
WORDS = [" negative", " positive"]
SHOTS = [0, 1, 3]
SYSTEM = "Classify the sentiment of each review."


@pytest.fixture(scope="module")
def gemma_tokenizer():
    """Gemma 3's real tokenizer (from the offline GGUF); the loader adds Gemma 3's published
    chat template, which the GGUF lacks."""
    from hf_icl.models.loading import load_tokenizer

    tok = load_tokenizer("gemma3-270m")
    assert tok.chat_template == bundled_template("gemma3")
    return tok


def _rows(split: str) -> list[dict]:
    path = builtin_dir("tasks") / "data" / "sentiment" / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()[:6]]


@pytest.fixture(scope="module")
def lm_eval_task(tmp_path_factory):
    """The sentiment set as a local lm-eval multiple-choice task with first-n demonstrations."""
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("lm_eval_task")
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(split)))
    (folder / "chat_sentiment.yaml").write_text(f"""task: chat_sentiment
dataset_path: json
dataset_kwargs:
  data_files: {{train: {folder}/train.jsonl, test: {folder}/test.jsonl}}
training_split: train
fewshot_split: train
test_split: test
fewshot_config: {{sampler: first_n}}
output_type: multiple_choice
doc_to_text: "Review: {{{{text}}}}\\nSentiment:"
doc_to_choice: ["negative", "positive"]
doc_to_target: label
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
metadata: {{version: 1.0}}
""")
    return TaskManager(include_path=str(folder)).load(["chat_sentiment"])["tasks"]["chat_sentiment"]


class _LmEvalSide:
    """lm-eval's own HFLM prompt and token code, bound to a tokenizer (no model weights needed)."""

    def __init__(self, tokenizer):
        from lm_eval.models.huggingface import HFLM

        self.tokenizer, self.chat_template_args = tokenizer, {}
        self.add_bos_token, self.backend = None, "causal"
        self.prefix_token_id = (
            tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        )
        self.tok_decode = lambda ids, **kw: tokenizer.decode(ids, **kw)
        self.apply_chat_template = HFLM.apply_chat_template.__get__(self)
        self.tok_encode = HFLM.tok_encode.__get__(self)
        self._encode_pair = HFLM._encode_pair.__get__(self)


def lm_eval_tokens(task, tokenizer, doc, k, multiturn, system):
    side = _LmEvalSide(tokenizer)
    ctx = task.fewshot_context(
        doc,
        k,
        system_instruction=system,
        apply_chat_template=True,
        fewshot_as_multiturn=multiturn,
        chat_template=side.apply_chat_template,
    )
    requests = task.construct_requests(
        doc, ctx, metadata=("chat_sentiment", 0, 1), apply_chat_template=True
    )
    return [sum(side._encode_pair(*r.arguments), []) for r in requests]


def episode_of_first_rows(queries: int = 3) -> Episode:
    train, test = _rows("train"), _rows("test")[:queries]
    return Episode(
        task="chat_sentiment",
        family="text_classification",
        task_id=0,
        demo_x=[TEMPLATE.format(text=r["text"]) for r in train],
        demo_y=np.array([r["label"] for r in train]),
        query_x=[TEMPLATE.format(text=r["text"]) for r in test],
        query_y=np.array([r["label"] for r in test]),
        num_classes=2,
        label_words=WORDS,
    )


def hf_icl_tokens(rendered, k, q):
    query = rendered.query_ids[q] if k else rendered.query_ids_alone[q]
    return [rendered.prefix_ids[: rendered.boundaries[k]] + query + c for c in rendered.candidates]


def check_equal_to_lm_eval(task, tokenizer, multiturn, system):
    episode = episode_of_first_rows()
    options = RenderOptions(chat_template=True, multiturn=multiturn, system=system)
    rendered = TextRenderer(tokenizer, options).render_episode(episode)
    docs = list(task.eval_docs)
    for k in SHOTS:
        for q in range(episode.num_queries):
            assert hf_icl_tokens(rendered, k, q) == lm_eval_tokens(
                task, tokenizer, docs[q], k, multiturn, system
            ), (k, q)


@pytest.mark.parametrize("multiturn", [True, False])
@pytest.mark.parametrize("system", [None, SYSTEM])
def test_smollm2_chat_prompts_equal_lm_eval(lm_eval_task, tokenizer, multiturn, system):
    check_equal_to_lm_eval(lm_eval_task, tokenizer, multiturn, system)


@pytest.mark.parametrize("multiturn", [True, False])
@pytest.mark.parametrize("system", [None, SYSTEM])
def test_gemma3_chat_prompts_equal_lm_eval(lm_eval_task, gemma_tokenizer, multiturn, system):
    check_equal_to_lm_eval(lm_eval_task, gemma_tokenizer, multiturn, system)


def test_chat_prompt_text_is_the_templates_own(tokenizer):
    episode = episode_of_first_rows(1)
    rendered = TextRenderer(tokenizer, RenderOptions(chat_template=True)).render_episode(episode)
    text = tokenizer.decode(rendered.prefix_ids[: rendered.boundaries[1]] + rendered.query_ids[0])
    assert text.endswith(
        "<|im_start|>user\n" + episode.query_x[0] + "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert (
        "<|im_start|>assistant\nnegative<|im_end|>" in text
        or "<|im_start|>assistant\npositive<|im_end|>" in text
    )
    assert [tokenizer.decode(c) for c in rendered.candidates] == ["negative", "positive"]


def test_model_without_chat_template_is_refused(tokenizer):
    import copy

    plain = copy.copy(tokenizer)
    plain.chat_template = None
    with pytest.raises(HfIclError, match="has no chat template"):
        TextRenderer(plain, RenderOptions(chat_template=True)).render_episode(
            episode_of_first_rows(1)
        )


def test_label_word_merging_with_the_assistant_prefix_is_refused(tokenizer):
    import copy

    colon = copy.copy(tokenizer)  # a template whose generation prompt ends in ":"
    colon.chat_template = (
        "{% for m in messages %}{{ m['role'] }}:\n{{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    )
    episode = episode_of_first_rows(1)
    episode.label_words = [" :)", " :("]  # ":" + ":)" is one token
    with pytest.raises(HfIclError, match="assistant prefix"):
        TextRenderer(colon, RenderOptions(chat_template=True)).render_episode(episode)


def full_prompt_scores(model, renderer, episode, shots):
    """Cached, packed scoring equals scoring each whole chat prompt from scratch (≤1e-4)."""
    import torch

    from hf_icl.scoring import score_queries

    rendered = renderer.render_episode(episode)
    fast = score_queries(model, rendered, shots, pack_tokens=96)
    for k in shots:
        for q in range(episode.num_queries):
            ref = []
            for ids in hf_icl_tokens(rendered, k, q):
                cand = len(ids) - len(rendered.candidates[0])
                with torch.no_grad():
                    logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
                ref.append(sum(logp[cand - 1 + i, t].item() for i, t in enumerate(ids[cand:])))
            assert np.abs(fast[k][q] - np.array(ref)).max() <= 1e-4, (k, q)


def test_chat_kv_reuse_equals_per_prompt_scoring(tiny_llama, tiny_gemma3):
    assert tiny_gemma3[0].config.sliding_window == 16
    for model, tok in (tiny_llama, tiny_gemma3):
        for multiturn in (True, False):
            options = RenderOptions(chat_template=True, multiturn=multiturn, system=SYSTEM)
            full_prompt_scores(
                model, TextRenderer(tok, options), episode_of_first_rows(3), [0, 2, 5]
            )


def test_chat_sequence_reads_each_label_at_its_assistant_turn(tokenizer):
    episode = episode_of_first_rows(1)
    renderer = TextRenderer(tokenizer, RenderOptions(chat_template=True, system=SYSTEM))
    seq = renderer.render_sequence(episode)
    rendered = renderer.render_episode(episode)
    assert len(seq.label_positions) == episode.num_demos
    for i, (p, c) in enumerate(zip(seq.label_positions, episode.demo_y)):
        assert seq.ids[p + 1] == seq.candidates[c][0]
        # the context of label i is the chat prompt after i demonstrations with demo i as query
        assert tokenizer.decode(seq.ids[: p + 1]).endswith(
            episode.demo_x[i] + "<|im_end|>\n<|im_start|>assistant\n"
        )
        assert seq.ids[: rendered.boundaries[i]] == rendered.prefix_ids[: rendered.boundaries[i]]
    with pytest.raises(HfIclError, match="multiturn: true"):
        TextRenderer(tokenizer, RenderOptions(chat_template=True, multiturn=False)).render_sequence(
            episode
        )
