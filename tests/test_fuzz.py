"""Property-based fuzzing (hypothesis) of every reader of user-supplied files.

The property, for each reader and any generated input: the reader either returns a correct
result or raises `textmatch.TextMatchError`; never another exception type (nor a native crash
or a hang), and it writes nothing outside the folder the example owns: its input stays byte for
byte as it was, and no new name appears next to it, in the test's folders or in the `datasets`
cache. "Correct" is checked as far as the input allows: clean inputs (texts made of words, ids
of letters and digits, ...) must load, and give back exactly what was written.

Readers covered: data files (`load_text_dataset` + `texts_and_labels` / `as_text_label_lists`),
corpora (`read_corpus` + `checked_documents`), BEIR folders (`load_beir`, `read_qrels`), class
split label files (`class_split_from_files`), model folders (`MatchingNetwork.from_pretrained`,
then `predict`; saved by textmatch, or plain transformers) and index folders (`Retriever.load`,
then `search`). Model and index folders start from a valid save and are mutated: truncated,
bytes flipped, files replaced by random bytes or random JSON, JSON values edited, files
deleted, arrays and tensors of other shapes and dtypes, the journal of an interrupted save
added; with the manifest kept, deleted (folders saved before manifests have none) or rewritten
to match the mutated files (so the deeper parsers are reached).

Each reader call runs in a forked child process (`check_reader`), so that a native crash in a
parser (pyarrow, pandas, safetensors, tokenizers) fails one example instead of killing the
test session. Explicit examples (`reproducers`) replay every bug the fuzzers found so far.

Profiles: `TEXTMATCH_FUZZ_PROFILE=ci` (the default: 40 examples per test, 60 for model and index
folders, no shrinking; about a minute on two cores) or `long` (500 examples per test, with
shrinking, for a campaign):

    HF_HUB_OFFLINE=1 TEXTMATCH_FUZZ_PROFILE=long .venv/bin/python -m pytest -q tests/test_fuzz.py

At the end of the module a summary line per test gives the examples tried and how they ended
(returned / TextMatchError / FAILED: <what>); the counts are also written to
`<pytest basetemp>/fuzz_counts.json`.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import faulthandler
import hashlib
import io
import json
import math
import os
import pickle
import select
import shutil
import signal
import string
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from textmatch import TextMatchError

# -- profiles --------------------------------------------------------------------------------------
_COMMON = {
    "deadline": None,
    "database": None,  # no .hypothesis/ folder in the repository; failures print a reproducer
    "print_blob": True,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,  # each example makes its own folder under tmp_path
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}
settings.register_profile(
    "ci", max_examples=40, phases=[Phase.explicit, Phase.generate], **_COMMON  # no shrinking: a bounded run
)
settings.register_profile("long", max_examples=500, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("TEXTMATCH_FUZZ_PROFILE", "ci"))


def fuzz(share: float = 1.0) -> settings:
    """The profile's settings, with `share` times its example count (slow readers get fewer)."""
    return settings(PROFILE, max_examples=max(1, round(PROFILE.max_examples * share)))


def reproducers(*cases: dict) -> Callable:
    """Explicit examples (keyword arguments of the test), run first in every profile: one per bug
    the fuzzers found, so each stays fixed. Each comment says what the reader did."""

    def decorate(test: Callable) -> Callable:
        for kwargs in reversed(cases):
            test = example(**kwargs)(test)
        return test

    return decorate


# -- counting ----------------------------------------------------------------------------------------
COUNTS: dict[str, Counter] = defaultdict(Counter)
SECONDS: dict[str, float] = defaultdict(float)


@pytest.fixture(scope="module", autouse=True)
def _fuzz_summary(request, tmp_path_factory):
    """After the module: one line per test (examples tried and their outcomes), and a JSON copy."""
    yield
    report = {name: {**COUNTS[name], "seconds": round(SECONDS[name], 1)} for name in sorted(COUNTS)}
    out = tmp_path_factory.getbasetemp() / "fuzz_counts.json"
    out.write_text(json.dumps({"profile": os.environ.get("TEXTMATCH_FUZZ_PROFILE", "ci"), "tests": report}, indent=1))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not report:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write("\n")
        reporter.write_line(f"fuzz cases ({out}):")
        for name, row in report.items():
            outcomes = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("tried", "seconds"))
            reporter.write_line(f"  {name}: {row.get('tried', 0)} tried ({outcomes}) in {row['seconds']} s")


@pytest.fixture(autouse=True)
def _time_test(request):
    start = time.perf_counter()
    yield
    SECONDS[request.node.originalname] += time.perf_counter() - start


# -- the property ------------------------------------------------------------------------------------
def _tree(root: Path) -> dict[str, str]:
    """Every path below `root` -> the sha256 of its content ("<dir>" for a folder)."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        p.relative_to(root).as_posix(): "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _listing(folder: Path, skip: tuple[str, ...] = ()) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n not in skip) if folder.is_dir() else []


@pytest.fixture
def global_cache(tmp_path, monkeypatch) -> Path:
    """Stand in for the user's global `datasets` cache: a folder outside every example's own
    folder, watched like the rest (so a fuzz run never fills the real ~/.cache, and other
    processes writing to the real one cannot disturb the check)."""
    import datasets

    folder = tmp_path / "global-datasets-cache"
    folder.mkdir()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", folder)
    return folder


class Example:
    """The folder one example owns: `work/input` (what the reader reads; it must not change)
    and `work/cache` (where a reader may write, e.g. the `datasets` cache_dir)."""

    def __init__(self, tmp_path: Path) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="ex-", dir=tmp_path))
        self.input = self.work / "input"
        self.cache = self.work / "cache"

    def remove(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _outside(ex: Example, global_cache: Path | None) -> dict[str, Any]:
    """What no reader may change: the input, and every listing around the example's folder."""
    state = {
        "input (must not change)": _tree(ex.input),
        "the example's folder": _listing(ex.work, skip=("input", "cache")),
        "the test's tmp_path": _listing(ex.work.parent),
        "next to tmp_path": _listing(ex.work.parent.parent),
    }
    if global_cache is not None:
        state["the datasets cache (global)"] = _listing(global_cache)
    foreign = ex.input / FOREIGN[0]
    state["the user's file in the folder"] = foreign.read_bytes() if foreign.is_file() else None
    return state


class ReaderFailed(AssertionError):
    """A reader broke the property in the child process; subclassed per original exception
    type (see `_failure_type`) so that hypothesis tells distinct bugs apart."""


_FAILURE_TYPES: dict[str, type] = {}


def _failure_type(name: str) -> type:
    if name not in _FAILURE_TYPES:
        _FAILURE_TYPES[name] = type(f"ReaderRaised_{name}", (ReaderFailed,), {})
    return _FAILURE_TYPES[name]


def _run_in_child(read: Callable[[], Any], timeout: float) -> tuple:
    """Run `read()` in a forked child and return ("returned", its result) or ("TextMatchError",
    message) or ("error", type name, traceback) or ("crashed", description). A fork isolates the
    test session from native crashes in parsers (pyarrow, pandas, safetensors, tokenizers)."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, report through the pipe, and leave whatever happens
        try:
            os.close(rfd)
            faulthandler.disable()  # a native crash is reported by the parent, in one line
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        message = ("returned", read())
                    except TextMatchError as exc:
                        message = ("TextMatchError", str(exc))
                data = pickle.dumps(message)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                data = pickle.dumps(("error", type(exc).__name__, "".join(traceback.format_exception(exc))))
            with os.fdopen(wfd, "wb") as fh:
                fh.write(data)
        finally:
            os._exit(0)  # never back into pytest
    os.close(wfd)
    chunks, deadline = [], time.monotonic() + timeout
    with os.fdopen(rfd, "rb") as fh:
        while True:
            ready, _, _ = select.select([fh], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return ("crashed", f"the reader did not finish within {timeout:.0f} s")
            chunk = os.read(fh.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ("crashed", f"the reader killed the process with {signal.Signals(os.WTERMSIG(status)).name}")
    if not chunks:
        return ("crashed", f"the reader's process exited with status {os.WEXITSTATUS(status)} and no report")
    return pickle.loads(b"".join(chunks))


def check_reader(
    test: str,
    ex: Example,
    read: Callable[[], dict | None],
    global_cache: Path | None = None,
    timeout: float = 120,
    input_may_change: bool = False,
) -> str | None:
    """The property. `read()` calls a reader and checks its result (asserts); it may return a
    dict of extra counts (e.g. {"loaded": 1}). It must end normally or with TextMatchError:
    another exception, a native crash or a hang fails the example, and so does any change
    outside `ex.work/cache` (and `ex.input` when `input_may_change`: a journal's recovery).
    Returns the TextMatchError's message, or None."""
    before = _outside(ex, global_cache)
    if input_may_change:  # but the user's own file in it must stay (see FOREIGN)
        del before["input (must not change)"]
    COUNTS[test]["tried"] += 1
    result = _run_in_child(read, timeout)
    if result[0] == "error":
        COUNTS[test][f"FAILED: {result[1]}"] += 1
        raise _failure_type(result[1])(f"the reader raised {result[1]}, not TextMatchError:\n{result[2]}")
    if result[0] == "crashed":
        COUNTS[test]["FAILED: crash"] += 1
        raise _failure_type("crash")(result[1])
    after = _outside(ex, global_cache)
    changed = [what for what in before if after[what] != before[what]]
    if changed:
        COUNTS[test]["FAILED: wrote outside"] += 1
    assert not changed, f"the reader wrote outside its folder: {changed[0]} changed: {before[changed[0]]!r} -> {after[changed[0]]!r}"
    COUNTS[test][result[0]] += 1
    if result[0] == "returned":
        COUNTS[test].update(result[1] or {})
    return result[1] if result[0] == "TextMatchError" else None


# -- generic strategies ------------------------------------------------------------------------------
def json_values(
    ints: st.SearchStrategy | None = None,
    floats: st.SearchStrategy | None = None,
    strings: st.SearchStrategy | None = None,
    max_leaves: int = 8,
) -> st.SearchStrategy:
    """Any JSON value (NaN and infinities included, as Python's json module writes them);
    `ints`, `floats` and `strings` narrow the scalars (default: any)."""
    ints = st.integers() if ints is None else ints
    floats = st.floats() if floats is None else floats
    strings = st.text(max_size=12) if strings is None else strings
    scalars = st.none() | st.booleans() | ints | floats | strings
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
        max_leaves=max_leaves,
    )


def dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


# File names: anything Linux takes (no "/" nor NUL), including spaces, glob and shell characters.
NAME_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"), min_size=1, max_size=12
).filter(lambda s: s not in (".", "..") and len(s.encode("utf-8")) < 120)

# Clean texts: at least two words with letters (pandas cannot take them for numbers or booleans),
# joined by separators a CSV writer must quote.
WORD = st.text(string.ascii_letters + "éßø漢", min_size=1, max_size=6)
CLEAN_TEXT = st.builds(
    lambda words, seps: "".join(w + s for w, s in zip(words, seps)) + words[-1],
    st.lists(WORD, min_size=2, max_size=5),
    st.lists(st.sampled_from([" ", ", ", ' "', '" ', "\t", "\n", "; ", " # ", " '"]), min_size=4, max_size=4),
)
CLEAN_LABEL = st.builds(lambda w: "L" + w, WORD)  # never a number, a boolean or "nan"

# Awkward cells: empty, the words pandas and pyarrow treat specially, quotes and line breaks.
CELL = st.text(max_size=16) | st.sampled_from(
    ["", " ", "NA", "null", "NaN", "nan", "None", "1", "2.5", "-0", "1e999", "True", "\"", ",", "\t",
     "a\r\nb", "a\nb", "\ufeff", "#", "\x00", "𝔘𝔫𝔦"]
)

BOM = "\ufeff"
LEAD_ROWS = 10_001  # valid rows before the awkward ones: more than one CSV chunk of `datasets`
JUNK_TAIL = st.sampled_from([b"", b"", b"a,b,c,d,e\tf\n", b"\xff\xfe,x\n", b'"unterminated\n', b"\x00\n"])


# ===================================================================================================
# 1. data files: load_text_dataset + texts_and_labels / as_text_label_lists
# ===================================================================================================
def check_labelled(texts: list, labels: list) -> None:
    """What every returned (texts, labels) pair must be."""
    assert isinstance(texts, list) and isinstance(labels, list)
    assert len(texts) == len(labels)
    for t in texts:
        assert isinstance(t, str) and t.strip()
    for y in labels:
        assert y is not None and not (isinstance(y, float) and math.isnan(y))
        hash(y)


def read_labelled(ex: Example, path: Path, streaming: bool, expected: tuple | None) -> None:
    """The reader under test: a data file to validated (texts, labels), checked."""
    from textmatch.data import as_text_label_lists, load_text_dataset, texts_and_labels

    ds = load_text_dataset(str(path), streaming=streaming, cache_dir=str(ex.cache))
    texts, labels = texts_and_labels(ds, "text", "label")
    check_labelled(texts, labels)
    assert as_text_label_lists(ds) == (texts, labels)
    if expected is not None:
        assert (texts, labels) == expected


def run_data_case(test: str, tmp_path: Path, global_cache: Path, case: dict, streaming: bool) -> None:
    ex = Example(tmp_path)
    try:
        ex.input.mkdir()
        path = ex.input / (case["stem"] + case["suffix"])
        path.write_bytes(case["data"])
        expected = case.get("expected")
        error = check_reader(test, ex, lambda: read_labelled(ex, path, streaming, expected), global_cache)
        assert expected is None or error is None, f"a clean file was refused: {error}"
    finally:
        ex.remove()


@st.composite
def random_data_files(draw) -> dict:
    """Random bytes (sometimes after a plausible header or a BOM) under any data suffix."""
    suffix = draw(st.sampled_from([".csv", ".tsv", ".json", ".jsonl", ".parquet", ".CSV", ".Json", ".txt"]))
    prefix = draw(st.sampled_from([b"", b"text,label\n", b"text\tlabel\r\n", BOM.encode(), b'{"text": "a", "label": "b"}\n', b"PAR1"]))
    return {"stem": "data", "suffix": suffix, "data": prefix + draw(st.binary(max_size=300))}


@st.composite
def table_files(draw) -> dict:
    """CSV / TSV files: clean ones (which must load, exactly) and dirty ones (odd headers, ragged
    rows, awkward cells, unquoted writing, other encodings, bare CR, a huge field)."""
    suffix = draw(st.sampled_from([".csv", ".tsv"]))
    sep = "," if suffix == ".csv" else "\t"
    stem = draw(st.sampled_from(["data", "my data"]) | NAME_TEXT)
    if draw(st.booleans()):  # clean
        n = draw(st.integers(1, 5))
        texts = draw(st.lists(CLEAN_TEXT, min_size=n, max_size=n))
        labels = draw(st.lists(CLEAN_LABEL, min_size=n, max_size=n))
        extra = draw(st.booleans())
        header = ["label", "text", "id"] if extra else ["text", "label"]
        rows = [[y, t, str(i)] if extra else [t, y] for i, (t, y) in enumerate(zip(texts, labels))]
        newline = draw(st.sampled_from(["\n", "\r\n"]))
        encoding = draw(st.sampled_from(["utf-8", "utf-8-sig"]))
        buf = io.StringIO()
        csv.writer(buf, delimiter=sep, lineterminator=newline).writerows([header, *rows])
        return {"stem": stem, "suffix": suffix, "data": buf.getvalue().encode(encoding), "expected": (texts, labels)}
    names = st.sampled_from(["text", "label", "id", "sentence", " text", "Text", "", "text.1"]) | st.text(max_size=6)
    header = draw(st.just(["text", "label"]) | st.lists(names, max_size=4))
    width = len(header)
    rows = draw(st.lists(st.lists(CELL, min_size=max(0, width - 1), max_size=width + 1), max_size=5))
    huge = draw(st.sampled_from([0, 0, 0, 70_000, 1_500_000]))
    if huge and rows and rows[0]:
        rows[0][0] = "x" * huge
    # Past 10,000 rows `datasets` reads a CSV in a second chunk: a streamed read meets the
    # awkward rows only while it iterates, after the columns were checked.
    lead = draw(st.sampled_from([0, 0, 0, LEAD_ROWS]))
    rows = [[f"padding text {i}"] * width for i in range(lead)] + rows
    table = ([header] if header or draw(st.booleans()) else []) + rows
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    if draw(st.booleans()):
        buf = io.StringIO()
        csv.writer(buf, delimiter=sep, lineterminator=newline).writerows(table)
        text = buf.getvalue()
    else:  # written naively: quotes and separators inside cells break the rows
        text = "".join(sep.join(row) + newline for row in table)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"]))
    return {"stem": stem, "suffix": suffix, "data": text.encode(encoding, errors="replace") + draw(JUNK_TAIL)}


@st.composite
def json_files(draw) -> dict:
    """JSON / JSONL files: clean records (which must load, exactly) and dirty ones (missing or
    mistyped fields, None / NaN / lists / objects as texts and labels, blank and broken lines,
    a top-level object or scalar, a BOM, CRLF, a huge field)."""
    suffix = draw(st.sampled_from([".json", ".jsonl"]))
    if draw(st.booleans()):  # clean
        n = draw(st.integers(1, 5))
        texts = draw(st.lists(CLEAN_TEXT, min_size=n, max_size=n))
        labels = draw(st.lists(CLEAN_LABEL, min_size=n, max_size=n))
        records = [{"text": t, "label": y} for t, y in zip(texts, labels)]
        if suffix == ".jsonl":
            newline = draw(st.sampled_from(["\n", "\r\n"]))
            data = "".join(dump_json(r) + newline for r in records)
        else:
            data = dump_json(records)
        return {"stem": "data", "suffix": suffix, "data": data.encode(), "expected": (texts, labels)}
    field_values = json_values(max_leaves=4) | CLEAN_TEXT | st.integers(-5, 5)
    record = st.fixed_dictionaries(
        {}, optional={"text": field_values, "label": field_values, "id": field_values, "sentence": field_values}
    )
    rows = draw(st.lists(record | json_values(max_leaves=4), max_size=5))
    huge = draw(st.sampled_from([0, 0, 0, 70_000, 3_000_000]))
    if huge and rows and isinstance(rows[0], dict):
        rows[0]["text"] = "x " * (huge // 2)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    shape = draw(st.sampled_from(["lines", "lines", "list", "object", "scalar", "broken"]))
    if shape == "lines":
        data = "".join(dump_json(r) + newline for r in rows) + draw(st.sampled_from(["", newline, "\n\n", "{"]))
    elif shape == "list":
        data = dump_json(rows)
    elif shape == "object":
        data = dump_json({"data": rows, "version": 1})
    elif shape == "scalar":
        data = dump_json(draw(json_values(max_leaves=3)))
    else:
        data = "".join(dump_json(r) + newline for r in rows)
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        data = BOM + data
    return {"stem": "data", "suffix": suffix, "data": data.encode("utf-8", errors="surrogatepass")}


@st.composite
def parquet_files(draw) -> dict:
    """Parquet files: clean string columns (which must load, exactly), columns of other types
    (ints, floats with NaN, nulls, lists, structs, binary, booleans, dictionary-encoded),
    `datasets` feature metadata (ClassLabel with too few names, random JSON), and truncated or
    byte-flipped files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet_bytes(table) -> bytes:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()

    if draw(st.booleans()):  # clean
        n = draw(st.integers(1, 5))
        texts = draw(st.lists(CLEAN_TEXT, min_size=n, max_size=n))
        labels = draw(st.lists(CLEAN_LABEL, min_size=n, max_size=n))
        data = parquet_bytes(pa.table({"text": texts, "label": labels}))
        return {"stem": "data", "suffix": ".parquet", "data": data, "expected": (texts, labels)}
    n = draw(st.integers(0, 4))

    def column(kind: str):
        if kind == "string":
            return pa.array(draw(st.lists(st.none() | st.text(max_size=8), min_size=n, max_size=n)), pa.string())
        if kind == "int":
            return pa.array(draw(st.lists(st.none() | st.integers(-3, 3), min_size=n, max_size=n)), pa.int64())
        if kind == "float":
            return pa.array(draw(st.lists(st.floats(), min_size=n, max_size=n)), pa.float64())
        if kind == "null":
            return pa.nulls(n)
        if kind == "list":
            return pa.array(draw(st.lists(st.lists(st.text(max_size=3), max_size=2), min_size=n, max_size=n)))
        if kind == "struct":
            return pa.array([{"a": v} for v in draw(st.lists(st.text(max_size=3), min_size=n, max_size=n))])
        if kind == "binary":
            return pa.array(draw(st.lists(st.binary(max_size=6), min_size=n, max_size=n)), pa.binary())
        if kind == "bool":
            return pa.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        return pa.array(draw(st.lists(st.sampled_from(["a", "b "]), min_size=n, max_size=n))).dictionary_encode()

    kinds = st.sampled_from(["string", "int", "float", "null", "list", "struct", "binary", "bool", "dictionary"])
    names = draw(st.lists(st.sampled_from(["text", "label", "id"]) | st.text(max_size=4), max_size=3, unique=True))
    table = pa.table({name: column(draw(kinds)) for name in names}) if names else pa.table({})
    metadata = draw(st.sampled_from(["none", "classlabel", "random"]))
    if metadata == "classlabel":
        features = {
            "text": {"dtype": "string", "_type": "Value"},
            "label": {"names": draw(st.lists(st.text(max_size=3), max_size=3)), "_type": "ClassLabel"},
        }
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    elif metadata == "random":
        table = table.replace_schema_metadata({"huggingface": dump_json(draw(json_values(max_leaves=6)))})
    data = parquet_bytes(table)
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
    return {"stem": "data", "suffix": ".parquet", "data": data}


def long_csv(header: str, row: str, tail: bytes) -> bytes:
    """A CSV file with LEAD_ROWS good rows, then `tail`: a streamed read meets the tail late."""
    return (header + "".join(row.format(i) for i in range(LEAD_ROWS))).encode() + tail


@fuzz(1.0)
@given(case=random_data_files(), streaming=st.booleans())
def test_data_file_random_bytes(tmp_path, global_cache, case, streaming):
    """Random bytes under every data suffix (and an unknown one), after a plausible start."""
    run_data_case("test_data_file_random_bytes", tmp_path, global_cache, case, streaming)


@reproducers(
    # ParserError ("Expected 2 fields in line 10003, saw 3") from texts_and_labels, iterating the stream
    {"case": {"stem": "data", "suffix": ".csv", "data": long_csv("text,label\n", "text {},a\n", b"a,b,c\n")}, "streaming": True},
    # UnicodeDecodeError from texts_and_labels, iterating the stream (a latin-1 row past the first chunk)
    {"case": {"stem": "data", "suffix": ".csv", "data": long_csv("text,label\n", "text {},a\n", b"caf\xe9,a\n")}, "streaming": True},
)
@fuzz(1.0)
@given(case=table_files(), streaming=st.booleans())
def test_data_file_csv_tsv(tmp_path, global_cache, case, streaming):
    """CSV / TSV: clean tables load exactly (any file name); dirty ones load or raise TextMatchError."""
    run_data_case("test_data_file_csv_tsv", tmp_path, global_cache, case, streaming)


@reproducers(
    # SIGSEGV in pyarrow.json.read_json (apache/arrow#47409): a file whose first JSON value is null
    {"case": {"stem": "data", "suffix": ".json", "data": b"null\n"}, "streaming": False},
    {"case": {"stem": "data", "suffix": ".jsonl", "data": b'null\n{"text": "a b", "label": "x"}\n'}, "streaming": True},
)
@fuzz(1.0)
@given(case=json_files(), streaming=st.booleans())
def test_data_file_json_jsonl(tmp_path, global_cache, case, streaming):
    """JSON / JSONL: clean records load exactly; dirty ones load or raise TextMatchError."""
    run_data_case("test_data_file_json_jsonl", tmp_path, global_cache, case, streaming)


@fuzz(1.0)
@given(case=parquet_files(), streaming=st.booleans())
def test_data_file_parquet(tmp_path, global_cache, case, streaming):
    """Parquet: clean string columns load exactly; other types, metadata and damage load or raise TextMatchError."""
    run_data_case("test_data_file_parquet", tmp_path, global_cache, case, streaming)


# ===================================================================================================
# 2. corpora: read_corpus + checked_documents
# ===================================================================================================
def check_documents(docs: list) -> None:
    for doc in docs:
        assert set(doc) == {"_id", "title", "text"}
        assert all(isinstance(doc[k], str) for k in doc)


def read_documents(source: Path, expected: list | None = None) -> None:
    """The reader under test: every document of a corpus (exactly `expected`, when given), then
    the indexing checks."""
    from textmatch.retrieval.corpus import checked_documents, read_corpus

    docs = list(read_corpus(source))
    check_documents(docs)
    if expected is not None:
        assert docs == expected
    kept = list(checked_documents(iter(docs)))
    ids = [d["_id"] for d in kept]
    assert len(set(ids)) == len(ids) and kept
    assert all(d["text"].strip() or d["title"].strip() for d in kept)


@contextlib.contextmanager
def datasets_cache_in(folder: Path) -> Iterator[None]:
    """Point `datasets`' default cache at `folder` (read_corpus has no cache_dir option)."""
    import datasets

    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = folder
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_CACHE = old


CORPUS_FIELDS = ["_id", "id", "title", "text", "body"]


@st.composite
def corpus_files(draw) -> dict:
    """JSONL / JSON / CSV / TSV corpora: clean documents (which must read back exactly), records
    with missing and mistyped fields, and random bytes."""
    suffix = draw(st.sampled_from([".jsonl", ".json", ".csv", ".tsv"]))
    kind = draw(st.sampled_from(["clean", "records", "bytes"]))
    if kind == "bytes":
        return {"suffix": suffix, "data": draw(st.binary(max_size=300)), "expected": None}
    if kind == "clean":
        n = draw(st.integers(1, 5))
        ids = [f"d{i}" for i in range(n)]
        titles = draw(st.lists(CLEAN_TEXT, min_size=n, max_size=n))
        texts = draw(st.lists(CLEAN_TEXT, min_size=n, max_size=n))
        rows = [{"_id": i, "title": t, "text": x} for i, t, x in zip(ids, titles, texts)]
        expected = rows
    else:
        value = json_values(max_leaves=3) | CLEAN_TEXT | st.integers(0, 3)
        record = st.dictionaries(st.sampled_from(CORPUS_FIELDS) | st.text(max_size=4), value, max_size=5)
        rows = draw(st.lists(record, max_size=5))
        if suffix in (".csv", ".tsv") and draw(st.sampled_from([False, False, True])):  # a second chunk
            rows = [{"_id": f"p{i}", "title": "padding", "text": "padding text"} for i in range(LEAD_ROWS)] + rows
        expected = None
    if suffix == ".jsonl":
        data = "".join(dump_json(r) + "\n" for r in rows)
    elif suffix == ".json":
        data = dump_json(rows)
    else:
        header = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="," if suffix == ".csv" else "\t", lineterminator="\n")
        writer.writerows([header, *[[str(r.get(k, "")) for k in header] for r in rows]])
        data = buf.getvalue()
    tail = draw(JUNK_TAIL) if expected is None else b""
    return {"suffix": suffix, "data": data.encode("utf-8", errors="surrogatepass") + tail, "expected": expected}


@st.composite
def text_folders(draw) -> dict:
    """Folders of .txt / .md / ... files with random names (one or two levels), UTF-8 or not,
    Markdown headings or none; sometimes a corpus.jsonl beside them."""
    suffixes = st.sampled_from([".txt", ".md", ".markdown", ".rst", ".TXT", ".Md", ".json", ""])
    content = (
        st.text(max_size=40).map(lambda s: s.encode("utf-8", errors="surrogatepass"))
        | st.builds(lambda h, b: f"{h}\n{b}".encode(), st.sampled_from(["# Title", "#", "## ", "  # x", "\ufeff# T"]), st.text(max_size=20))
        | st.binary(max_size=30)
    )
    entries = draw(st.lists(st.tuples(st.lists(NAME_TEXT, min_size=1, max_size=2), suffixes, content), max_size=6))
    corpus_jsonl = draw(st.none() | st.binary(max_size=60) | st.just(b'{"_id": "1", "text": "hello"}\n'))
    return {"entries": entries, "corpus_jsonl": corpus_jsonl}


def write_text_folder(folder: Path, case: dict) -> dict[str, bytes]:
    """Write the folder; returns {relative path: bytes} of the files that made it (a name
    already taken by a file or folder is skipped)."""
    folder.mkdir()
    written: dict[str, bytes] = {}
    for parts, suffix, data in case["entries"]:
        rel = Path(*parts[:-1], parts[-1] + suffix)
        path = folder / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                continue
            path.write_bytes(data)
        except OSError:  # a folder where a file is, or a name too long
            continue
        written[rel.as_posix()] = data
    if case["corpus_jsonl"] is not None and not (folder / "corpus.jsonl").exists():
        (folder / "corpus.jsonl").write_bytes(case["corpus_jsonl"])
    return written


TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")


@reproducers(
    # ParserError from read_corpus's loop over the streamed rows (a bad row past the first chunk)
    {"case": {"suffix": ".csv", "data": long_csv("_id,title,text\n", "p{},t,text\n", b"a,b,c,d\n"), "expected": None}},
    # SIGSEGV in pyarrow.json.read_json (apache/arrow#47409)
    {"case": {"suffix": ".jsonl", "data": b"null\n", "expected": None}},
)
@fuzz(1.0)
@given(case=corpus_files())
def test_corpus_file(tmp_path, global_cache, case):
    """read_corpus on corpus files: clean ones read back exactly, the rest read or raise TextMatchError."""
    ex = Example(tmp_path)
    try:
        ex.input.mkdir()
        path = ex.input / f"corpus{case['suffix']}"
        path.write_bytes(case["data"])
        with datasets_cache_in(ex.cache):
            error = check_reader("test_corpus_file", ex, lambda: read_documents(path, case["expected"]), global_cache)
        assert case["expected"] is None or error is None, f"a clean corpus was refused: {error}"
    finally:
        ex.remove()


@fuzz(1.0)
@given(case=text_folders())
def test_corpus_text_folder(tmp_path, global_cache, case):
    """read_corpus on folders of text files: ids are the relative paths, texts the files' text."""
    ex = Example(tmp_path)
    try:
        written = write_text_folder(ex.input, case)

        def read() -> None:
            from textmatch.retrieval.corpus import read_corpus

            read_documents(ex.input)
            docs = list(read_corpus(ex.input))
            if case["corpus_jsonl"] is None:
                wanted = {rel: data for rel, data in written.items() if Path(rel).suffix.lower() in TEXT_SUFFIXES}
                assert sorted(d["_id"] for d in docs) == sorted(wanted)
                for d in docs:
                    raw = wanted[d["_id"]].decode("utf-8")
                    assert d["text"] == raw.replace("\r\n", "\n").replace("\r", "\n")  # read in text mode

        with datasets_cache_in(ex.cache):
            check_reader("test_corpus_text_folder", ex, read, global_cache)
    finally:
        ex.remove()


@reproducers(
    # a <cache>_json_default-<hash>.lock file per corpus in the user's datasets cache
    {"case": {"suffix": ".jsonl", "data": b'{"_id": "d0", "title": "a b", "text": "a b"}\n',
              "expected": [{"_id": "d0", "title": "a b", "text": "a b"}]}},
)
@fuzz(0.25)
@given(case=corpus_files().filter(lambda c: c["expected"] is not None))
def test_corpus_file_writes_nothing_to_the_global_cache(tmp_path, global_cache, case):
    """read_corpus takes no cache_dir, so it must not write to the user's `datasets` cache either."""
    ex = Example(tmp_path)
    try:
        ex.input.mkdir()
        path = ex.input / f"corpus{case['suffix']}"
        path.write_bytes(case["data"])
        check_reader(
            "test_corpus_file_writes_nothing_to_the_global_cache", ex, lambda: read_documents(path, case["expected"]), global_cache
        )
    finally:
        ex.remove()


# ===================================================================================================
# 3. BEIR folders: read_qrels, load_beir
# ===================================================================================================
QIDS = ["q1", "q2", "q3"]
DIDS = ["d1", "d2", "d3", "d4"]


@st.composite
def qrels_files(draw) -> dict:
    """Qrels TSV: clean ones (an optional header, integer scores; read back exactly) and dirty
    ones (wrong field counts, non-integer scores, other separators, BOM, CRLF, non-UTF-8 bytes)."""
    if draw(st.booleans()):
        rows = draw(st.lists(st.tuples(st.sampled_from(QIDS), st.sampled_from(DIDS), st.integers(-2, 3)), max_size=8))
        header = draw(st.booleans())
        newline = draw(st.sampled_from(["\n", "\r\n"]))
        text = ("query-id\tcorpus-id\tscore" + newline if header else "") + "".join(f"{q}\t{d}\t{s}{newline}" for q, d, s in rows)
        expected: dict[str, dict[str, int]] = {}
        for q, d, s in rows:
            expected.setdefault(q, {})[d] = s
        return {"data": (BOM if draw(st.booleans()) else "").encode() + text.encode(), "expected": expected}
    field = st.sampled_from(QIDS + DIDS + ["", " ", "1", "-1", "+2", "1.5", "score", "ü", "1 2"]) | st.text(max_size=5)
    row = st.lists(field, min_size=1, max_size=4)
    rows = draw(st.lists(row, max_size=6))
    sep = draw(st.sampled_from(["\t", "\t", " ", ",", "\t\t"]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = "".join(sep.join(r) + newline for r in rows)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    data = text.encode(encoding, errors="replace") + draw(st.sampled_from([b"", b"\xff\xfe", b"q1\td1\t\xe9"]))
    return {"data": data, "expected": None}


@reproducers(
    {"case": {"data": b"q1\td1\t\xe9\n", "expected": None}},  # UnicodeDecodeError from read_qrels
)
@fuzz(1.0)
@given(case=qrels_files())
def test_read_qrels(tmp_path, case):
    """read_qrels: clean files read back exactly; others read or raise TextMatchError."""
    from textmatch.retrieval.beir import read_qrels

    ex = Example(tmp_path)
    try:
        ex.input.mkdir()
        path = ex.input / "test.tsv"
        path.write_bytes(case["data"])

        def read() -> None:
            qrels = read_qrels(path)
            assert all(isinstance(q, str) and all(isinstance(d, str) and isinstance(s, int) for d, s in docs.items())
                       for q, docs in qrels.items())
            if case["expected"] is not None:
                assert qrels == case["expected"]

        error = check_reader("test_read_qrels", ex, read)
        assert case["expected"] is None or error is None, f"a clean qrels file was refused: {error}"
    finally:
        ex.remove()


@st.composite
def jsonl_tables(draw, ids: list[str]) -> bytes | None:
    """corpus.jsonl / queries.jsonl contents: None (missing), valid rows over `ids`, rows with
    mistyped or missing fields (ids as ints, lists, objects, null; duplicates), or random bytes."""
    kind = draw(st.sampled_from(["valid", "valid", "typed", "bytes", "missing"]))
    if kind == "missing":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "valid":
        chosen = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=4, unique=True))
        rows = [{"_id": i, "title": draw(CLEAN_TEXT), "text": draw(CLEAN_TEXT)} for i in chosen]
    else:
        value = json_values(max_leaves=3) | st.sampled_from(ids) | st.integers(0, 3)
        record = st.dictionaries(st.sampled_from(["_id", "title", "text", "id"]), value, max_size=4)
        rows = draw(st.lists(record | json_values(max_leaves=2), max_size=4))
    return "".join(dump_json(r) + "\n" for r in rows).encode("utf-8", errors="surrogatepass")


@st.composite
def beir_folders(draw) -> dict:
    """A consistent BEIR folder (a few documents and queries, qrels naming some of them and
    maybe unknown ids), then none, one or two of its parts replaced by a dirty or missing one,
    or another split asked for."""
    docs = draw(st.lists(st.sampled_from(DIDS), min_size=1, max_size=4, unique=True))
    queries = draw(st.lists(st.sampled_from(QIDS), min_size=1, max_size=3, unique=True))
    pairs = draw(st.lists(st.tuples(st.sampled_from(queries + ["q-unknown"]), st.sampled_from(docs + ["d-unknown"]),
                                    st.integers(0, 2)), min_size=1, max_size=6))
    case = {
        "corpus": "".join(dump_json({"_id": d, "title": draw(CLEAN_TEXT), "text": draw(CLEAN_TEXT)}) + "\n" for d in docs).encode(),
        "queries": "".join(dump_json({"_id": q, "text": draw(CLEAN_TEXT)}) + "\n" for q in queries).encode(),
        "qrels": ("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in pairs)).encode(),
        "split": "test",
    }
    for part in draw(st.lists(st.sampled_from(["corpus", "queries", "qrels", "split"]), max_size=2, unique=True)):
        if part == "split":
            case["split"] = draw(st.sampled_from(["dev", "", "../test", "test/../test"]))
        elif part == "qrels":
            case["qrels"] = draw(st.none() | qrels_files().map(lambda c: c["data"]))
        else:
            case[part] = draw(jsonl_tables(DIDS if part == "corpus" else QIDS))
    return case


BEIR_CORPUS = b'{"_id": "d1", "text": "a b"}\n'
BEIR_QUERIES = b'{"_id": "q1", "text": "a b"}\n'


@reproducers(
    # SIGSEGV in pyarrow.json.read_json (apache/arrow#47409): queries.jsonl starts with null
    {"case": {"corpus": BEIR_CORPUS, "queries": b"null\n", "qrels": b"q1\td1\t1\n", "split": "test"}, "streaming": False},
    # UnicodeDecodeError from read_qrels
    {"case": {"corpus": BEIR_CORPUS, "queries": BEIR_QUERIES, "qrels": b"q1\td1\t\xe9\n", "split": "test"}, "streaming": False},
    # TypeError from cast_column("_id", string) in _read_jsonl_table: an _id that is a list
    {"case": {"corpus": b'{"_id": ["d1"], "text": "a b"}\n', "queries": BEIR_QUERIES, "qrels": b"q1\td1\t1\n", "split": "test"},
         "streaming": False},
)
@fuzz(0.75)
@given(case=beir_folders(), streaming=st.booleans())
def test_load_beir(tmp_path, global_cache, case, streaming):
    """load_beir: loads (every kept qrels pair names a known query and document, the queries are
    the ones with qrels) or raises TextMatchError."""
    from textmatch.data import column_values
    from textmatch.retrieval.beir import load_beir

    ex = Example(tmp_path)
    try:
        ex.input.mkdir()
        for name in ("corpus", "queries"):
            if case[name] is not None:
                (ex.input / f"{name}.jsonl").write_bytes(case[name])
        if case["qrels"] is not None:
            (ex.input / "qrels").mkdir()
            (ex.input / "qrels" / "test.tsv").write_bytes(case["qrels"])

        def read() -> None:
            data = load_beir(ex.input, case["split"], streaming=streaming, cache_dir=str(ex.cache))
            doc_ids = [row["_id"] for row in data.corpus] if streaming else column_values(data.corpus, "_id")
            query_ids = column_values(data.queries, "_id")
            assert all(isinstance(i, str) for i in doc_ids + query_ids)
            assert set(query_ids) == set(data.qrels) and data.qrels
            assert all(d in set(doc_ids) for docs in data.qrels.values() for d in docs)
            repr(data)

        check_reader("test_load_beir", ex, read, global_cache)
    finally:
        ex.remove()


# ===================================================================================================
# 3b. class split label files: class_split_from_files (read_label_file)
# ===================================================================================================
@st.composite
def label_folders(draw) -> dict:
    """labels.train/valid/test.txt: clean disjoint lists (read back exactly, whatever the line
    ends, BOM or blank lines) or dirty files (random bytes, other encodings, repeated or
    shared labels, blank files, a missing file)."""
    files, expected = {}, None
    if draw(st.booleans()):
        labels = draw(st.lists(CLEAN_LABEL, min_size=3, max_size=9, unique=True))
        cut1 = draw(st.integers(1, len(labels) - 2))
        cut2 = draw(st.integers(cut1 + 1, len(labels) - 1))
        expected = {"train": labels[:cut1], "valid": labels[cut1:cut2], "test": labels[cut2:]}
        newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        for name, items in expected.items():
            text = newline.join(f"  {y} " for y in items) + draw(st.sampled_from(["", newline, newline * 3]))
            files[name] = ((BOM if draw(st.booleans()) else "") + text).encode("utf-8")
    else:
        line = CELL | st.sampled_from(["a", "b", "c"])
        for name in ("train", "valid", "test"):
            kind = draw(st.sampled_from(["lines", "lines", "bytes", "missing"]))
            if kind == "lines":
                text = "\n".join(draw(st.lists(line, max_size=4)))
                files[name] = text.encode(draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])), errors="replace")
            elif kind == "bytes":
                files[name] = draw(st.binary(max_size=40))
    return {"files": files, "expected": expected}


@reproducers(
    {"case": {"files": {"train": b"a", "valid": b"\xff\xfe", "test": b"c"}, "expected": None}},  # UnicodeDecodeError
)
@fuzz(1.0)
@given(case=label_folders())
def test_class_split_files(tmp_path, case):
    """class_split_from_files: clean label files read back exactly; others read (disjoint,
    non-empty lists of labels) or raise TextMatchError."""
    from textmatch import class_split_from_files

    ex = Example(tmp_path)
    try:
        ex.input.mkdir()
        for name, data in case["files"].items():
            (ex.input / f"labels.{name}.txt").write_bytes(data)

        def read() -> None:
            split = class_split_from_files(ex.input)
            lists = split.to_dict()
            assert all(lists[name] and all(isinstance(y, str) and y == y.strip() and y for y in lists[name]) for name in lists)
            assert len(set(split.classes)) == len(split.classes)
            if case["expected"] is not None:
                assert lists == case["expected"]

        error = check_reader("test_class_split_files", ex, read)
        assert case["expected"] is None or error is None, f"clean label files were refused: {error}"
    finally:
        ex.remove()


# ===================================================================================================
# 4 and 5. model and index folders: mutations of a valid save
# ===================================================================================================
MANIFEST = "textmatch-manifest.json"
SAMPLE_TEXTS = ["rain today please", "pizza for dinner"]

# Model values stay small: a config asking for a billion layers is a denial of service, not a
# parse error, and would take this machine down; that is out of scope here.
SMALL_JSON = json_values(
    ints=st.integers(-3, 48),
    floats=st.floats(-50, 50) | st.sampled_from([math.nan, math.inf, -math.inf]),
    strings=st.text(max_size=8) | st.sampled_from(
        ["mean", "cls", "max", "cosine", "euclidean", "prototype", "none", "bert", "bilstm", "transformer",
         "probability", "similarity", "exact", "flat", "lucene", "text", "label", "d1", "0", "textmatch"]
    ),
    max_leaves=6,
)
DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool"]  # torch's
NPY_DTYPES = ["float32", "float64", "float16", "int64", "int8", "bool", "complex64", "<U3", "object"]


def mutations(files: list[str], focus: list[str]) -> st.SearchStrategy:
    """One change to one file of a saved folder, as a plain tuple (so failures print as data);
    half of the changes go to the `focus` files (the metadata that says how to read the rest)."""
    rel = st.sampled_from(files) | st.sampled_from(focus)
    path = st.lists(st.integers(0, 20), max_size=4)
    return st.one_of(
        st.tuples(st.just("truncate"), rel, st.floats(0, 1)),
        st.tuples(st.just("flip"), rel, st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), min_size=1, max_size=4)),
        st.tuples(st.just("bytes"), rel, st.binary(max_size=64)),
        st.tuples(st.just("json"), rel, SMALL_JSON),
        st.tuples(st.just("edit"), rel, path, st.sampled_from(["set", "delete", "duplicate"]), SMALL_JSON),
        st.tuples(st.just("delete"), rel),
        st.tuples(st.just("lines"), rel, st.integers(0, 6)),
        st.tuples(st.just("npy"), rel, st.integers(-2, 2), st.integers(-2, 2), st.sampled_from([1, 2, 3]),
                  st.sampled_from(NPY_DTYPES), st.sampled_from(["random", "nan", "zeros"])),
        st.tuples(st.just("safetensors"), rel, st.booleans(),
                  st.lists(st.tuples(st.integers(0, 40), st.booleans(), st.sampled_from(["same", "scalar", "grow", "shrink", "empty"]),
                                     st.sampled_from(DTYPES)), min_size=1, max_size=3)),
        st.tuples(st.just("json"), st.just(JOURNAL), JOURNALS),
    )


# An interrupted save leaves a journal that the next load rolls forward (textmatch.files), so a
# folder from elsewhere may carry one: well-formed or not, naming files inside the folder or
# (at most two levels up, still inside the test's folder) outside it.
JOURNAL = ".textmatch-journal.json"
_JOURNAL_PATHS = st.sampled_from(
    ["config.json", "model.safetensors", "index.json", "ids.json", "x.txt", "sub/x", "../x", "../../x", "", ".", "a\\b"]
)
STAGING = ".textmatch-staging-1"
JOURNALS = SMALL_JSON | st.fixed_dictionaries({
    "staging": st.sampled_from([STAGING, STAGING, "", ".", "..", "../..", "config.json"]) | SMALL_JSON,
    "files": st.lists(_JOURNAL_PATHS, max_size=3) | SMALL_JSON,
    "remove": st.lists(_JOURNAL_PATHS, max_size=3) | SMALL_JSON,
    "manifest": st.fixed_dictionaries({"format": st.just(1), "kind": st.sampled_from(["model", "index"]),
                                       "files": st.dictionaries(_JOURNAL_PATHS, SMALL_JSON, max_size=2)}) | SMALL_JSON,
})


def folder_cases(files: list[str], focus: list[str]) -> st.SearchStrategy:
    """(mutations, manifest mode): the manifest is kept (the load must then fail, after the
    parsers ran), deleted, or rewritten to match (more often: the folder then may load)."""
    return st.tuples(
        st.lists(mutations(files, focus), min_size=1, max_size=2),
        st.sampled_from(["keep", "delete", "rewrite", "rewrite"]),
    )


def _edit_json(doc: Any, path: list, action: str, value: Any) -> Any:
    """`doc` with the node that `path` leads to (each step picks a key or an item, modulo the
    size; a string step names a key) set to `value`, deleted, or duplicated (in a list)."""
    parent, key, node = None, None, doc
    for step in path:
        if isinstance(step, str):
            if not (isinstance(node, dict) and step in node):
                break
            k = step
        elif isinstance(node, dict) and node:
            k = sorted(node)[step % len(node)]
        elif isinstance(node, list) and node:
            k = step % len(node)
        else:
            break
        parent, key, node = node, k, node[k]
    if parent is None:
        return value if action == "set" else ([] if isinstance(doc, list) else {})
    if action == "delete":
        parent.pop(key)
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(node))
    else:
        parent[key] = value
    return doc


def _write_array(path: Path, shape: tuple[int, ...], dtype: str, fill: str) -> None:
    import numpy as np

    rng = np.random.default_rng(len(shape) + sum(shape))
    if dtype == "object":
        np.save(path, np.empty(shape, dtype=object), allow_pickle=True)
        return
    values = rng.standard_normal(shape) * 3
    if fill == "nan":
        values[...] = np.nan
    elif fill == "zeros":
        values[...] = 0
    with np.errstate(invalid="ignore"):  # NaN cast to an integer dtype: whatever it gives
        array = values.astype(dtype) if dtype != "<U3" else values.astype(str).astype("<U3")
    np.save(path, array, allow_pickle=False)


def _write_safetensors(path: Path, keep_others: bool, tensors: list) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    try:
        original = load_file(str(path))
    except Exception:  # noqa: BLE001 - an earlier mutation damaged it: start empty
        original = {}
    names = sorted(original)
    out = dict(original) if keep_others else {}
    for pick, real_name, shape_mode, dtype in tensors:
        name = names[pick % len(names)] if real_name and names else f"junk.{pick}"
        shape = tuple(original[name].shape) if name in original else (2, 3)
        shape = {"same": shape, "scalar": (), "grow": tuple(s + 1 for s in shape) or (1,),
                 "shrink": tuple(max(0, s - 1) for s in shape), "empty": (0,)}[shape_mode]
        out[name] = (torch.randn(shape) * 2).to(getattr(torch, dtype))
    save_file(out, str(path))


def apply_mutation(folder: Path, mutation: tuple) -> None:
    """Apply one mutation tuple (see `mutations`) to the file it names in `folder`."""
    op, rel = mutation[0], mutation[1]
    path = folder / rel
    old = path.read_bytes() if path.is_file() else b""
    if op != "delete":
        path.parent.mkdir(parents=True, exist_ok=True)
    if op == "truncate":
        path.write_bytes(old[: int(len(old) * mutation[2])])
    elif op == "flip":
        data = bytearray(old)
        for where, mask in mutation[2]:
            if data:
                data[min(int(where * len(data)), len(data) - 1)] ^= mask
        path.write_bytes(bytes(data))
    elif op == "bytes":
        path.write_bytes(mutation[2])
    elif op == "json":
        path.write_text(dump_json(mutation[2]), encoding="utf-8")
        value = mutation[2]
        if rel == JOURNAL and isinstance(value, dict) and value.get("staging") == STAGING and isinstance(value.get("files"), list):
            for name in value["files"]:  # the staged files of the interrupted save (names inside only)
                if isinstance(name, str) and name not in ("", ".") and ".." not in name.split("/"):
                    (folder / STAGING / name).parent.mkdir(parents=True, exist_ok=True)
                    (folder / STAGING / name).write_bytes(f"staged {name}".encode())
    elif op == "edit":
        try:
            text = old.decode("utf-8")
            doc = [json.loads(line) for line in text.splitlines() if line.strip()] if rel.endswith(".jsonl") else json.loads(text)
        except ValueError:
            doc = None
        doc = _edit_json(doc, mutation[2], mutation[3], mutation[4])
        if rel.endswith(".jsonl") and isinstance(doc, list):
            path.write_text("".join(dump_json(row) + "\n" for row in doc), encoding="utf-8")
        else:
            path.write_text(dump_json(doc), encoding="utf-8")
    elif op == "delete":
        path.unlink(missing_ok=True)
    elif op == "lines":
        path.write_bytes(b"".join(old.splitlines(keepends=True)[: mutation[2]]))
    elif op == "npy":
        import numpy as np

        try:
            shape = np.load(path, allow_pickle=False).shape
        except Exception:  # noqa: BLE001 - not an array (any more)
            shape = (3, 4)
        rows, cols, ndim, dtype, fill = mutation[2:]
        base = (list(shape) + [4, 4])[:2]
        new = [max(0, base[0] + rows), max(0, base[1] + cols), 2][:ndim]
        _write_array(path, tuple(new), dtype, fill)
    elif op == "safetensors":
        _write_safetensors(path, mutation[2], mutation[3])
    else:  # pragma: no cover
        raise AssertionError(op)


def has_journal(case: tuple) -> bool:
    """True when the case writes a journal: loading then finishes the "interrupted save" it
    describes, so the folder itself may change (but nothing outside it, and not the user's
    own files in it: see FOREIGN)."""
    return any(mutation[1] == JOURNAL for mutation in case[0])


# A file of the user's in every mutated folder: textmatch never deletes nor changes what it did
# not write, even when it finishes an interrupted save.
FOREIGN = ("my-notes.txt", b"the user's own file\n")


def apply_case(source: Path, target: Path, case: tuple) -> None:
    """Copy the saved folder `source` to `target`, mutate it, then keep, delete or rewrite its manifest."""
    shutil.copytree(source, target)
    (target / FOREIGN[0]).write_bytes(FOREIGN[1])
    changes, manifest_mode = case
    for mutation in changes:
        apply_mutation(target, mutation)
    manifest_path = target / MANIFEST
    if manifest_mode == "delete":
        manifest_path.unlink(missing_ok=True)
    elif manifest_mode == "rewrite" and (source / MANIFEST).is_file():  # checksums as the files are now
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
        files = {}
        for rel, entry in manifest["files"].items():
            path = target / rel
            if path.is_file():
                files[rel] = {**entry, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": path.stat().st_size}
        manifest["files"] = files
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


class _TimeWithoutSleep:
    """The time module, except that sleep returns at once (read_consistent waits before retrying
    a folder whose checksums differ; a damaged folder would cost 0.3 s per example)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        return None


@pytest.fixture
def no_retry_wait(monkeypatch):
    import textmatch.files

    monkeypatch.setattr(textmatch.files, "time", _TimeWithoutSleep())


# -- model folders -----------------------------------------------------------------------------------
MODEL_FILES = {
    "bilstm": [
        "config.json", "model.safetensors", "support_set.json", "support_embeddings.safetensors", "README.md",
        "query_encoder/tokenizer.json", "query_encoder/tokenizer_config.json", MANIFEST,
    ],
    "bert": [
        "config.json", "model.safetensors", "support_set.json", "support_embeddings.safetensors", "README.md",
        "query_encoder/config.json", "query_encoder/tokenizer.json", "query_encoder/tokenizer_config.json",
        "support_encoder/config.json", "support_encoder/tokenizer.json", "support_encoder/tokenizer_config.json",
        MANIFEST,
    ],
    "plain": ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],  # no manifest
}
# Files a mutation may create: a plain folder may be a sentence-transformers one.
MODEL_EXTRA_FILES = {"bilstm": [], "bert": [], "plain": ["modules.json", "sentence_bert_config.json", "1_Pooling/config.json"]}
MODEL_FOCUS = {
    "bilstm": ["config.json", "support_set.json", "query_encoder/tokenizer_config.json"],
    "bert": ["config.json", "support_set.json", "query_encoder/config.json", "support_encoder/tokenizer_config.json"],
    "plain": ["config.json", "tokenizer_config.json", "modules.json", "sentence_bert_config.json"],
}


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, tiny_tokenizer_dir, tiny_bert_dir) -> dict[str, Path]:
    """Valid model folders: a BiLSTM saved by textmatch (f = g, shared weights), a tiny BERT
    saved by textmatch with separate f and g (so query_encoder/ and support_encoder/ hold
    transformers config files), and the plain transformers folder of that BERT."""
    import torch
    from conftest import make_sentences
    from transformers import AutoTokenizer

    from textmatch import BiLSTMEncoder, MatchingNetwork, MatchingNetworkConfig

    texts, labels = make_sentences(2, seed=3)
    root = tmp_path_factory.mktemp("fuzz_models")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    encoder = BiLSTMEncoder.from_tokenizer(tok, embedding_dim=16, hidden_size=16, dropout=0.0, max_length=32)
    bilstm = MatchingNetwork(encoder, config=MatchingNetworkConfig(temperature=0.1))
    bilstm.fit(texts, labels).save_pretrained(root / "bilstm")
    bert = MatchingNetwork.from_pretrained(str(tiny_bert_dir), share_weights=False)
    bert.fit(texts, labels).save_pretrained(root / "bert")
    shutil.copytree(tiny_bert_dir, root / "plain")
    return {"bilstm": root / "bilstm", "bert": root / "bert", "plain": root / "plain"}


def test_mutation_targets_match_the_saved_folders(saved_models, saved_index):
    """The file lists the fuzzers mutate are the files a save writes (update them when it changes)."""
    for name, folder in saved_models.items():
        on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        assert on_disk == sorted(MODEL_FILES[name])
        assert not set(MODEL_EXTRA_FILES[name]) & set(on_disk)
    _, folder = saved_index
    on_disk = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert on_disk == sorted(INDEX_FILES)


MODEL_CASES = st.sampled_from(sorted(MODEL_FILES)).flatmap(
    lambda name: st.tuples(
        st.just(name), folder_cases(MODEL_FILES[name] + MODEL_EXTRA_FILES[name], MODEL_FOCUS[name])
    )
)


def journal(staging: Any, files: Any = (), remove: Any = (), manifest: Any = None) -> tuple:
    """A mutation writing an interrupted save's journal."""
    content = {"staging": staging, "files": list(files), "remove": list(remove), "manifest": manifest}
    return ("json", JOURNAL, content)


@reproducers(
    # AttributeError from AutoTokenizer (BiLSTMEncoder.from_saved catches only OSError, ValueError)
    {"case": ("bilstm", ([("json", "query_encoder/tokenizer_config.json", None)], "keep"))},
    # AttributeError from AutoTokenizer (TransformerEncoder.from_saved)
    {"case": ("bert", ([("json", "support_encoder/tokenizer_config.json", None)], "keep"))},
    {"case": ("bert", ([("json", "query_encoder/tokenizer.json", "probability")], "keep"))},
    # StrictDataclassFieldValidationError from AutoConfig: a transformers config field of the wrong type
    {"case": ("bert", ([("edit", "query_encoder/config.json", ["add_cross_attention"], "set", None)], "keep"))},
    # TypeError from nn.Parameter(requires_grad=None): matching.learn_temperature is null
    {"case": ("bert", ([("edit", "config.json", ["matching", "learn_temperature"], "set", None)], "keep"))},
    # RuntimeError from F.normalize: cached support embeddings of the right shape but dtype int64
    {"case": ("bilstm", ([("safetensors", "support_embeddings.safetensors", False, [(0, True, "same", "int64")])], "rewrite"))},
    # KeyError / TypeError from recovering a damaged journal; a staging "." removed the whole folder
    {"case": ("bert", ([("json", JOURNAL, {})], "keep"))},
    {"case": ("bert", ([("json", JOURNAL, None)], "keep"))},
    {"case": ("bert", ([journal(None)], "keep"))},
    {"case": ("bilstm", ([journal(".", manifest={})], "keep"))},
)
@fuzz(1.5)
@given(case=MODEL_CASES)
def test_model_folder(tmp_path, saved_models, no_retry_wait, case):
    """MatchingNetwork.from_pretrained on a mutated save: loads (and then predicts a class of the
    support set, or raises TextMatchError) or raises TextMatchError."""
    from textmatch import MatchingNetwork

    name, folder_case = case
    ex = Example(tmp_path)
    try:
        apply_case(saved_models[name], ex.input, folder_case)

        def read() -> dict:
            model = MatchingNetwork.from_pretrained(str(ex.input))
            try:
                predictions = model.predict(SAMPLE_TEXTS)
            except TextMatchError:
                return {"loaded": 1, "predict: TextMatchError": 1}
            assert len(predictions) == len(SAMPLE_TEXTS)
            assert all(p in model.classes_ or p == model.config.oos_label for p in predictions)
            return {"loaded": 1}

        check_reader("test_model_folder", ex, read, input_may_change=has_journal(folder_case))
    finally:
        ex.remove()


# -- index folders -----------------------------------------------------------------------------------
INDEX_FILES = [
    "index.json", "passages.jsonl", "passage_stats.npy", "ids.json", "vectors.npy", MANIFEST,
    "bm25/textmatch_bm25.json", "bm25/documents.jsonl", "bm25/params.index.json", "bm25/vocab.index.json",
    "bm25/data.csc.index.npy", "bm25/indices.csc.index.npy", "bm25/indptr.csc.index.npy",
]
INDEX_FOCUS = ["index.json", "passages.jsonl", "passage_stats.npy", "ids.json", "vectors.npy"]


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory, tiny_tokenizer_dir) -> tuple[Any, Path]:
    """(model, folder): a valid exact index with BM25 over a few documents, and its model."""
    pytest.importorskip("bm25s", reason="the index's hybrid search needs bm25s")
    import torch
    from conftest import TOPICS
    from transformers import AutoTokenizer

    from textmatch import BiLSTMEncoder, MatchingNetwork, MatchingNetworkConfig
    from textmatch.retrieval.retriever import IndexConfig, Retriever

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    encoder = BiLSTMEncoder.from_tokenizer(tok, embedding_dim=16, hidden_size=16, dropout=0.0, max_length=32)
    model = MatchingNetwork(encoder, config=MatchingNetworkConfig(temperature=0.1))
    docs = [{"_id": f"{topic}-{j}", "title": topic, "text": " ".join(words[j:j + 3])}
            for topic, words in TOPICS.items() for j in range(2)]
    folder = tmp_path_factory.mktemp("fuzz_index") / "index"
    Retriever.build(model, docs, folder, IndexConfig(index_kind="exact"), show_progress_bar=False)
    return model, folder


@reproducers(
    {"case": ([("json", "index.json", None)], "keep")},  # AttributeError: meta.get on a JSON null
    {"case": ([("bytes", "index.json", b"\x80")], "keep")},  # UnicodeDecodeError in read_index_meta
    {"case": ([("edit", "index.json", ["config", "batch_size"], "set", "mean")], "keep")},  # TypeError in IndexConfig
    {"case": ([("edit", "index.json", ["model_fingerprint"], "delete", None)], "keep")},  # KeyError
    {"case": ([("truncate", "vectors.npy", 0.0)], "keep")},  # EOFError from np.load (only ValueError, OSError caught)
    # BM25Index.load: its own files
    {"case": ([("json", "bm25/textmatch_bm25.json", None)], "keep")},  # AttributeError
    {"case": ([("truncate", "bm25/textmatch_bm25.json", 0.0)], "keep")},  # JSONDecodeError
    {"case": ([("edit", "bm25/textmatch_bm25.json", ["stemmer"], "set", [])], "delete")},  # AttributeError in Stemmer
    {"case": ([("edit", "bm25/textmatch_bm25.json", ["k1"], "delete", None)], "delete")},  # KeyError
    {"case": ([("delete", "bm25/documents.jsonl")], "keep")},  # FileNotFoundError
    {"case": ([("json", "bm25/documents.jsonl", None)], "keep")},  # TypeError
    {"case": ([("bytes", "bm25/documents.jsonl", b"\x80")], "keep")},  # UnicodeDecodeError
    # BM25Index.load: bm25s's files (bm25s.BM25.load raises its own errors)
    {"case": ([("delete", "bm25/params.index.json")], "keep")},  # FileNotFoundError
    {"case": ([("flip", "bm25/data.csc.index.npy", [(0.0, 1)])], "keep")},  # ValueError
    {"case": ([("json", "bm25/vocab.index.json", None)], "keep")},  # AttributeError
    # IndexError from search: bm25s arrays that load but do not fit together
    {"case": ([("npy", "bm25/indices.csc.index.npy", 2, 0, 3, "bool", "random")], "rewrite")},
    # TypeError from search (int(None) in Retriever._collapse): a BM25 document id that is null
    {"case": ([("edit", "bm25/documents.jsonl", [0, "id"], "set", None)], "rewrite")},
    # a journal whose staging is the folder itself
    {"case": ([("json", JOURNAL, {"staging": ".", "files": [], "remove": [], "manifest": {}})], "keep")},
)
@fuzz(1.5)
@given(case=folder_cases(INDEX_FILES, INDEX_FOCUS))
def test_index_folder(tmp_path, saved_index, no_retry_wait, case):
    """Retriever.load on a mutated index: loads (and then each search mode returns known
    documents with float scores, or raises TextMatchError) or raises TextMatchError."""
    from textmatch.retrieval.retriever import Retriever

    model, source = saved_index
    ex = Example(tmp_path)
    try:
        apply_case(source, ex.input, case)

        def read() -> dict:
            retriever = Retriever.load(ex.input, model=model)
            counts = {"loaded": 1}
            for mode in ("dense", "bm25", "hybrid"):
                try:
                    hits = retriever.search(["rain today"], top_k=3, mode=mode)
                except TextMatchError:
                    counts[f"search {mode}: TextMatchError"] = 1
                    continue
                assert len(hits) == 1 and len(hits[0]) <= 3
                ids = [doc for doc, _ in hits[0]]
                assert len(set(ids)) == len(ids) and set(ids) <= set(retriever.passage_docs)
                assert all(isinstance(doc, str) and isinstance(score, float) for doc, score in hits[0])
            return counts

        check_reader("test_index_folder", ex, read, input_may_change=has_journal(case))
    finally:
        ex.remove()
