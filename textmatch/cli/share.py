"""`textmatch push`: share a saved model on the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.modeling import MatchingNetwork, is_textmatch_folder
from ..errors import TextMatchError
from .common import EXIT_OK, emit_json


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("push", help="upload a saved model to the Hugging Face Hub",
                       description="Upload a model folder saved by textmatch (weights, config, tokenizer, support "
                                   "set, model card) to a Hub model repo, creating it if needed. Log in first "
                                   "with `hf auth login` or set HF_TOKEN.")
    p.add_argument("--model", required=True, help="a folder saved by textmatch (e.g. by `textmatch train`)")
    p.add_argument("--repo-id", required=True, help="the Hub repo, e.g. your-name/my-intents")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", default=None, help="Hub token (default: the one saved by `hf auth login` or HF_TOKEN)")
    p.add_argument("--commit-message", default="Upload textmatch model", help="the commit message")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(handler=cmd_push)


def cmd_push(args: argparse.Namespace) -> int:
    folder = Path(args.model).expanduser()
    if not is_textmatch_folder(folder):
        raise TextMatchError(
            f"{args.model!r} is not a model folder saved by textmatch (no textmatch config.json); "
            "save one with `textmatch train` or model.save_pretrained(dir)"
        )
    model = MatchingNetwork.from_pretrained(str(folder))
    info = model.push_to_hub(
        args.repo_id,
        token=args.token,
        private=True if args.private else None,
        commit_message=args.commit_message,
        revision=args.revision,
        create_pr=args.create_pr,
    )
    url = str(getattr(info, "commit_url", "") or getattr(info, "pr_url", "") or "")
    if args.json:
        emit_json({"repo_id": args.repo_id, "commit_url": url, "model": str(folder)})
    else:
        print(f"pushed {folder} to https://huggingface.co/{args.repo_id}" + (f" ({url})" if url else ""))
    return EXIT_OK
