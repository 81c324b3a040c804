"""Shared job plumbing: validate the config, prepare and lock the results folder, run, summarise."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from hf_icl.config import from_dict, to_dict
from hf_icl.errors import HfIclError
from hf_icl.results import RunFolder, default_out


def _summary_table(results: dict) -> str:
    lines = []
    rows = [s for s in results["summary"] if s["metric"] in ("accuracy", "nse")]
    for (model, task, metric) in dict.fromkeys((s["model"], s["task"], s["metric"]) for s in rows):
        items = sorted((s for s in rows if (s["model"], s["task"], s["metric"]) == (model, task, metric)),
                       key=lambda s: s["shots"])
        curve = "  ".join(f"{s['shots']}:{s['mean']:.3f}" for s in items)
        lines.append(f"{model:<22} {task:<22} {metric:<9} {curve}")
    return "\n".join(lines)


def make_shard():
    """One process, or this process's rank when started by `accelerate launch` / torchrun."""
    from hf_icl.jobs.evaluate import Shard

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard()
    import torch
    from accelerate import PartialState

    # On CPU, accelerate needs cpu=True to start gloo (its --cpu flag starts one process only).
    state = PartialState(cpu=not torch.cuda.is_available())
    return Shard(state.process_index, state.num_processes, state.wait_for_everyone)


def _agree(shard, error: HfIclError | None) -> None:
    """Every process learns whether the main process could set up the folder."""
    if shard.world > 1:
        from accelerate.utils import broadcast_object_list

        message = [str(error) if error else None]
        broadcast_object_list(message, from_process=0)
        if message[0] and error is None:
            raise HfIclError(message[0])
    if error:
        raise error


def run_job(job: str, data: dict, path: Path, *, out: str | None, overwrite: bool,
            progress: bool = True) -> dict | None:
    from hf_icl.jobs.evaluate import evaluate
    from hf_icl.jobs.evaluate_config import EvaluateConfig

    config = from_dict(EvaluateConfig, data, source=str(path))
    resolved = to_dict(config)
    folder = RunFolder(out or default_out(path, resolved))
    shard = make_shard()
    with ExitStack() as stack:
        error = None
        if shard.rank == 0:
            try:
                folder.prepare(resolved, overwrite)
                stack.enter_context(folder.lock())
            except HfIclError as err:
                error = err
        _agree(shard, error)
        results = evaluate(config, folder, progress=progress, shard=shard)
    if results is not None:
        print(_summary_table(results))
        print(f"\nresults: {folder.path}/ (results.json, samples.jsonl, report.md, curve.png)")
    return results
