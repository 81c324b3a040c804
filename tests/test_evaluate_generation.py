"""The evaluate job with `scoring: {method: generate}` and chat prompts, end to end on a tiny model."""

import json

import pytest
import yaml

from hf_icl.cli import main

CONFIG = {
    "job": "evaluate",
    "models": ["tiny-random-llama"],
    "shots": [0, 2],
    "num_seeds": 2,
    "num_queries": 3,
    "bootstrap": 20,
    "scoring": {"method": "generate", "max_new_tokens": 3},
    "tasks": [
        "sentiment",
        {"name": "linear_regression", "dim": 2, "as": "linreg"},
        {
            "name": "sentiment",
            "as": "sentiment_chat",
            "render": {"chat_template": True, "system": "Answer with one word."},
        },
        {"name": "sentiment", "as": "sentiment_ll", "scoring": {"method": "loglikelihood"}},
    ],
}


def run(tmp_path, data, *extra):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return main(["evaluate", str(path), "--out", str(tmp_path / "o"), "--quiet", *extra])


def test_generation_rows_and_summary(tmp_path):
    assert run(tmp_path, CONFIG) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples.jsonl").read_text().splitlines()]
    by_task = {
        t: [r for r in rows if r["task"] == t]
        for t in ("sentiment", "linreg", "sentiment_chat", "sentiment_ll")
    }
    assert all(len(v) == 2 * 2 * 3 for v in by_task.values())
    for r in by_task["sentiment"] + by_task["sentiment_chat"]:
        assert {"output", "filtered"} <= set(r) and r["pred"] in (-1, 0, 1)
    assert all(isinstance(r["pred"], float) and "parsed" in r for r in by_task["linreg"])
    assert all("scores" in r and "output" not in r for r in by_task["sentiment_ll"])
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    metrics = {(s["task"], s["metric"]) for s in results["summary"]}
    assert {("linreg", "nse"), ("linreg", "unparsed"), ("sentiment_chat", "accuracy")} <= metrics
    unparsed = [s for s in results["summary"] if s["metric"] == "unparsed"]
    assert all(s["count"] == round(s["mean"] * s["n"]) for s in unparsed)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("scoring.max_new_tokens=0", "scoring.max_new_tokens: must be ≥ 1, got 0"),
        (
            "tasks.0={name: sentiment, scoring: {filters: [{function: regex, regex_pattern: '('}]}}",
            "tasks.0.scoring.filters.0.regex_pattern",
        ),
        ("scoring.max_new_tokens=5000", "context window"),
    ],
)
def test_bad_generation_settings_are_one_line_errors(tmp_path, capsys, setting, message):
    data = {**CONFIG, "shots": [0, 8], "tasks": ["sentiment"]}
    assert run(tmp_path, data, "--set", setting) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("hf-icl: error:")
    assert not (tmp_path / "o").exists()
