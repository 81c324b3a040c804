"""Bad input and faults around the results folder: every mistake is one line and exit 2, is found
before anything is written, and --overwrite never deletes what the run did not create."""

import json
import os
import stat

import pytest
import yaml

from hf_icl.cli import main
from hf_icl.results import MARKER, RunFolder


def write_config(tmp_path, text_task_dir, name="cfg.yaml", **changes):
    data = {
        "job": "evaluate",
        "models": ["tiny-random-llama"],
        "tasks": [str(text_task_dir / "mini.yaml")],
        "shots": [0, 1],
        "num_seeds": 1,
        "num_queries": 2,
        "bootstrap": 10,
        **changes,
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def one_error(capsys) -> str:
    """The command's stderr is exactly one `hf-icl: error:` line, no traceback."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hf-icl: error: "), err
    return lines[0]


MINI = "{dir}/mini.yaml"
CASES = {
    "unknown model alias": ({"models": ["tiny-random-lama"]}, "models.0: unknown tiny model"),
    "unknown task": ({"tasks": ["sentimnt"]}, "tasks.0: unknown task 'sentimnt'"),
    "unknown baseline": ({"baselines": ["majorty"]}, "baselines.0: unknown baseline 'majorty'"),
    "bad label words": (
        {"tasks": [MINI, {"name": MINI, "as": "m2", "label_words": [" a", " a"]}]},
        "tasks.1.label_words: duplicate label word",
    ),
    "label words the tokenizer merges with the template": (
        {"tasks": [{"name": MINI, "label_words": [":(", ":)"]}]},
        "tasks.0: the tokenizer merges text across a prompt boundary",
    ),
    "impossible subspace_dim": (
        {"tasks": [{"name": "gmm", "subspace_dim": 50}]},
        "tasks.0.subspace_dim: 50 is outside 1..dim",
    ),
    "too many shots for the pool": (
        {"shots": [0, 20]},
        "tasks.0: shots: 20 demonstrations requested but task 'mini' has 12 examples",
    ),
    "over-long template": (
        {"tasks": [{"name": MINI, "template": "word " * 2100 + "{text}:"}]},
        "tasks.0: template too long",
    ),
    "too many shots for the context window": (
        {"tasks": [{"name": MINI, "template": "word " * 400 + "{text}:"}], "shots": [0, 8]},
        "tasks.0: shots: a prompt with 8 demonstrations is",
    ),
    "bad metric": ({"metrics": ["acuracy"]}, "metrics: unknown metric 'acuracy'"),
}


@pytest.mark.parametrize("case", CASES)
def test_each_validation_error_leaves_nothing_behind(case, tmp_path, text_task_dir, capsys):
    changes, message = CASES[case]
    changes = json.loads(json.dumps(changes).replace("{dir}", str(text_task_dir)))
    path = write_config(tmp_path, text_task_dir, **changes)
    out = tmp_path / "parent" / "out"
    assert main(["evaluate", str(path), "--out", str(out), "--quiet"]) == 2
    line = one_error(capsys)
    assert f"{path}: " in line and message in line, line
    assert not (tmp_path / "parent").exists()


def test_corrected_rerun_succeeds_and_files_honour_the_umask(tmp_path, text_task_dir, capsys):
    out = tmp_path / "out"
    bad = write_config(tmp_path, text_task_dir, "bad.yaml", baselines=["majorty"])
    assert main(["evaluate", str(bad), "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    good = write_config(tmp_path, text_task_dir, "good.yaml", baselines=["majority"])
    old = os.umask(0o022)
    try:
        assert main(["evaluate", str(good), "--out", str(out), "--quiet"]) == 0
    finally:
        os.umask(old)
    for name in ("results.json", "report.md", "config.yaml", "samples.jsonl"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    marker = json.loads((out / MARKER).read_text())
    assert marker["job"] == "evaluate"
    assert {"config.yaml", "samples.jsonl", "results.json", "report.md"} <= set(marker["created"])


def test_overwrite_of_a_folder_in_use_is_refused_and_deletes_nothing(
    tmp_path, text_task_dir, capsys
):
    out = tmp_path / "out"
    path = write_config(tmp_path, text_task_dir)
    with RunFolder(out).claim("evaluate", {"job": "evaluate", "other": 1}, False):
        RunFolder(out).file("samples.jsonl").write_text('{"unit": "x"}\n')
        assert main(["evaluate", str(path), "--out", str(out), "--quiet", "--overwrite"]) == 2
        assert f"is in use by process {os.getpid()}" in one_error(capsys)
        assert (out / "samples.jsonl").read_text() == '{"unit": "x"}\n'
        assert (out / "config.yaml").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_foreign_folder_is_never_written_or_emptied(overwrite, tmp_path, text_task_dir, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    own = {"config.yaml": "job: evaluate\n", "results.json": "{}\n", "notes.txt": "keep"}
    for name, text in own.items():
        (out / name).write_text(text)
    path = write_config(tmp_path, text_task_dir)
    args = ["evaluate", str(path), "--out", str(out), "--quiet"] + (
        ["--overwrite"] if overwrite else []
    )
    assert main(args) == 2
    assert "is not an hf-icl run folder" in one_error(capsys)
    assert {p.name: p.read_text() for p in out.iterdir()} == own


def test_a_run_folder_from_before_the_marker_resumes_but_is_never_emptied(
    tmp_path, text_task_dir, capsys
):
    out = tmp_path / "out"
    path = write_config(tmp_path, text_task_dir)
    assert main(["evaluate", str(path), "--out", str(out), "--quiet"]) == 0
    (out / MARKER).unlink()
    samples = (out / "samples.jsonl").read_text()
    assert main(["evaluate", str(path), "--out", str(out), "--quiet"]) == 0  # adopted: resumes
    assert (out / "samples.jsonl").read_text() == samples
    capsys.readouterr()
    assert main(["evaluate", str(path), "--out", str(out), "--quiet", "--overwrite"]) == 2
    assert "--overwrite never empties it" in one_error(capsys)
    assert (out / "samples.jsonl").read_text() == samples


def test_overwrite_removes_only_what_the_run_created(tmp_path, text_task_dir, capsys):
    out = tmp_path / "out"
    path = write_config(tmp_path, text_task_dir)
    assert main(["evaluate", str(path), "--out", str(out), "--quiet"]) == 0
    (out / "my-notes.txt").write_text("keep")
    other = write_config(tmp_path, text_task_dir, "other.yaml", shots=[0])
    assert main(["evaluate", str(other), "--out", str(out), "--quiet"]) == 2
    assert "holds a run with a different config" in one_error(capsys)
    bad = write_config(tmp_path, text_task_dir, "bad.yaml", shots=[0], baselines=["majorty"])
    assert main(["evaluate", str(bad), "--out", str(out), "--quiet", "--overwrite"]) == 2
    one_error(capsys)
    assert (out / "results.json").exists()  # validation failed first: nothing removed
    assert main(["evaluate", str(other), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert (out / "my-notes.txt").read_text() == "keep"
    assert yaml.safe_load((out / "config.yaml").read_text())["shots"] == [0]
