"""The write/load protocol (textmatch.files): foreign files stay, owned files are replaced as a
whole, a crash at any point leaves a loadable state, readers see one whole state or an error."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from textmatch import TextMatchError
from textmatch import files
from textmatch.files import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    STAGING_PREFIX,
    AtomicFile,
    atomic_file,
    read_consistent,
    read_manifest,
    write_folder,
)


def write_state(folder, contents: dict[str, str], kind="index"):
    with write_folder(folder, kind) as staging:
        for rel, text in contents.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_text(text)


def visible_tree(folder) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.name != MANIFEST_NAME
    }


def test_foreign_files_stay_and_owned_files_are_replaced_as_a_whole(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "keep.txt").write_text("mine")
    (d / "sub" / "keep.txt").write_text("mine too")
    write_state(d, {"a.txt": "1", "b/c.txt": "2"})
    assert visible_tree(d) == {"a.txt": "1", "b/c.txt": "2", "keep.txt": "mine", "sub/keep.txt": "mine too"}
    assert set(read_manifest(d)["files"]) == {"a.txt", "b/c.txt"}
    write_state(d, {"a.txt": "new", "d.txt": "3"})  # b/c.txt is ours and not in the new state: gone
    assert visible_tree(d) == {"a.txt": "new", "d.txt": "3", "keep.txt": "mine", "sub/keep.txt": "mine too"}
    assert not (d / "b").exists()
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == [".textmatch-lock"]


def test_a_foreign_file_in_the_way_is_an_error_and_stays(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "config.json").write_text("the user's")
    with pytest.raises(TextMatchError, match=r"config\.json is not a file textmatch wrote.*move it away"):
        write_state(d, {"config.json": "{}"}, kind="model")
    assert (d / "config.json").read_text() == "the user's"
    assert not any(p.name.startswith(STAGING_PREFIX) for p in d.iterdir())
    (d / "sub").write_text("a file where we need a folder")
    with pytest.raises(TextMatchError, match="sub is not a file textmatch wrote"):
        write_state(d, {"sub/x.txt": "1"})


def test_a_folder_of_another_kind_is_refused(tmp_path):
    write_state(tmp_path / "m", {"config.json": "{}"}, kind="model")
    with pytest.raises(TextMatchError, match="holds a textmatch model; a index needs a folder of its own"):
        write_state(tmp_path / "m", {"index.json": "{}"}, kind="index")
    assert visible_tree(tmp_path / "m") == {"config.json": "{}"}


def test_folder_mode_is_kept_and_a_new_folder_follows_the_umask(tmp_path):
    d = tmp_path / "d"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o751)
    write_state(d, {"a.txt": "1"})
    assert stat.S_IMODE(d.stat().st_mode) == 0o751
    old = os.umask(0o022)
    try:
        write_state(tmp_path / "new", {"a.txt": "1"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755


def test_an_error_while_writing_leaves_the_old_state(tmp_path):
    d = tmp_path / "d"
    write_state(d, {"a.txt": "old"})
    with pytest.raises(RuntimeError, match="boom"):
        with write_folder(d, "index") as staging:
            (staging / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert visible_tree(d) == {"a.txt": "old"}
    assert read_consistent(d, lambda: (d / "a.txt").read_text()) == "old"


def test_a_crash_between_renames_is_rolled_forward_by_the_next_load(tmp_path, monkeypatch):
    d = tmp_path / "d"
    write_state(d, {"a.txt": "old a", "b.txt": "old b", "gone.txt": "x"})
    real_replace = os.replace
    moved = []

    def crash_after_first(src, dst):
        if "staging" in str(src) and moved:
            raise OSError("simulated crash")
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", crash_after_first)
    with pytest.raises(OSError, match="simulated crash"):
        write_state(d, {"a.txt": "new a", "b.txt": "new b"})
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert (d / JOURNAL_NAME).exists()  # the swap was committed but not finished
    assert read_consistent(d, lambda: visible_tree(d)) == {"a.txt": "new a", "b.txt": "new b"}
    assert not (d / JOURNAL_NAME).exists()
    assert not any(p.name.startswith(STAGING_PREFIX) for p in d.iterdir())


@pytest.mark.stress
def test_a_killed_writer_leaves_a_loadable_folder(tmp_path):
    """kill -9 of a writer at every stage: before the journal (old state stays), or after it
    (the next load finishes the swap). Either way a load sees one whole state."""
    d = tmp_path / "d"
    write_state(d, {"a.txt": "old", "b.txt": "old"})
    for stage in ("staging", "journal"):
        script = textwrap.dedent(f"""
            import os, signal, sys
            sys.path.insert(0, {str(os.getcwd())!r})
            from textmatch import files
            real = files._roll_forward
            def die(*a, **k):
                os.kill(os.getpid(), signal.SIGKILL)
            with files.write_folder({str(d)!r}, "index") as staging:
                (staging / "a.txt").write_text("new")
                (staging / "b.txt").write_text("new")
                if {stage!r} == "staging":
                    os.kill(os.getpid(), signal.SIGKILL)
                files._roll_forward = die
        """)
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
        assert proc.returncode == -9, proc.stderr.decode()
        state = read_consistent(d, lambda: visible_tree(d))
        assert state in ({"a.txt": "old", "b.txt": "old"}, {"a.txt": "new", "b.txt": "new"}), (stage, state)
        assert state["a.txt"] == ("old" if stage == "staging" else "new")
    write_state(d, {"c.txt": "1"})  # the next write cleans up any stale staging folder
    assert not any(p.name.startswith(STAGING_PREFIX) for p in d.iterdir())
    assert visible_tree(d) == {"c.txt": "1"}


def test_a_damaged_file_is_a_clear_error(tmp_path):
    d = tmp_path / "d"
    write_state(d, {"a.txt": "1"})
    (d / "a.txt").write_text("2")
    with pytest.raises(TextMatchError, match=r"changed while it was read, or is damaged \(a\.txt does not match"):
        read_consistent(d, lambda: None, "index")


def test_a_manifest_path_outside_the_folder_is_refused(tmp_path):
    d = tmp_path / "d"
    write_state(d, {"a.txt": "1"})
    manifest = json.loads((d / MANIFEST_NAME).read_text())
    manifest["files"]["../outside.txt"] = manifest["files"].pop("a.txt")
    (d / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(TextMatchError, match="leaves"):
        read_consistent(d, lambda: None)


@pytest.mark.stress
def test_readers_see_one_whole_state_while_a_writer_rewrites(tmp_path):
    d = tmp_path / "d"
    write_state(d, {"a.txt": "0", "b.txt": "0"})
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            write_state(d, {"a.txt": str(i), "b.txt": str(i)})

    thread = threading.Thread(target=writer)
    thread.start()
    seen, errors = 0, 0
    deadline = time.monotonic() + 4  # bounded: a few seconds of reads against a busy writer
    try:
        while time.monotonic() < deadline:
            try:
                a, b = read_consistent(d, lambda: ((d / "a.txt").read_text(), (d / "b.txt").read_text()))
            except TextMatchError as exc:
                assert "changed while it was read" in str(exc)
                errors += 1
                continue
            assert a == b  # never half of one save and half of another
            seen += 1
    finally:
        stop.set()
        thread.join()
    assert seen > 0


def test_atomic_file_keeps_the_old_content_until_commit(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text("previous run\n")
    log = AtomicFile(path)
    log.write("new run, line 1\n")
    assert path.read_text() == "previous run\n"
    log.discard()  # the run failed
    assert path.read_text() == "previous run\n" and sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]
    with atomic_file(path) as fh:
        fh.write("done\n")
    assert path.read_text() == "done\n"
    stale = tmp_path / ".log.jsonl.tmp-999999999"  # a dead writer's leftover
    stale.write_text("x")
    with atomic_file(path) as fh:
        fh.write("again\n")
    assert not stale.exists()


def test_unwritable_or_file_output_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(TextMatchError, match="is a file, not a folder"):
        write_state(f, {"a.txt": "1"})
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere: the permission case cannot be shown")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(TextMatchError, match="cannot write"):
        write_state(ro, {"a.txt": "1"})
