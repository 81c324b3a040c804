import json
import os

import pytest

from hf_icl.errors import HfIclError
from hf_icl.results import MARKER, RunFolder, atomic_write, config_hash, default_out


def test_default_out_is_named_by_config_and_hash():
    resolved = {"job": "evaluate", "shots": [0, 1]}
    out = default_out("eval_configs/quickstart.yaml", resolved)
    assert out.parent.name == "runs" and out.name == f"quickstart-{config_hash(resolved)}"
    assert config_hash(resolved) != config_hash({**resolved, "shots": [0]})


def claim(folder: RunFolder, resolved: dict, overwrite: bool = False) -> None:
    with folder.claim("evaluate", resolved, overwrite):
        pass


def test_claim_refuses_a_different_config_unless_overwrite(tmp_path):
    folder = RunFolder(tmp_path / "run")
    claim(folder, {"a": 1})
    claim(folder, {"a": 1})  # same config: resume
    with pytest.raises(HfIclError, match="holds a run with a different config; pass --overwrite"):
        claim(folder, {"a": 2})
    with folder.claim("evaluate", {"a": 1}, False):
        folder.append_jsonl("samples.jsonl", [{"x": 1}])
    (tmp_path / "run" / "notes.txt").write_text("mine")
    claim(folder, {"a": 2}, overwrite=True)
    assert not folder.file("samples.jsonl").exists()
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # not the run's: kept
    marker = json.loads((tmp_path / "run" / MARKER).read_text())
    assert marker["config_hash"] == config_hash({"a": 2}) and marker["created"] == ["config.yaml"]


def test_marker_lists_what_the_run_created(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.claim("train", {"a": 1}, False):
        folder.write_json("results.json", {})
        folder.file("checkpoints").mkdir()
        (folder.file("checkpoints") / "step-1").mkdir()
    marker = json.loads((tmp_path / "run" / MARKER).read_text())
    assert marker["job"] == "train"
    assert marker["created"] == ["config.yaml", "results.json", "checkpoints"]
    claim(folder, {"a": 1}, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [MARKER, "config.yaml"]


def test_lock_refuses_live_owner_and_takes_over_stale_lock(tmp_path):
    folder = RunFolder(tmp_path)
    with folder.lock():
        with pytest.raises(HfIclError, match=f"in use by process {os.getpid()}"):
            with folder.lock():
                pass
    assert not folder.file(".lock").exists()
    import socket

    folder.file(".lock").write_text(
        json.dumps({"pid": 2**22 + 12345, "host": socket.gethostname()})
    )
    with pytest.warns(UserWarning, match="taking over a stale lock"):
        with folder.lock():
            pass


def test_torn_last_line_is_ignored_and_atomic_write_leaves_no_temp(tmp_path):
    folder = RunFolder(tmp_path)
    folder.append_jsonl("samples.jsonl", [{"i": 0}, {"i": 1}])
    with open(folder.file("samples.jsonl"), "a") as fh:
        fh.write('{"i": 2')
    assert [r["i"] for r in folder.read_jsonl("samples.jsonl")] == [0, 1]
    atomic_write(tmp_path / "x.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.jsonl", "x.json"]


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/hf_icl_cannot_write_here"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = str(tmp_path / "ro" / "run")
    with pytest.raises(HfIclError, match="not writable"):
        claim(RunFolder(target), {})


def test_result_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", "{}")
        os.umask(0o077)
        atomic_write(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
