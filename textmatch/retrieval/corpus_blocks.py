"""A corpus cut into input blocks: what the Ray engine reads, splits, encodes and resumes by.

`plan_blocks` cuts a corpus into blocks of about `block_size` documents without reading the
documents themselves where the format allows it, and `read_block` reads one block's documents
(in the worker that encodes it). The blocks are fixed by the corpus alone, so a rerun after an
interruption finds the same blocks and skips the finished ones; read one after the other, they
give the documents in the order `read_corpus` streams them, so both engines index the same
passages at the same positions.

| source | block | planning reads |
|---|---|---|
| .jsonl file | a byte range: the lines that start in it | the first MiB (mean line length) |
| .parquet file | a row range | the footer (row count) |
| .csv / .tsv / .json file | a row range | the whole file once (row count); each block re-reads the rows before it |
| folder of such files | the above, per file, in name order | as above |
| folder of .txt / .md files | a range of files | the file list |
| `datasets.Dataset` saved on disk, or a Hub name | a row range | nothing (Arrow, memory-mapped) |
| list of dicts, in-memory `datasets.Dataset` | a row range, carried with the block | all of it (to name the plan) |

A corpus in one large CSV or JSON array file is better converted to JSONL or Parquet first: the
block of rows 9,000,000 on has to parse the 9 million rows before it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TextMatchError
from .corpus import (
    DATA_SUFFIXES,
    data_files,
    read_corpus,
    row_document,
    text_file_document,
    text_files,
)

PROBE_BYTES = 1 << 20  # the head of a JSONL file whose mean line length sizes its byte ranges


@dataclass(frozen=True)
class CorpusColumns:
    """Where the documents' fields are (as in read_corpus) and whether a folder's symbolic links
    that lead outside it are followed."""

    id_column: str = "_id"
    title_column: str = "title"
    text_column: str = "text"
    follow_symlinks: bool = False


@dataclass(frozen=True, eq=False)
class CorpusBlock:
    """Input block `number` (corpus order) of kind "lines" (bytes start..stop of the JSONL file
    `path`), "parquet" / "rows" (rows start..stop of `path`), "texts" (the text files `files`
    of the folder `path`), "dataset" (rows start..stop of the datasets.Dataset `data`) or
    "memory" (the rows `data` themselves)."""

    number: int
    kind: str
    path: str
    start: int
    stop: int
    files: tuple[str, ...] = ()
    data: Any = field(default=None, repr=False)

    def name(self) -> str:
        """A short description for messages: file and range."""
        where = Path(self.path).name if self.path else "the dataset"
        unit = "bytes" if self.kind == "lines" else "files" if self.kind == "texts" else "rows"
        return f"{where} {unit} {self.start}..{self.stop}"


@dataclass
class CorpusPlan:
    """The blocks of a corpus in order, and a digest that changes when the corpus does."""

    blocks: list[CorpusBlock]
    digest: str


def plan_blocks(source: Any, block_size: int = 1000, columns: CorpusColumns | None = None,
                split: str | None = None) -> CorpusPlan:
    """Cut `source` (any corpus read_corpus takes, except a streamed Hub dataset) into blocks of
    about `block_size` documents; see the table in the module docstring."""
    import datasets

    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise TextMatchError(f"block_size must be a positive integer, got {block_size!r}")
    columns = columns or CorpusColumns()
    digest = hashlib.sha256()
    blocks: list[CorpusBlock] = []

    def add(kind: str, path: str, start: int, stop: int, **extra: Any) -> None:
        blocks.append(CorpusBlock(len(blocks), kind, path, start, stop, **extra))

    if isinstance(source, datasets.IterableDataset):
        raise TextMatchError("the Ray engine cuts the corpus into blocks and cannot cut a streamed dataset; "
                             "load it without streaming=True, or save it as Parquet / JSONL files")
    if isinstance(source, datasets.DatasetDict):
        source = _pick_split(source, split, "the dataset")
    if isinstance(source, (list, tuple)) or (isinstance(source, datasets.Dataset) and not source.cache_files):
        rows = [dict(row) for row in source]
        digest.update(json.dumps(rows, sort_keys=True, default=str).encode("utf-8"))
        for start in range(0, len(rows), block_size):
            add("memory", "", start, min(start + block_size, len(rows)), data=rows[start : start + block_size])
        return _finish(blocks, digest)
    if isinstance(source, datasets.Dataset):
        _dataset_blocks(source, block_size, add, digest)
        return _finish(blocks, digest)
    path = Path(str(source)).expanduser()
    if path.is_dir() and (path / "corpus.jsonl").is_file():
        path = path / "corpus.jsonl"
    if path.is_dir():
        listed = text_files(path, columns.follow_symlinks)
        if data_files(path) and not listed:
            for file in data_files(path):
                _file_blocks(file, block_size, columns, add, digest)
            return _finish(blocks, digest)
        if not listed:
            raise TextMatchError(f"{path} holds no data files, no .txt / .md files and no corpus.jsonl")
        for start in range(0, len(listed), block_size):
            chunk = tuple(str(p) for p in listed[start : start + block_size])
            add("texts", str(path), start, start + len(chunk), files=chunk)
        for p in listed:
            _stamp(digest, p)
        return _finish(blocks, digest)
    if path.is_file():
        _file_blocks(path, block_size, columns, add, digest)
        return _finish(blocks, digest)
    if str(source).startswith((".", "/", "~")) or path.suffix:
        raise TextMatchError(f"corpus {str(source)!r} does not exist; check the path")
    try:
        loaded = datasets.load_dataset(str(source))
    except Exception as exc:  # noqa: BLE001
        raise TextMatchError(f"cannot read corpus {str(source)!r}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    _dataset_blocks(_pick_split(loaded, split, repr(str(source))), block_size, add, digest)
    return _finish(blocks, digest)


def read_block(block: CorpusBlock, columns: CorpusColumns | None = None) -> list[dict[str, str]]:
    """The documents {"_id", "title", "text"} of `block`, in corpus order (documents without
    text are kept: the caller skips and counts them)."""
    columns = columns or CorpusColumns()
    fields = (columns.id_column, columns.title_column, columns.text_column)
    if block.kind == "lines":
        return _read_lines(Path(block.path), block.start, block.stop, fields)
    if block.kind == "texts":
        return [text_file_document(Path(block.path), Path(f)) for f in block.files]
    if block.kind == "parquet":
        rows = _parquet_rows(Path(block.path), block.start, block.stop)
    elif block.kind == "rows":
        stream = read_corpus(block.path, *fields)
        return list(itertools.islice(stream, block.start, block.stop))
    elif block.kind == "dataset":
        batch = block.data[block.start : block.stop]  # {column: values}
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    elif block.kind == "memory":
        rows = block.data
    else:
        raise TextMatchError(f"unknown block kind {block.kind!r}")
    return [row_document(dict(row), *fields, block.start + i) for i, row in enumerate(rows)]


def _finish(blocks: list[CorpusBlock], digest: Any) -> CorpusPlan:
    if not blocks:
        raise TextMatchError("the corpus has no documents with text; nothing to index")
    for block in blocks:
        digest.update(f"{block.kind}|{block.path}|{block.start}|{block.stop}|{len(block.files)}\n".encode("utf-8"))
    return CorpusPlan(blocks, digest.hexdigest())


def _stamp(digest: Any, path: Path) -> None:
    """Name a file by path, size and modification time (a changed file changes the plan)."""
    stat = path.stat()
    digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode("utf-8"))


def _pick_split(loaded: Any, split: str | None, source: str) -> Any:
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    names = list(loaded)
    pick = split or next((n for n in ("corpus", "train") if n in names), None)
    if pick not in names:
        raise TextMatchError(f"corpus {source} has splits {names}; pick one with --split")
    return loaded[pick]


def _dataset_blocks(dataset: Any, block_size: int, add: Any, digest: Any) -> None:
    """Row ranges of a datasets.Dataset backed by Arrow files (pickled by reference to them)."""
    for entry in dataset.cache_files:
        _stamp(digest, Path(entry["filename"]))
    digest.update(f"{len(dataset)}|{dataset.column_names}\n".encode("utf-8"))
    for start in range(0, len(dataset), block_size):
        add("dataset", "", start, min(start + block_size, len(dataset)), data=dataset)


def _file_blocks(path: Path, block_size: int, columns: CorpusColumns, add: Any, digest: Any) -> None:
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise TextMatchError(f"{path}: unknown corpus file type {suffix!r}; use one of {list(DATA_SUFFIXES)}")
    _stamp(digest, path)
    if suffix == ".jsonl":
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(PROBE_BYTES)
        lines = max(1, head.count(b"\n") + (not head.endswith(b"\n")))
        step = max(1, round(len(head) / lines * block_size))  # bytes per block of about block_size lines
        for start in range(0, size, step):
            add("lines", str(path), start, min(start + step, size))
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            n = pq.ParquetFile(path).metadata.num_rows
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors, in our words
            raise TextMatchError(f"{path} is not a readable Parquet file ({exc})") from None
        for start in range(0, n, block_size):
            add("parquet", str(path), start, min(start + block_size, n))
    else:
        n = sum(1 for _ in read_corpus(path, columns.id_column, columns.title_column, columns.text_column))
        for start in range(0, n, block_size):
            add("rows", str(path), start, min(start + block_size, n))


def _read_lines(path: Path, start: int, stop: int, fields: tuple[str, str, str]) -> list[dict[str, str]]:
    """The JSON lines that start at a byte in start .. stop - 1 (a line that begins before
    `start` belongs to the block before)."""
    docs = []
    with open(path, "rb") as fh:
        if start > 0:
            fh.seek(start - 1)
            if fh.read(1) != b"\n":
                fh.readline()  # the rest of a line that began in the block before
        while fh.tell() < stop:
            at = fh.tell()
            line = fh.readline()
            if not line:
                break
            line = line.strip()
            if at == 0:
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not line:
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise TextMatchError(f"{path} byte {at}: not a JSON line ({exc}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise TextMatchError(f"{path} byte {at}: a JSON line must be an object, got {type(row).__name__}")
            docs.append(row_document(row, *fields, f"at byte {at} of {path.name}"))
    return docs


def _parquet_rows(path: Path, start: int, stop: int) -> list[dict[str, Any]]:
    """Rows start .. stop - 1 of a Parquet file, reading only the row groups they lie in."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    groups, first, offset = [], None, 0
    for g in range(parquet.metadata.num_row_groups):
        n = parquet.metadata.row_group(g).num_rows
        if offset + n > start and offset < stop:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    if not groups:
        return []
    table = parquet.read_row_groups(groups)
    return table.slice(start - first, stop - start).to_pylist()
