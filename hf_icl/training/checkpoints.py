"""Training checkpoints that are complete by construction.

``accelerator.save_state`` writes ``checkpoints/step-N.tmp``; then the main process writes the
completion marker ``hf_icl_checkpoint.json`` (the step and every file with its size and
SHA-256), syncs it all to disk and renames the folder to ``step-N``. A rerun checks the marker
and the files it lists, newest first, and resumes from the first checkpoint that passes; each one
skipped is named on stderr with the reason. A ``step-N`` without a marker (a checkpoint written
before hf-icl recorded markers, or a folder damaged by hand) cannot be told apart from a
half-copied one, so it is skipped too: training then resumes from an older checkpoint or from
step 0, which costs time but reaches the same weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from hf_icl.errors import HfIclError
from hf_icl.results import atomic_write

STEP_PREFIX = "step-"
MARKER = "hf_icl_checkpoint.json"


def step_of(path: Path) -> int:
    return int(path.name.removeprefix(STEP_PREFIX))


def _digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk, so a renamed checkpoint survives a power loss too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER)


def write_marker(folder: Path, step: int) -> None:
    """List every file of a finished ``save_state`` (all processes' files are on disk)."""
    files = {}
    for path in _files(folder):
        _fsync(path)
        files[path.relative_to(folder).as_posix()] = {
            "bytes": path.stat().st_size,
            "sha256": _digest(path),
        }
    atomic_write(folder / MARKER, json.dumps({"step": step, "files": files}, indent=1) + "\n")
    _fsync(folder / MARKER)
    _fsync(folder)


def problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or None when its marker and files agree."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        step = int(marker["step"])
        files = {
            str(name): (int(entry["bytes"]), str(entry["sha256"]))
            for name, entry in marker["files"].items()
        }
    except FileNotFoundError:
        return f"no completion marker {MARKER} (incomplete, or written by an older hf-icl)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return f"unreadable completion marker {MARKER} ({type(err).__name__})"
    if step != step_of(folder):
        return f"its marker is for step {step}"
    for name, (size, sha256) in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the marker lists {size}"
        if _digest(path) != sha256:
            return f"{name} does not match its SHA-256 in the marker"
    return None


def warn(message: str) -> None:
    print(f"hf-icl: warning: {message}", file=sys.stderr, flush=True)


class Checkpoints:
    """``checkpoints/step-N`` folders: written under a temporary name, the newest M kept."""

    def __init__(self, folder: Path, keep: int) -> None:
        self.folder = folder
        self.keep = keep

    def named(self) -> list[Path]:
        """``step-N`` folders by step (complete or not; ``step-N.tmp`` never counts)."""
        found = [
            p
            for p in self.folder.glob(f"{STEP_PREFIX}*")
            if p.is_dir() and p.name.removeprefix(STEP_PREFIX).isdigit()
        ]
        return sorted(found, key=step_of)

    def save(self, accelerator, step: int) -> None:
        final = self.folder / f"{STEP_PREFIX}{step}"
        tmp = final.with_name(final.name + ".tmp")
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_marker(tmp, step)
            shutil.rmtree(final, ignore_errors=True)  # a damaged one skipped on resume
            tmp.rename(final)
            _fsync(self.folder)
            self._prune(step)
        accelerator.wait_for_everyone()

    def _prune(self, step: int) -> None:
        """Keep the newest ``keep`` up to ``step``; later ones are damaged leftovers that the
        run replaces when it gets there."""
        for old in [p for p in self.named() if step_of(p) <= step][: -self.keep]:
            shutil.rmtree(old)

    def newest_complete(self) -> Path | None:
        """The newest checkpoint that passes its check; says which newer ones were skipped."""
        skipped = []
        for path in reversed(self.named()):
            reason = problem(path)
            if reason is None:
                break
            skipped.append((path, reason))
        else:
            path = None
        target = f"resuming from {path.name}" if path else "training starts from step 0"
        for bad, reason in skipped:
            warn(f"checkpoint {bad} skipped: {reason}; {target}")
        return path


def load_newest(accelerator, checkpoints: Checkpoints) -> int:
    """Load the newest complete checkpoint (chosen by the main process for all); its step, or
    -1 when there is none."""
    chosen = [checkpoints.newest_complete() if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(chosen, from_process=0)
    if chosen[0] is None:
        return -1
    try:
        accelerator.load_state(str(chosen[0]), strict=False)
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise HfIclError(
            f"checkpoint {chosen[0]} passed its check but does not load "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); move it "
            "away to resume from an older one"
        ) from None
    return step_of(chosen[0])
