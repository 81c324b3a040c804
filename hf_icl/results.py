"""The results folder every job writes: a run marker first, a lock, the resolved config,
append-only samples, and final files written to a temporary name and renamed, so a crash never
leaves a half-written file.

A folder is a run folder only if it holds the marker (``.hf-icl-run.json``): the job, the config
hash and every top-level file or folder the run created. ``--overwrite`` removes exactly those
entries, so a folder hf-icl did not make is never emptied.
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
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hf_icl.errors import HfIclError

MARKER = ".hf-icl-run.json"
LOCK = ".lock"
BOOKKEEPING = (MARKER, LOCK)  # hf-icl's own entries: a folder holding only these is empty


def config_hash(resolved: dict) -> str:
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_out(config_path: str | Path, resolved: dict) -> Path:
    return Path("runs") / f"{Path(config_path).stem}-{config_hash(resolved)}"


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` less the process umask: what ``open()`` would have given the file."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, then rename over the target.

    mkstemp creates the file 0600; it gets the mode a plain write would give, so results are as
    readable as the user's umask allows.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, umask_mode())
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


def _remove(path: Path) -> None:
    """Remove one entry; a symlink is unlinked, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


class RunFolder:
    """One job's output folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._marker: dict[str, Any] | None = None  # set while this process owns the folder

    def file(self, name: str) -> Path:
        """The path of ``name`` in the folder; while the run owns it, its top-level entry is
        recorded in the marker (so --overwrite can remove it later)."""
        self._record(Path(name).parts[0])
        return self.path / name

    # claiming ---------------------------------------------------------------------------------
    def _read_marker(self) -> dict[str, Any] | None:
        marker = self.path / MARKER
        if not marker.is_file():
            return None
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("created"), list):
            raise HfIclError(
                f"output folder {self.path}: its run marker {MARKER} is unreadable; "
                "choose another --out or delete the folder by hand"
            )
        return data

    def _same_config(self, resolved: dict) -> bool:
        config = self.path / "config.yaml"
        try:
            existing = yaml.safe_load(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return False
        return existing == yaml.safe_load(_config_text(resolved))

    def check(self, resolved: dict, overwrite: bool, locked: bool = False) -> dict[str, Any] | None:
        """Refuse a folder this run may not use, without writing anything.

        Returns the folder's marker (None for a new or empty folder). A folder without the marker
        is foreign and is refused, unless it holds a run of the same config written before hf-icl
        marked its run folders (adopted for resume, never emptied). ``locked``: this process
        holds the lock (so the lock is not checked).
        """
        if self.path.exists() and not self.path.is_dir():
            raise HfIclError(f"output folder {self.path} is a file; choose another --out")
        marker = self._read_marker()
        if marker is None:
            if not self.path.is_dir() or not any(
                p.name not in BOOKKEEPING for p in self.path.iterdir()
            ):
                return None
            if not self._same_config(resolved):
                raise HfIclError(
                    f"output folder {self.path} is not empty and is not an hf-icl run "
                    f"folder (no {MARKER}); choose another --out (nothing was deleted)"
                )
            marker = {
                "job": None,
                "config_hash": config_hash(resolved),
                "created": [],
                "adopted": True,
            }
        if marker.get("adopted") and overwrite:
            raise HfIclError(
                f"output folder {self.path} holds a run written before hf-icl marked "
                "its run folders; --overwrite never empties it: choose another --out "
                "or delete it by hand"
            )
        if marker.get("config_hash") != config_hash(resolved) and not overwrite:
            raise HfIclError(
                f"output folder {self.path} holds a run with a different config; "
                "pass --overwrite to replace it or --out to choose another folder"
            )
        if not locked:
            self._check_lock()
        return marker

    def _owner(self) -> dict[str, Any]:
        try:
            owner = json.loads((self.path / LOCK).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _stale(self, owner: dict[str, Any]) -> bool:
        pid = owner.get("pid")
        return (
            not owner
            or owner.get("host") == socket.gethostname()
            and isinstance(pid, int)
            and not _pid_alive(pid)
        )

    def _check_lock(self) -> None:
        if not (self.path / LOCK).exists():
            return
        owner = self._owner()
        if not self._stale(owner):
            raise HfIclError(
                f"output folder {self.path} is in use by process {owner.get('pid')} "
                f"on {owner.get('host')}; wait for it or remove {self.path / LOCK} "
                "if it died"
            )

    @contextmanager
    def claim(self, job: str, resolved: dict, overwrite: bool) -> Iterator[None]:
        """Lock the folder, then (re)start or resume the run in it: with ``overwrite`` only the
        entries the marker lists are removed. The lock is held until the body ends."""
        self.check(resolved, overwrite)
        made = not self.path.exists()
        locked = False
        with ExitStack() as stack:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                stack.enter_context(self.lock())
                locked = True
                self._start(job, resolved, overwrite, self.check(resolved, overwrite, locked=True))
            except BaseException as err:
                self._marker = None
                if made and locked:  # a folder this call made holds only what it wrote
                    for name in (MARKER, "config.yaml"):
                        (self.path / name).unlink(missing_ok=True)
                stack.close()
                if made:
                    with suppress(OSError):
                        self.path.rmdir()
                if isinstance(err, OSError):
                    raise HfIclError(
                        f"output folder {self.path}: not writable ({err.strerror or err})"
                    ) from None
                raise
            try:
                yield
            finally:
                self._marker = None

    def _start(self, job: str, resolved: dict, overwrite: bool, marker: dict | None) -> None:
        """Under the lock: remove the old run's entries if asked, write the marker, then config."""
        created: list[str] = []
        if marker is not None and overwrite:
            for name in marker["created"]:
                if (
                    isinstance(name, str)
                    and name not in BOOKKEEPING
                    and "/" not in name
                    and name not in ("", ".", "..")
                ):
                    _remove(self.path / name)
        elif marker is not None:
            created = [n for n in marker["created"] if isinstance(n, str)]
        self._marker = {"job": job, "config_hash": config_hash(resolved), "created": created}
        if marker is not None and marker.get("adopted") and not overwrite:
            self._marker["adopted"] = True
        self._save_marker()
        atomic_write(self.file("config.yaml"), _config_text(resolved))

    def _record(self, name: str) -> None:
        if self._marker is None or name in BOOKKEEPING or name in self._marker["created"]:
            return
        self._marker["created"].append(name)
        self._save_marker()

    def _save_marker(self) -> None:
        atomic_write(self.path / MARKER, json.dumps(self._marker, indent=1) + "\n")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Refuse a second job on the same folder; take over a lock whose process is gone.

        The lock file appears atomically with its content (a hard link of a finished temporary
        file), so two jobs starting together cannot both take it.
        """
        lock = self.path / LOCK
        host = socket.gethostname()
        while True:
            self._check_lock()
            if lock.exists():
                warnings.warn(
                    f"{lock}: taking over a stale lock of process {self._owner().get('pid')}",
                    stacklevel=3,
                )
                lock.unlink(missing_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".lock.", dir=self.path)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "host": host}))
            try:
                os.link(tmp, lock)
                break
            except FileExistsError:
                continue
            finally:
                os.unlink(tmp)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)

    # reading and writing ----------------------------------------------------------------------
    def read_jsonl(self, name: str) -> list[dict]:
        """Read an append-only log, ignoring a torn last line from a crash."""
        path = self.path / name
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
        path = self.path / name
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
        atomic_write(
            self.file(name), json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"
        )

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.file(name), text)


@dataclass
class Reports:
    """A job's final outputs: results.json's content, report.md and its figures (PNG bytes by
    file name), built in full before any of them is written."""

    results: dict[str, Any]
    markdown: str
    figures: dict[str, bytes] = field(default_factory=dict)


def write_reports(folder: RunFolder, reports: Reports) -> dict[str, Any]:
    """Write results.json, report.md and the figures (each temp + rename); returns the results."""
    folder.write_json("results.json", reports.results)
    folder.write_text("report.md", reports.markdown)
    for name, png in reports.figures.items():
        atomic_write(folder.file(name), png)
    return reports.results


def _config_text(resolved: dict) -> str:
    return yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True)
