"""The Hugging Face Hub in one place: why a download failed, push checks before work, pushes.

Models, datasets and pushes all reach the Hub through huggingface_hub, whose failures arrive
wrapped differently by each library (transformers: OSError, datasets: ConnectionError, httpx
errors underneath). ``hub_reason`` reads the whole exception chain once for all of them.
Tokens are never read, printed or saved here: huggingface_hub finds them itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hf_icl.errors import HfIclError

OFFLINE = (
    "the Hugging Face Hub is unreachable: offline mode is on (HF_HUB_OFFLINE or "
    "HF_DATASETS_OFFLINE is set)"
)
UNREACHABLE = "the Hugging Face Hub is unreachable (no network connection or it timed out)"
LOGIN = "log in with `hf auth login` or set HF_TOKEN"
_NETWORK_ERRORS = {
    "ConnectionError",
    "TransportError",
    "TimeoutException",
    "Timeout",
    "TimeoutError",
}


def hub_offline() -> bool:
    """Whether huggingface_hub runs in offline mode (read at call time: tests may switch it)."""
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and its causes/contexts (libraries re-raise Hub errors ``from e`` or ``from None``)."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _is_network_error(err: BaseException) -> bool:
    return any(cls.__name__ in _NETWORK_ERRORS for cls in type(err).__mro__)


def hub_reason(err: BaseException) -> str | None:
    """A one-line reason when ``err`` comes from the Hub (offline, unreachable, not found, …)."""
    from huggingface_hub import errors as hub

    chain = _chain(err)
    datasets_errors = sys.modules.get("datasets.exceptions")  # loaded if datasets raised it
    checks = [
        (hub.HFValidationError, lambda e: f"not a valid Hub repo id ({first_sentence(e)})"),
        (hub.OfflineModeIsEnabled, lambda e: OFFLINE),
        (hub.GatedRepoError, lambda e: f"gated on the Hub: accept its terms online and {LOGIN}"),
        (
            hub.RepositoryNotFoundError,
            lambda e: f"not found on the Hub (a private repo needs a token: {LOGIN})",
        ),
        (hub.RevisionNotFoundError, lambda e: "revision not found on the Hub"),
        (
            getattr(datasets_errors, "DatasetNotFoundError", ()),
            lambda e: f"not found on the Hub (a private dataset needs a token: {LOGIN})",
        ),
        (
            hub.LocalEntryNotFoundError,
            lambda e: f"{OFFLINE}, and it is not in the local cache" if hub_offline() else None,
        ),
    ]
    for kind, reason in checks:
        for e in chain:
            text = reason(e) if kind and isinstance(e, kind) else None
            if text:
                return text
    if any(_is_network_error(e) for e in chain):
        return OFFLINE if hub_offline() else UNREACHABLE
    return None


def first_sentence(err: BaseException) -> str:
    return " ".join(str(err).split()).split(". ")[0][:200]


def one_line(err: BaseException, limit: int = 300) -> str:
    return " ".join(str(err).split())[:limit]


@contextmanager
def hub_errors(what: str, also: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Turn a Hub failure inside the block into one line ``what: reason``; errors of the
    ``also`` types get their own message on that line; any other error passes."""
    try:
        yield
    except HfIclError:
        raise
    except Exception as err:
        reason = hub_reason(err) or (one_line(err) if isinstance(err, also) else None)
        if reason is None:
            raise
        raise HfIclError(f"{what}: {reason}") from None


def check_push(repo_id: str, where: str = "--push-to-hub") -> None:
    """Refuse a push before any work: malformed repo id, offline mode, no or read-only token,
    Hub unreachable."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, LocalTokenNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HfIclError(
            f"{where} {repo_id!r}: not a valid Hub repo id "
            f"({first_sentence(err)}); expected NAME or ORG/NAME"
        ) from None
    if hub_offline():
        raise HfIclError(f"{where} {repo_id}: cannot push: {OFFLINE}")
    try:
        user = HfApi().whoami()
    except LocalTokenNotFoundError:
        raise HfIclError(
            f"{where} {repo_id}: cannot push without a Hugging Face token: {LOGIN}"
        ) from None
    except Exception as err:
        reason = hub_reason(err) or f"the Hub refused the token ({first_sentence(err)}): {LOGIN}"
        raise HfIclError(f"{where} {repo_id}: cannot push: {reason}") from None
    role = (user.get("auth", {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HfIclError(
            f"{where} {repo_id}: cannot push with a read-only token: use a token with write access"
        )


def find_artifact(path: Path) -> tuple[Path, str]:
    """(folder to upload, repo type) for a finished train run, its model/, or a built dataset."""
    if (path / "dataset_dict.json").is_file():
        return path, "dataset"
    if (path / "model").is_dir():  # written complete (temp folder + rename) at the end of a run
        return path / "model", "model"
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return path, "model"
    raise HfIclError(
        f"{path}: nothing to push: neither a finished train run (no model/ folder) "
        "nor a dataset folder written by `hf-icl build`"
    )


def push_command(path: Path, repo_id: str, private: bool) -> str:
    """The command that pushes ``path`` later, without recomputing it."""
    return f"hf-icl push {path} {repo_id}" + (" --private" if private else "")


def push(path: Path, repo_id: str, private: bool = False) -> str:
    """Upload a train run's model/ or a built dataset folder as it is on disk, in one commit.

    Used by `hf-icl build`, `hf-icl train` and `hf-icl push`; a failure keeps the local files
    and says how to push them later. Returns the repo's URL.
    """
    from huggingface_hub import HfApi

    folder, repo_type = find_artifact(path)
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type=repo_type,
            folder_path=str(folder),
            commit_message=f"Upload {repo_type} built with hf-icl",
        )
    except Exception as err:
        reason = hub_reason(err) or first_sentence(err)
        raise HfIclError(
            f"pushing {folder} to {repo_id} failed: {reason}; the local files are "
            f"intact: push them later with `{push_command(path, repo_id, private)}`"
        ) from None
    prefix = "datasets/" if repo_type == "dataset" else ""
    return f"https://huggingface.co/{prefix}{repo_id}"
