"""A local lm-eval generate_until YAML: hf-icl's generations from the cached demo prefix equal
lm-eval's own greedy generations (lm-eval run through its API on the same model)."""

import json

import pytest

from hf_icl.errors import HfIclError
from hf_icl.generation import generate_queries
from hf_icl.lm_eval_generation import (
    generation_documents,
    generation_settings,
    lm_eval_generation_prompts,
)
from hf_icl.lm_eval_tasks import DemoSelection, load_lm_eval_tasks
from hf_icl.render import TextRenderer

pytest.importorskip("lm_eval")

ROWS = [
    ("Ana had 12 apples and got 5 more. How many apples now?", "17"),
    ("Ben had 30 coins and gave away 8. How many coins are left?", "22"),
    ("Chloe had 7 books and got 9 more. How many books now?", "16"),
    ("David had 25 shells and gave away 11. How many shells are left?", "14"),
    ("Emma had 3 pencils and got 40 more. How many pencils now?", "43"),
    ("Farid had 19 marbles and gave away 4. How many marbles are left?", "15"),
    ("Grace had 8 cookies and got 8 more. How many cookies now?", "16"),
    ("Hugo had 41 stickers and gave away 20. How many stickers are left?", "21"),
]
SHOTS = [0, 3]


@pytest.fixture(scope="module")
def task_yaml(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gen_task")
    for split, rows in (("train", ROWS[:3]), ("test", ROWS[3:])):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows)
        )
    path = folder / "gen_arith.yaml"
    path.write_text(f"""task: gen_arith
dataset_path: json
dataset_kwargs:
  data_files: {{train: {folder}/train.jsonl, test: {folder}/test.jsonl}}
training_split: train
fewshot_split: train
test_split: test
fewshot_config: {{sampler: first_n}}
description: "Answer with a number.\\n\\n"
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
generation_kwargs: {{until: ["\\n\\n", "Question:"], max_gen_toks: 6, do_sample: false}}
metric_list: [{{metric: exact_match, aggregation: mean, higher_is_better: true}}]
metadata: {{version: 1.0}}
""")
    return path


def lm_eval_outputs(model, tok, path, k):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=["gen_arith"],
        num_fewshot=k,
        log_samples=True,
        task_manager=TaskManager(include_path=str(path.parent)),
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )
    samples = sorted(out["samples"]["gen_arith"], key=lambda s: s["doc_id"])
    return [s["resps"][0][0] for s in samples], [s["arguments"][0][0] for s in samples]


def test_generations_equal_lm_eval_greedy_decoding(tiny_llama, task_yaml):
    from test_generation import peaked

    model, tok = tiny_llama
    model = peaked(model)
    (task,) = load_lm_eval_tasks(str(task_yaml))
    docs = generation_documents(task)
    prompts = lm_eval_generation_prompts(
        TextRenderer(tok), task, docs, max(SHOTS), DemoSelection("first_n")
    )
    until, new = generation_settings(task)
    assert (until, new) == (["\n\n", "Question:"], 6)
    ours = generate_queries(model, tok, prompts, SHOTS, until=until, max_new_tokens=new)
    for k in SHOTS:
        outputs, contexts = lm_eval_outputs(model, tok, task_yaml, k)
        for q, context in enumerate(contexts):
            query = prompts.query_ids[q] if k else prompts.query_ids_alone[q]
            assert prompts.prefix_ids[: prompts.boundaries[k]] + query == tok(context).input_ids, (
                k,
                q,
            )
        assert [g.text for g in ours[k]] == outputs, k
    assert [d.target for d in docs] == [a for _, a in ROWS[3:]]


def test_random_demos_per_document_are_refused(tiny_llama, task_yaml):
    (task,) = load_lm_eval_tasks(str(task_yaml))
    with pytest.raises(HfIclError, match="one demo list for every document"):
        lm_eval_generation_prompts(
            TextRenderer(tiny_llama[1]),
            task,
            generation_documents(task),
            2,
            DemoSelection("lm_eval_default"),
        )


def test_evaluate_scores_a_generate_until_entry_by_exact_match(tmp_path, task_yaml):
    import yaml

    from hf_icl.cli import main

    config = {
        "job": "evaluate",
        "models": ["tiny-random-llama"],
        "shots": [0, 2],
        "num_queries": 4,
        "bootstrap": 20,
        "tasks": [{"lm_eval": str(task_yaml)}],
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["evaluate", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4 and all(r["gold"] == a for r, (_, a) in zip(rows, ROWS[3:7] * 2))
    assert all(r["filtered"] == r["output"].strip() == r["pred"] for r in rows)
    summary = json.loads((tmp_path / "o" / "results.json").read_text())["summary"]
    assert {s["metric"] for s in summary} == {"exact_match"}
