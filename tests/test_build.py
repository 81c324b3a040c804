import pytest

from hf_icl.build import BuildConfig, build_dataset
from hf_icl.cli import main
from hf_icl.errors import HfIclError
from hf_icl.hub import push

SMALL = BuildConfig(num_train_episodes=12, num_test_episodes=4, num_demos=6, num_queries=2)


@pytest.mark.parametrize("task", ["sentiment", "digits_projected", "gmm", "linear_regression"])
def test_build_round_trips_every_family(tmp_path, task):
    import datasets

    out = build_dataset(task, SMALL, tmp_path / task)
    from_hub_layout = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    for loaded in (datasets.load_from_disk(str(out)), from_hub_layout):
        assert loaded["train"].num_rows == 12 and loaded["test"].num_rows == 4
        row = loaded["train"][0]
        assert len(row["demo_x"]) == 6 and len(row["query_y"]) == 2
    card = (out / "README.md").read_text()
    assert f"# {task}" in card and "## Generating config" in card and "seed: `0`" in card


def test_build_is_byte_identical_for_the_same_config(tmp_path):
    a = build_dataset("digits_projected", SMALL, tmp_path / "a")
    b = build_dataset("digits_projected", SMALL, tmp_path / "b")
    arrows = sorted(p.relative_to(a) for p in a.rglob("*.arrow"))
    assert arrows and all((a / p).read_bytes() == (b / p).read_bytes() for p in arrows)
    c = build_dataset(
        "digits_projected", BuildConfig(**{**SMALL.__dict__, "task": {"seed": 1}}), tmp_path / "c"
    )
    assert (a / arrows[0]).read_bytes() != (c / arrows[0]).read_bytes()


def test_bad_build_input_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "bad"
    assert (
        main(["build", "gmm", "--out", str(out), "--set", "subspace_dim=50", "--set", "dim=10"])
        == 2
    )
    assert "subspace_dim" in capsys.readouterr().err and not out.exists()
    assert main(["build", "sentiment", "--out", str(out), "--set", "num_demos=5000"]) == 2
    assert "5000 demonstrations requested" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["build", "gmn", "--out", str(out)]) == 2
    assert "did you mean 'gmm'" in capsys.readouterr().err
    with pytest.raises(HfIclError, match="not writable"):
        build_dataset("gmm", SMALL, __import__("pathlib").Path("/proc/hf_icl_no/x"))


def test_push_uploads_the_built_folder_with_its_card(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw))
    )
    monkeypatch.setattr(
        HfApi,
        "upload_folder",
        lambda self, **kw: calls.append(
            ("upload_folder", kw["repo_id"], kw["repo_type"], kw["folder_path"])
        ),
    )
    out = build_dataset("gmm", SMALL, tmp_path / "gmm")
    assert (
        push(out, "me/gmm-episodes", private=True)
        == "https://huggingface.co/datasets/me/gmm-episodes"
    )
    assert calls == [
        (
            "create_repo",
            "me/gmm-episodes",
            {"repo_type": "dataset", "private": True, "exist_ok": True},
        ),
        ("upload_folder", "me/gmm-episodes", "dataset", str(out)),
    ]
    content = (out / "README.md").read_text()  # the card travels as the folder's README.md
    assert "family: `gaussian_mixture`" in content and "subspace_dim: 2" in content


def test_built_folder_honours_the_umask(tmp_path):
    import os
    import stat

    from hf_icl.cli import main

    old = os.umask(0o022)
    try:
        assert (
            main(
                [
                    "build",
                    "gmm",
                    "--out",
                    str(tmp_path / "ds"),
                    "--set",
                    "num_train_episodes=2",
                    "--set",
                    "num_test_episodes=2",
                ]
            )
            == 0
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ds").stat().st_mode) == 0o755
