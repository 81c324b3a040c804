"""Shared job plumbing: validate everything, then claim (lock, mark) the results folder, run,
summarise. Nothing is written before every check has passed, so a mistake leaves no folder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hf_icl.config import apply_overrides, from_dict, read_yaml, to_dict
from hf_icl.errors import HfIclError, unknown_name
from hf_icl.jobs.registry import JOBS, check_config, job_config, job_module
from hf_icl.resources import find_config
from hf_icl.results import RunFolder, default_out
from hf_icl.runtime import JobOptions, make_shard


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


@contextmanager
def claimed(folder: RunFolder, job: str, resolved: dict, overwrite: bool, shard) -> Iterator[None]:
    """The main process claims ``folder`` (lock, marker, config.yaml) for the body; every process
    learns whether that worked (so a refused folder stops all of them with the same error)."""
    with ExitStack() as stack:
        error = None
        if shard.rank == 0:
            try:
                stack.enter_context(folder.claim(job, resolved, overwrite))
            except HfIclError as err:
                error = err
        _agree(shard, error)
        yield


def run_job(
    job: str, data: dict, path: Path, *, out: str | None, overwrite: bool, options: JobOptions
) -> dict | None:
    """Validate the config, the folder and the job's inputs, then claim the folder and run."""
    config = from_dict(job_config(job, where=f"{path}: job"), data, source=str(path))
    resolved = to_dict(config)
    folder = RunFolder(out or default_out(path, resolved))
    options.shard = make_shard()
    error = None
    if options.shard.rank == 0:
        try:
            folder.check(resolved, overwrite)  # a refused folder fails before the slow checks
        except HfIclError as err:
            error = err
    _agree(options.shard, error)
    check_config(job, config, str(path))  # cheap checks first: a typo costs no torch import
    module = job_module(job)
    plan = module.prepare(config, str(path), options)
    with claimed(folder, job, resolved, overwrite, options.shard):
        results = module.run(config, folder, options, plan)
    if results is not None:
        print(module.summary(results))
        print(f"\nresults: {folder.path}/")
    return results


def run_config(
    config: str | Path,
    *,
    job: str | None = None,
    overrides: Sequence[str] = (),
    out: str | None = None,
    overwrite: bool = False,
    options: JobOptions | None = None,
) -> dict | None:
    """Run a config file (or built-in config name) as `hf-icl JOB` does; `job=None` dispatches
    on the config's `job:` field, as `hf-icl run`. Returns the job's results."""
    options = options or JobOptions()
    path = find_config(config)
    data = apply_overrides(read_yaml(path), list(overrides))
    job = job or data.get("job", "evaluate")
    if job not in JOBS:
        raise unknown_name("job", job, JOBS, where=f"{path}: job")
    if data.get("job", job) != job:
        raise HfIclError(
            f"{path}: job is {data['job']!r}; run it with `hf-icl {data['job']}` or `hf-icl run`"
        )
    data["job"] = job
    if options.push_to_hub:
        if job != "train":
            raise HfIclError(f"--push-to-hub applies to train jobs; {path} is a {job} job")
        from hf_icl.hub import check_push

        check_push(options.push_to_hub)  # a bad repo id must not cost a training
    return run_job(job, data, path, out=out, overwrite=overwrite, options=options)


def run(
    config: str | Path,
    *,
    job: str | None = None,
    overrides: Sequence[str] = (),
    out: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict | None:
    """`hf_icl.run`: a config file or built-in name run exactly as `hf-icl run` (or
    `hf-icl JOB`) does — same checks, results folder and resume — returning the results."""
    return run_config(
        config,
        job=job,
        overrides=overrides,
        out=out,
        overwrite=overwrite,
        options=JobOptions(progress=progress),
    )
