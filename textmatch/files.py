"""The one write/load protocol of textmatch: every writer of a folder (models, indexes) and of a
single file (training logs) goes through here, and so does every reader of a textmatch folder.

Folders. What textmatch owns in a folder is listed, with a sha256 per file, in its manifest
(`textmatch-manifest.json`); everything else in the folder is the user's and is never deleted
or overwritten: a foreign file where textmatch wants to write one of its own is an error. A
writer (`write_folder`) builds the new state in a hidden staging folder inside the target,
fsyncs it and writes a journal (the commit point), then renames each file into place, removes
the owned files the new state lacks, swaps the manifest and drops the journal. The target
folder itself is never replaced, so its mode and its foreign files stay; the layout stays flat,
as the Hub and transformers expect. A crash before the journal leaves the old state plus a
stale staging folder (removed by the next write); a crash after it is rolled forward by the
next load or write (`recover`). Writers of one folder take turns through a lock file.

Readers (`read_consistent`) load, then check every file against the manifest they started
from; if a writer changed the folder underneath, they retry once, then fail with a clear error:
a load sees one whole save or none.

Files. `atomic_file` writes a file under a temporary name next to it, fsyncs and renames it:
the old file stays whole until the new one is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from .errors import TextMatchError

MANIFEST_NAME = "textmatch-manifest.json"
MANIFEST_FORMAT = 1
JOURNAL_NAME = ".textmatch-journal.json"
LOCK_NAME = ".textmatch-lock"
STAGING_PREFIX = ".textmatch-staging-"
TEMP_MARK = ".tmp-"  # atomic_file's temporary names: .<name>.tmp-<pid>
PROTOCOL_NAMES = (MANIFEST_NAME, JOURNAL_NAME, LOCK_NAME)
LOCK_TIMEOUT_S = 600.0
T = TypeVar("T")


# -- small pieces ---------------------------------------------------------------------------------
def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (folders: so renames inside it survive a crash)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(path: Path, exc: OSError, doing: str) -> TextMatchError:
    reason = exc.strerror or type(exc).__name__
    return TextMatchError(f"cannot {doing} {path}: {reason}; choose a folder you can write to")


def safe_relpath(folder: Path, rel: str, source: str) -> Path:
    """`folder / rel` for a relative path read from `source` (a manifest, a config), refusing
    absolute paths and `..` that would lead out of `folder`."""
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise TextMatchError(f"{source} names the path {rel!r}, which leaves {folder}; the folder is damaged or hostile")
    return folder.joinpath(*pure.parts)


# -- single files -----------------------------------------------------------------------------------
def remove_stale_temps(path: Path) -> None:
    """Remove temporary files that earlier, dead writers of `path` left next to it."""
    prefix = f".{path.name}{TEMP_MARK}"
    if not path.parent.is_dir():
        return
    for entry in path.parent.iterdir():
        if entry.name.startswith(prefix):
            pid = entry.name[len(prefix):].split(".")[0]
            if pid.isdigit() and not _alive(int(pid)):
                entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AtomicFile:
    """A text file written under a temporary name next to `path` (e.g. a log that grows while
    training runs): `commit()` fsyncs it and renames it over `path`, `discard()` removes it. Until
    the commit, `path` keeps its old content whole. Stale temporary files of dead writers of the
    same path are removed when a new one opens."""

    def __init__(self, path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> None:
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise TextMatchError(f"{self.path} is a folder; give a file name")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.path)
            self.tmp = self.path.with_name(f".{self.path.name}{TEMP_MARK}{os.getpid()}")
            self.fh = open(self.tmp, mode, encoding=encoding if "b" not in mode else None)  # noqa: SIM115
        except OSError as exc:
            raise _os_error(self.path, exc, "write") from None

    def write(self, data: Any) -> int:
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    def commit(self) -> None:
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        fsync_path(self.path.parent)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[AtomicFile]:
    """An `AtomicFile` committed when the block ends without error, else discarded: `path`
    holds the old content or the new, never a part."""
    out = AtomicFile(path, mode, encoding)
    try:
        yield out
    except BaseException:
        out.discard()
        raise
    out.commit()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to `path`, with the same suffix (numpy, matplotlib and friends keep
    the name), for the caller to write; when the block ends without error it is fsynced and
    renamed over `path`, else removed. For writers that want a path, not a file handle."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise TextMatchError(f"{path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
    except OSError as exc:
        raise _os_error(path, exc, "write") from None
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


# -- manifests ------------------------------------------------------------------------------------
def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's manifest ({"format", "kind", "files": {relpath: {"sha256", "size"}}}), or None
    when it has none (a plain transformers folder, or one saved before manifests)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TextMatchError(f"{path} is corrupt ({exc}); save the folder again") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()):
        raise TextMatchError(f"{path} is not a textmatch manifest; save the folder again")
    if not isinstance(data.get("format"), int) or data["format"] > MANIFEST_FORMAT:
        raise TextMatchError(f"{path} has format {data.get('format')!r}; this textmatch reads 1..{MANIFEST_FORMAT}: upgrade")
    for rel in files:
        safe_relpath(folder, rel, str(path))
    return data


def changed_files(folder: str | os.PathLike, manifest: dict[str, Any]) -> list[str]:
    """The manifest's files that are missing (unless marked `cache`: those may be deleted) or
    whose size or sha256 differ on disk."""
    folder = Path(folder)
    bad = []
    for rel, entry in manifest["files"].items():
        path = safe_relpath(folder, rel, MANIFEST_NAME)
        if entry.get("cache") and not path.exists():
            continue
        try:
            if path.stat().st_size != entry.get("size", -1) or sha256_file(path) != entry["sha256"]:
                bad.append(rel)
        except OSError:
            bad.append(rel)
    return bad


def _files_below(root: Path) -> list[str]:
    """Relative POSIX paths of the regular files below `root` (a symbolic link is an error)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if (Path(dirpath) / name).is_symlink():
                raise TextMatchError(f"{Path(dirpath) / name} is a symbolic link; textmatch writes plain files only")
        out.extend((Path(dirpath) / name).relative_to(root).as_posix() for name in filenames)
    return sorted(out)


# -- the folder lock and recovery --------------------------------------------------------------------
@contextlib.contextmanager
def folder_lock(folder: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the folder's writer lock (an flock on `.textmatch-lock`), waiting up to `timeout` s."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _os_error(folder, exc, "write to") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TextMatchError(
                        f"{folder} has been locked by another textmatch writer for {timeout:.0f} s; "
                        "wait for it to finish (or remove .textmatch-lock if no textmatch process is running)"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # also releases the flock


def _roll_forward(folder: Path, journal: dict[str, Any]) -> None:
    """Finish a swap whose journal is written: move the staged files in, drop the owned files the
    new state lacks, write the manifest, drop the journal and the staging folder. Idempotent."""
    staging = safe_relpath(folder, journal["staging"], JOURNAL_NAME)
    for rel in journal["files"]:
        src, dst = staging / rel, safe_relpath(folder, rel, JOURNAL_NAME)
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    for rel in journal["remove"]:
        path = safe_relpath(folder, rel, JOURNAL_NAME)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # drop folders the removal emptied (never the target)
            if parent == folder or not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()
    with atomic_file(folder / MANIFEST_NAME) as fh:
        fh.write(json.dumps(journal["manifest"], indent=1, sort_keys=True) + "\n")
    (folder / JOURNAL_NAME).unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    fsync_path(folder)


def _read_journal(path: Path) -> dict[str, Any]:
    """The journal of an interrupted swap (written whole, by rename), checked before it is acted on."""
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TextMatchError(f"{path} is damaged ({exc}); remove it and save the folder again") from None
    ok = (
        isinstance(journal, dict)
        and isinstance(journal.get("staging"), str)
        and journal["staging"].startswith(STAGING_PREFIX)
        and "/" not in journal["staging"]
        and all(isinstance(journal.get(k), list) and all(isinstance(x, str) for x in journal[k]) for k in ("files", "remove"))
        and isinstance(journal.get("manifest"), dict)
        and isinstance(journal["manifest"].get("files"), dict)
    )
    if not ok:
        raise TextMatchError(f"{path} is not a textmatch journal; remove it and save the folder again")
    return journal


def _recover_locked(folder: Path) -> None:
    journal_path = folder / JOURNAL_NAME
    if journal_path.is_file():
        journal = _read_journal(journal_path)
        try:
            _roll_forward(folder, journal)
        except OSError as exc:
            raise _os_error(folder, exc, "finish the interrupted save in") from None
    for entry in folder.iterdir():  # staging folders of writers that died before their journal
        if entry.name.startswith(STAGING_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)


def recover(folder: str | os.PathLike) -> None:
    """Finish an interrupted swap and remove stale staging folders (takes the writer lock)."""
    folder = Path(folder)
    if (folder / JOURNAL_NAME).exists() or any(e.name.startswith(STAGING_PREFIX) for e in folder.iterdir()):
        with folder_lock(folder):
            _recover_locked(folder)


# -- writing a folder -------------------------------------------------------------------------------
@contextlib.contextmanager
def write_folder(
    target: str | os.PathLike,
    kind: str,
    legacy_owned: Callable[[Path], Iterable[str]] | None = None,
    caches: Iterable[str] = (),
) -> Iterator[Path]:
    """Yield an empty staging folder; what the caller writes there becomes textmatch's state in
    `target` (see the module doc), replacing what textmatch owned there before as a whole.

    kind: what the folder holds ("model", "index"), recorded in the manifest. legacy_owned:
    for a folder without a manifest, a function giving the relative paths textmatch owns in it
    (a folder saved before manifests); without it every existing file is the user's. caches:
    relative paths of files a reader recomputes when they are missing (deleting them is fine)."""
    target = Path(target).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise TextMatchError(f"{target} is a file, not a folder; choose a folder for the output")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(target, exc, "create") from None
    if not os.access(target, os.W_OK | os.X_OK):
        raise TextMatchError(f"cannot write to {target}: permission denied; choose a folder you can write to")
    with folder_lock(target):
        _recover_locked(target)
        staging = target / f"{STAGING_PREFIX}{os.getpid()}"
        try:
            staging.mkdir()
        except OSError as exc:
            raise _os_error(target, exc, "write to") from None
        try:
            yield staging
            _commit(target, staging, kind, legacy_owned, set(caches))
        except BaseException:
            if not (target / JOURNAL_NAME).exists():  # past the journal the swap is rolled forward
                shutil.rmtree(staging, ignore_errors=True)
            raise


def files_under(folder: Path, names: Iterable[str]) -> list[str]:
    """The relative paths of the files at `names` in `folder`, and of all files below the ones
    that are folders (for the `legacy_owned` of folders written before manifests)."""
    out = []
    for name in names:
        path = folder / name
        if path.is_file():
            out.append(name)
        elif path.is_dir():
            out.extend(p.relative_to(folder).as_posix() for p in sorted(path.rglob("*")) if p.is_file())
    return out


def owned_files(
    target: Path, legacy_owned: Callable[[Path], Iterable[str]] | None = None, manifest: dict[str, Any] | None = None
) -> set[str]:
    """The relative paths textmatch owns in `target` now (from `manifest`, read if not given)."""
    manifest = manifest if manifest is not None else read_manifest(target)
    if manifest is not None:
        return set(manifest["files"])
    return set(legacy_owned(target)) if legacy_owned is not None else set()


def _check_conflicts(
    target: Path, kind: str, new: Iterable[str], legacy_owned: Callable[[Path], Iterable[str]] | None
) -> set[str]:
    """The errors a write of the relative paths `new` into `target` meets: a folder of another
    kind, or a foreign file (or folder) where one of ours goes. Returns what textmatch owns now."""
    reserved = [rel for rel in new if rel in PROTOCOL_NAMES]
    if reserved:
        raise TextMatchError(f"{reserved[0]} is reserved for textmatch's own bookkeeping")
    manifest = read_manifest(target)
    if manifest is not None and manifest.get("kind") != kind:
        raise TextMatchError(
            f"{target} holds a textmatch {manifest.get('kind')}; a {kind} needs a folder of its own: choose another"
        )
    old = owned_files(target, legacy_owned, manifest)
    for rel in new:
        path = target
        for part in PurePosixPath(rel).parts:
            path = path / part
            rel_here = path.relative_to(target).as_posix()
            if path.is_symlink() or (path.exists() and (path.is_file() or path == target / rel)):
                if rel_here not in old:
                    raise TextMatchError(
                        f"{path} is not a file textmatch wrote, and the new {kind} needs that name; "
                        "move it away, or choose another folder"
                    )
    return old


def check_target(
    target: str | os.PathLike, kind: str, names: Iterable[str], legacy_owned: Callable[[Path], Iterable[str]] | None = None
) -> None:
    """Raise now the errors that writing `names` (relative paths; folders end in "/") into
    `target` would raise at the end: before a long training run, not after it. Writes nothing."""
    target = Path(target).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise TextMatchError(f"{target} is a file, not a folder; choose a folder for the output")
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TextMatchError(f"cannot write to {existing}: permission denied; choose a folder you can write to")
    if target.is_dir():  # names ending in "/" are folders: only a file there is in the way
        folders = [n.rstrip("/") for n in names if n.endswith("/")]
        for name in folders:
            if (target / name).is_symlink() or (target / name).is_file():
                raise TextMatchError(f"{target / name} is in the way of the {kind}'s {name}/ folder; move it away")
        _check_conflicts(target, kind, [n for n in names if not n.endswith("/")], legacy_owned)


def _commit(
    target: Path, staging: Path, kind: str, legacy_owned: Callable[[Path], Iterable[str]] | None, caches: set[str]
) -> None:
    new = _files_below(staging)
    if not new:
        raise TextMatchError(f"nothing was written for {target}; the folder is left as it was")
    old = _check_conflicts(target, kind, new, legacy_owned)
    files = {}
    for rel in new:
        path = staging / rel
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
        files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size, **({"cache": True} if rel in caches else {})}
    manifest = {"format": MANIFEST_FORMAT, "kind": kind, "files": files}
    journal = {"staging": staging.name, "files": new, "remove": sorted(old - set(new)), "manifest": manifest}
    fsync_path(staging)
    with atomic_file(target / JOURNAL_NAME) as fh:  # the commit point
        fh.write(json.dumps(journal) + "\n")
    _roll_forward(target, journal)


# -- reading a folder --------------------------------------------------------------------------------
def read_consistent(folder: str | os.PathLike, load: Callable[[], T], what: str = "folder") -> T:
    """Run `load()` on a textmatch folder and check that everything it could have read is the one
    state its manifest describes; if a writer changed the folder meanwhile, load once more, then
    give up with a clear error. A folder without a manifest is loaded as it is."""
    folder = Path(folder)
    bad: list[str] = []
    for attempt in range(2):
        if (folder / JOURNAL_NAME).exists():
            recover(folder)
        manifest = read_manifest(folder)
        result = load()
        if manifest is None:
            return result
        bad = changed_files(folder, manifest)
        if not bad and read_manifest(folder) == manifest:
            return result
        time.sleep(0.1 * (attempt + 1))
    detail = f"{bad[0]} does not match its checksum" if bad else "its manifest changed"
    raise TextMatchError(
        f"the {what} in {folder} changed while it was read, or is damaged ({detail}); "
        f"load it again, and if this persists save the {what} again"
    )
