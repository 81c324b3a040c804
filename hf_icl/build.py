"""`hf-icl build`: a task's episodes as an HF DatasetDict with a dataset card, optionally pushed.

Episodes are generated and written in batches (`Dataset.from_generator`), so pools of 2^20 tasks
never materialise; the folder is built under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hf_icl.config import apply_overrides, from_dict, option, to_dict
from hf_icl.episode import Episode
from hf_icl.errors import HfIclError
from hf_icl.hub import push
from hf_icl.results import umask_mode
from hf_icl.samplers import TaskSampler
from hf_icl.tasks import TaskDef, load_task


@dataclass
class BuildConfig:
    num_train_episodes: int = option(1000, help="episodes of the meta-train split (seen tasks)")
    num_test_episodes: int = option(200, help="episodes of the meta-test split (unseen tasks)")
    num_demos: int = option(16, help="demonstrations per episode")
    num_queries: int = option(4, help="queries per episode")
    task: dict[str, Any] = option(default_factory=dict, help="task parameter overrides")

    def __post_init__(self) -> None:
        for name in ("num_train_episodes", "num_test_episodes", "num_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be ≥ 1, got {getattr(self, name)}")
        if self.num_demos < 0:
            raise ValueError(f"num_demos: must be ≥ 0, got {self.num_demos}")


def _features(sampler: TaskSampler, example: Episode):
    import datasets

    x = (
        datasets.Value("string")
        if isinstance(example.demo_x, list)
        else datasets.Sequence(datasets.Value("float32"))
    )
    y = datasets.Value("float32") if example.is_regression else datasets.Value("int64")
    return datasets.Features(
        {
            "task_id": datasets.Value("int64"),
            "demo_x": datasets.Sequence(x),
            "demo_y": datasets.Sequence(y),
            "query_x": datasets.Sequence(x),
            "query_y": datasets.Sequence(y),
            "label_words": datasets.Sequence(datasets.Value("string")),
            "demo_ids": datasets.Sequence(datasets.Value("int64")),
            "query_ids": datasets.Sequence(datasets.Value("int64")),
        }
    )


def _row(episode: Episode) -> dict[str, Any]:
    def plain(x):
        return list(x) if isinstance(x, list) else x.tolist()

    return {
        "task_id": int(episode.task_id),
        "demo_x": plain(episode.demo_x),
        "demo_y": episode.demo_y.tolist(),
        "query_x": plain(episode.query_x),
        "query_y": episode.query_y.tolist(),
        "label_words": list(episode.label_words or []),
        "demo_ids": list(episode.demo_ids),
        "query_ids": list(episode.query_ids),
    }


def _generate(
    sampler: TaskSampler, split: str, count: int, num_demos: int, num_queries: int, batch: int = 256
):
    for first in range(0, count, batch):
        for ep in sampler.episodes(first, min(batch, count - first), num_demos, num_queries, split):
            yield _row(ep)


def dataset_card(task: TaskDef, build: BuildConfig, sampler: TaskSampler) -> str:
    """Card content derived from the generating config (so a pushed dataset documents itself)."""
    params = {k: v for k, v in task.params.items() if k != "_base_dir"}
    header = {
        "tags": ["in-context-learning", "hf-icl", task.family],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"{s}/*.arrow"} for s in ("train", "test")],
            }
        ],
    }
    return "\n".join(
        [
            "---",
            yaml.safe_dump(header, sort_keys=False).strip(),
            "---",
            "",
            f"# {task.name}",
            "",
            task.description or f"{task.family} episodes built by hf-icl.",
            "",
            "Built with `hf-icl build`. Each row is one episode: ordered demonstrations "
            "(`demo_x`, `demo_y`) and queries (`query_x`, `query_y`) of one task; `train` holds "
            "meta-training tasks, `test` unseen tasks.",
            "",
            f"- family: `{task.family}`",
            f"- seed: `{params.get('seed', 0)}`",
            f"- episodes: {build.num_train_episodes} train, {build.num_test_episodes} test; "
            f"{build.num_demos} demonstrations and {build.num_queries} queries each",
            f"- classes: {sampler.num_classes if sampler.num_classes else 'regression'}",
            "",
            "## Generating config",
            "",
            "```yaml",
            yaml.safe_dump(
                {
                    "task": task.name,
                    "family": task.family,
                    "params": params,
                    "build": {k: v for k, v in to_dict(build).items() if k != "task"},
                },
                sort_keys=False,
            ).strip(),
            "```",
            "",
            "## Citation",
            "",
            task.citation or "(none given)",
            "",
            "Load with `datasets.load_from_disk(folder)`, or `datasets.load_dataset(folder)` "
            "(its cache is keyed by the folder's name: pass `download_mode='force_redownload'` "
            "after rebuilding into a folder of the same name).",
            "",
        ]
    )


def build_dataset(task_ref: str, build: BuildConfig, out: Path) -> Path:
    """Write the DatasetDict + card to ``out`` atomically; returns ``out``."""
    import datasets

    task, sampler = load_task({"name": task_ref, **build.task} if build.task else task_ref)
    max_demos = sampler.max_demos()
    if (
        max_demos is not None
        and build.num_demos + build.num_queries > max_demos + build.num_queries
    ):
        raise HfIclError(
            f"num_demos: {build.num_demos} demonstrations requested but task "
            f"{task.name!r} has {max_demos} examples"
        )
    example = sampler.episode(0, build.num_demos, build.num_queries, "train")
    sampler.episode(0, build.num_demos, build.num_queries, "test")  # its data is checked too
    features = _features(sampler, example)
    if out.exists():
        raise HfIclError(f"output folder {out} already exists; choose another --out or remove it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        tmp.chmod(
            umask_mode(0o777)
        )  # mkdtemp gives 0700; the dataset is as shared as the umask allows
    except OSError as err:
        raise HfIclError(f"output folder {out}: not writable ({err.strerror})") from None
    try:
        with tempfile.TemporaryDirectory() as cache:
            splits = {}
            for split, count in (
                ("train", build.num_train_episodes),
                ("test", build.num_test_episodes),
            ):
                splits[split] = datasets.Dataset.from_generator(
                    _generate,
                    features=features,
                    cache_dir=cache,
                    keep_in_memory=False,
                    gen_kwargs=dict(
                        sampler=sampler,
                        split=split,
                        count=count,
                        num_demos=build.num_demos,
                        num_queries=build.num_queries,
                    ),
                )
            dd = datasets.DatasetDict(splits)
            dd.save_to_disk(str(tmp))
        (tmp / "README.md").write_text(dataset_card(task, build, sampler), encoding="utf-8")
        tmp.rename(out)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err.__cause__, HfIclError):  # datasets wraps errors raised by _generate
            raise err.__cause__ from None
        raise
    return out


def cmd_build(args: argparse.Namespace) -> None:
    data: dict[str, Any] = {}
    apply_overrides(data, args.set)
    build_keys = {"num_train_episodes", "num_test_episodes", "num_demos", "num_queries"}
    config = {k: v for k, v in data.items() if k in build_keys}
    config["task"] = {k: v for k, v in data.items() if k not in build_keys}
    build = from_dict(BuildConfig, config, source="--set")
    out = Path(args.out or Path("datasets") / Path(args.task).stem)
    build_dataset(args.task, build, out)
    print(
        f"dataset: {out}/ ({build.num_train_episodes} train, {build.num_test_episodes} test episodes)"
    )
    if args.push_to_hub:  # the folder as written: the card's data_files name its .arrow files
        print(f"pushed to {push(out, args.push_to_hub, args.private)}")
