"""Atomic folder writes: build a folder next to its target, then rename it into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def replace_dir(tmp: Path, target: Path, carry_over: Callable[[str], bool] | None = None) -> None:
    """Rename `tmp` to `target`. An existing target is moved aside first and removed after, so a
    crash leaves either the old or the new folder. Entries of the old folder for which
    `carry_over(name)` is true, and which the new one lacks, are copied into it first."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if carry_over is not None:
        for entry in target.iterdir():
            if not carry_over(entry.name) or (tmp / entry.name).exists():
                continue
            if entry.is_dir():
                shutil.copytree(entry, tmp / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, carry_over: Callable[[str], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary folder next to `target`; on success it replaces `target`, on error it
    is removed and `target` is untouched."""
    target = Path(target).expanduser().resolve()
    if target.exists() and not target.is_dir():
        from .errors import TextMatchError

        raise TextMatchError(f"{target} is a file; choose a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        replace_dir(tmp, target, carry_over)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
