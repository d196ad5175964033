"""The `textmatch` command: the only top floor. Each command group lives in its own module
(`classify`: predict / evaluate / train; `pretrain`: pretrain; `retrieve`: index / search /
evaluate-retrieval; `share`: push); this module builds the parser and runs a command with the
exit-status rules.

Exit status: 0 on success, 2 on bad usage or bad input (one line on stderr naming the
problem), 1 on an internal error.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

from ..errors import TextMatchError
from . import classify, inspect, pretrain, retrieve, share
from .common import EXIT_INTERNAL, EXIT_USAGE, Parser, quiet_libraries

COMMAND_GROUPS = (classify, inspect, pretrain, retrieve, share)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="textmatch",
        description="Few-shot text classification and retrieval with Matching Networks (Vinyals et al. 2016).",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"textmatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for group in COMMAND_GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2): return, don't raise
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if getattr(args, "batch_size", 1) < 1:
            raise TextMatchError(f"--batch-size must be at least 1, got {args.batch_size}")
        quiet_libraries()
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, *_: print(f"textmatch {args.command}: warning: {message}", file=sys.stderr)
            return args.handler(args)
    except TextMatchError as exc:
        print(f"textmatch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("textmatch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if os.environ.get("TEXTMATCH_DEBUG"):
            raise
        print(f"textmatch {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(set TEXTMATCH_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
