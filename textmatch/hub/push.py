"""Uploading a saved model folder to the Hugging Face Hub (safetensors only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TextMatchError
from .resolution import PICKLE_PATTERNS


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    commit_message: str = "Upload textmatch model",
    revision: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Create the model repo `repo_id` if needed and upload `folder` to it in one commit.

    Returns huggingface_hub's CommitInfo (its `commit_url` says where the commit went). A user
    logs in once with `hf auth login` (or sets HF_TOKEN), or passes `token=`."""
    from huggingface_hub import HfApi

    if not isinstance(repo_id, str) or not repo_id.strip() or repo_id.count("/") > 1:
        raise TextMatchError(f"repo_id must look like 'user/name' or 'name', got {repo_id!r}")
    folder = Path(folder)
    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in folder.rglob(pattern))
    if pickles:
        raise TextMatchError(f"{folder} holds pickle files ({', '.join(pickles)}); textmatch only shares safetensors")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
        )
    except Exception as exc:  # noqa: BLE001 - offline, HTTP, auth: all the user's to fix, none a bug of ours
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise TextMatchError(
            f"cannot push to the Hub repo {repo_id!r} ({type(exc).__name__}: {first}); check the network "
            "(HF_HUB_OFFLINE must be unset), the repo id and your token (hf auth login or HF_TOKEN)"
        ) from None
