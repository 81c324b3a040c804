"""The results folder every job writes: resolved config first, lock, append-only samples, and
final files written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from hf_icl.errors import HfIclError


def config_hash(resolved: dict) -> str:
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_out(config_path: str | Path, resolved: dict) -> Path:
    return Path("runs") / f"{Path(config_path).stem}-{config_hash(resolved)}"


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """One job's output folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def prepare(self, resolved: dict, overwrite: bool) -> None:
        """Create the folder (or check it belongs to the same config) and write config.yaml."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise HfIclError(f"output folder {self.path}: not writable ({err.strerror})") from None
        config_file = self.file("config.yaml")
        text = yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True)
        if config_file.exists() and not overwrite:
            existing = yaml.safe_load(config_file.read_text(encoding="utf-8"))
            if existing != yaml.safe_load(text):
                raise HfIclError(f"output folder {self.path} holds a run with a different config; "
                                 "pass --overwrite to replace it or --out to choose another folder")
        elif overwrite:
            for name in ("samples.jsonl", "metrics.jsonl", "results.json", "report.md"):
                self.file(name).unlink(missing_ok=True)
            for name in ("checkpoints", "model", "runs"):  # a train run would resume from these
                shutil.rmtree(self.file(name), ignore_errors=True)
        atomic_write(config_file, text)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Refuse a second job on the same folder; take over a lock whose process is gone."""
        lock = self.file(".lock")
        host = socket.gethostname()
        if lock.exists():
            try:
                owner = json.loads(lock.read_text())
            except (OSError, json.JSONDecodeError):
                owner = {}
            if owner.get("host") == host and not _pid_alive(int(owner.get("pid", 0))):
                warnings.warn(f"{lock}: taking over a stale lock of process {owner.get('pid')}",
                              stacklevel=2)
            elif owner:
                raise HfIclError(f"output folder {self.path} is in use by process {owner.get('pid')} "
                                 f"on {owner.get('host')}; wait for it or remove {lock} if it died")
        atomic_write(lock, json.dumps({"pid": os.getpid(), "host": host}))
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    def read_jsonl(self, name: str) -> list[dict]:
        """Read an append-only log, ignoring a torn last line from a crash."""
        path = self.file(name)
        if not path.exists():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return rows

    def truncate_torn(self, name: str) -> None:
        """Drop a partially written last line so appends start on a clean line."""
        path = self.file(name)
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            atomic_write(path, data[: data.rfind(b"\n") + 1])

    def append_jsonl(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Append whole lines in one write and flush, so a unit is either in the log or not."""
        payload = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        with open(self.file(name), "a", encoding="utf-8") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())

    def write_jsonl(self, name: str, rows: list[dict[str, Any]]) -> None:
        """Replace a log with these rows (temp + rename)."""
        atomic_write(self.file(name), "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

    def write_json(self, name: str, data: Any) -> None:
        atomic_write(self.file(name), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.file(name), text)
