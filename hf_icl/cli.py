"""`hf-icl` command line: one shape for every job (see README)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from hf_icl.errors import HfIclError, unknown_name


def _add_job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="run config (YAML path or built-in name)")
    p.add_argument("--out", help="results folder (default: runs/<config>-<hash>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. models.0.dtype=bfloat16 (repeatable)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a results folder that holds a different config",
    )
    _add_quiet(p)
    _add_push(p, "train: push model/ (the weights or adapter) when the run finishes")


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (hf-icl's, and the Hugging Face libraries' own)",
    )


def _add_push(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help=f"{what}; checked (repo id, token, Hub reachable) before any work",
    )
    p.add_argument("--private", action="store_true", help="with --push-to-hub: a private repo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-icl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list built-in model aliases and whether each is installed")
    c = sub.add_parser(
        "configs",
        help="list the built-in tasks, run configs and accelerate configs with their paths",
    )
    c.add_argument(
        "--path",
        metavar="NAME",
        help="print only this config's path (e.g. for "
        "`accelerate launch --config_file $(hf-icl configs --path ddp_2proc)`)",
    )
    b = sub.add_parser("build", help="build a task's episodes as an HF DatasetDict")
    b.add_argument("task", help="built-in task name or task YAML path")
    b.add_argument("--out", help="output folder (default: datasets/<task>)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_quiet(b)
    _add_push(b, "push the built dataset folder")
    e = sub.add_parser("export", help="write a task as lm-evaluation-harness task YAMLs + data")
    e.add_argument("format", choices=["lm-eval"], help="what to export to")
    e.add_argument("task", help="built-in task name or task YAML path")
    e.add_argument("--out", required=True, help="output folder (new or empty)")
    e.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="num_seeds, num_queries, shots, or a task parameter",
    )
    p = sub.add_parser(
        "push",
        help="push a finished train run's model/ or a built dataset "
        "folder to the Hub (e.g. after a failed --push-to-hub)",
    )
    p.add_argument("path", help="train run folder (its model/ is pushed) or `hf-icl build` output")
    p.add_argument("repo_id", help="Hub repo id, NAME or ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    from hf_icl.jobs.registry import JOBS

    for job in JOBS:
        _add_job_args(sub.add_parser(job, help=f"run a {job} config"))
    _add_job_args(sub.add_parser("run", help="run a config, dispatching on its `job:` field"))
    return parser


def cmd_models() -> None:
    from hf_icl.models import list_aliases

    print(f"{'alias':<20} {'installed':<10} description")
    for alias, desc, installed in list_aliases():
        print(f"{alias:<20} {'yes' if installed else 'no':<10} {desc}")
    print("\nAny Hub id (e.g. HuggingFaceTB/SmolLM2-135M), local folder or .gguf file also works.")


BUILTIN_KINDS = ("tasks", "eval_configs", "accelerate_configs")


def cmd_configs(args: argparse.Namespace) -> None:
    from hf_icl.resources import builtin_dir, builtin_names

    paths = {
        (kind, name): builtin_dir(kind) / f"{name}.yaml"
        for kind in BUILTIN_KINDS
        for name in builtin_names(kind)
    }
    if args.path:
        found = [p for (_, name), p in paths.items() if name == args.path]
        if not found:
            raise unknown_name("config", args.path, sorted({n for _, n in paths}))
        print(found[0])
        return
    for (kind, name), path in paths.items():
        print(f"{kind:<20} {name:<28} {path}")


def cmd_job(args: argparse.Namespace) -> None:
    from hf_icl.jobs.runner import run_config
    from hf_icl.runtime import JobOptions

    private_needs_push(args)
    run_config(
        args.config,
        job=None if args.command == "run" else args.command,
        overrides=args.set,
        out=args.out,
        overwrite=args.overwrite,
        options=JobOptions(
            progress=not args.quiet, push_to_hub=args.push_to_hub, private=args.private
        ),
    )


def private_needs_push(args: argparse.Namespace) -> None:
    if args.private and not args.push_to_hub:
        raise HfIclError("--private applies with --push-to-hub REPO_ID")


def check_push_args(args: argparse.Namespace) -> None:
    """A requested push is checked before any work (a bad repo id must not cost a build)."""
    from hf_icl.hub import check_push

    private_needs_push(args)
    if args.push_to_hub:
        check_push(args.push_to_hub)


def cmd_build(args: argparse.Namespace) -> None:
    from hf_icl.build import cmd_build as build

    check_push_args(args)
    build(args)


def cmd_push(args: argparse.Namespace) -> None:
    from hf_icl.hub import check_push, find_artifact, push

    path = Path(args.path)
    find_artifact(path)  # nothing to push: say so before asking the Hub
    check_push(args.repo_id, where="push")
    print(f"pushed to {push(path, args.repo_id, args.private)}")


def quiet_libraries() -> None:
    """--quiet also silences the Hugging Face libraries' bars (e.g. "Loading weights")."""
    # Each library reads its variable when first imported; switch off those already imported.
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


def cmd_export(args: argparse.Namespace) -> None:
    from hf_icl.export import cmd_export as export

    export(args)


COMMANDS = {
    "models": lambda args: cmd_models(),
    "configs": cmd_configs,
    "build": cmd_build,
    "push": cmd_push,
    "export": cmd_export,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # peft imports bitsandbytes, whose CPU backend warns on import that an optional 4-bit
    # kernel package is missing, in every job; it only changes 4-bit (QLoRA) speed.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    if getattr(args, "quiet", False):
        quiet_libraries()
    try:
        COMMANDS.get(args.command, cmd_job)(args)
    except HfIclError as err:
        print(f"hf-icl: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hf-icl: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
