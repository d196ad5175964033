"""Document collections in, passages out.

`read_corpus` turns a BEIR folder, a JSONL/JSON/CSV/TSV/Parquet file, a folder of `.txt` /
`.md` files or a Hugging Face dataset into a stream of documents {"_id", "title", "text"}
(Hugging Face datasets are streamed, so a corpus need not fit in memory). `split_passages`
cuts a long document into overlapping windows of tokens; a document's score is later its best
passage's.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import TextMatchError

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst")
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def row_document(row: dict[str, Any], id_column: str, title_column: str, text_column: str, n: int | str) -> dict[str, str]:
    """Row `n` (a number, or where it is) of a data file or dataset as {"_id", "title",
    "text"} (strings), or a TextMatchError naming the missing column and the flag that names it."""
    doc_id = row.get(id_column, row.get("id") if id_column == "_id" else None)
    if doc_id is None:
        raise TextMatchError(
            f"document {n} has no {id_column!r} field; its fields are {sorted(row)}: "
            "name the id column with --id-column (id_column=)"
        )
    if text_column not in row:
        raise TextMatchError(
            f"document {n} has no {text_column!r} field; its fields are {sorted(row)}: "
            "name the text column with --text-column (text_column=)"
        )
    title = row.get(title_column) or ""
    text = row.get(text_column) or ""
    return {"_id": str(doc_id), "title": str(title), "text": str(text)}


def data_files(folder: Path) -> list[Path]:
    """The data files (.jsonl, .json, .csv, .tsv, .parquet) directly in `folder`, sorted: a
    corpus split over several files is read file after file in this order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in DATA_SUFFIXES and p.is_file())


def text_files(folder: Path, follow_symlinks: bool) -> list[Path]:
    """The .txt / .md / ... files below `folder`, sorted. A symbolic link (to a file or a folder)
    that leads outside `folder` is skipped, with one warning that counts them, unless
    `follow_symlinks`: a corpus folder must not pull in, say, the system's password file."""
    root = folder.resolve()
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=follow_symlinks):
        here = Path(dirpath)
        for name in list(dirnames):
            link = here / name
            if link.is_symlink() and not follow_symlinks and not link.resolve().is_relative_to(root):
                skipped.append(link)
        for name in filenames:
            path = here / name
            if path.suffix.lower() not in TEXT_SUFFIXES or not path.is_file():
                continue
            if path.is_symlink() and not follow_symlinks and not path.resolve().is_relative_to(root):
                skipped.append(path)
                continue
            files.append(path)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} symbolic link(s) in {folder} that lead outside it (e.g. {skipped[0].name}); "
            "pass follow_symlinks=True (--follow-symlinks) to index them",
            UserWarning,
            stacklevel=4,
        )
    return sorted(files)


def _read_text_folder(folder: Path, follow_symlinks: bool = False) -> Iterator[dict[str, str]]:
    files = text_files(folder, follow_symlinks)
    if not files:
        raise TextMatchError(f"{folder} holds no {', '.join(TEXT_SUFFIXES)} files and no corpus.jsonl")
    for path in files:
        yield text_file_document(folder, path)


def text_file_document(folder: Path, path: Path) -> dict[str, str]:
    """The document of one text file of a corpus folder: id = its path relative to `folder`,
    title = its first Markdown heading (.md) or its file name."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TextMatchError(f"{path} is not UTF-8 text; convert it or remove it from the folder") from None
    title = path.stem
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if path.suffix.lower() in (".md", ".markdown") and first.startswith("#"):
        title = first.lstrip("#").strip() or title
    return {"_id": path.relative_to(folder).as_posix(), "title": title, "text": text}


def read_corpus(
    source: Any,
    id_column: str = "_id",
    title_column: str = "title",
    text_column: str = "text",
    split: str | None = None,
    follow_symlinks: bool = False,
) -> Iterator[dict[str, str]]:
    """Stream the documents of `source` as {"_id", "title", "text"} (all strings).

    source: a BEIR folder (with corpus.jsonl), a .jsonl/.json/.csv/.tsv/.parquet file, a folder
    of such files (read in name order), a folder of .txt/.md files (id = relative path, title =
    first Markdown heading or file name), a Hugging Face dataset name (streamed, `split` default
    "corpus" or "train"), or an in-memory `datasets.Dataset` / list of dicts. A plain `id`
    column is accepted for `_id`. In a folder, symbolic links that lead outside it are skipped
    (with a warning) unless `follow_symlinks`.
    """
    import datasets

    scratch = None
    if isinstance(source, (list, tuple)):
        rows: Iterable[dict[str, Any]] = source
    elif isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        rows = source
    else:
        path = Path(str(source)).expanduser()
        if path.is_dir() and (path / "corpus.jsonl").is_file():
            path = path / "corpus.jsonl"
        if path.is_dir() and data_files(path) and not text_files(path, follow_symlinks):
            for file in data_files(path):  # a corpus split over data files, read one after the other
                yield from read_corpus(file, id_column, title_column, text_column)
            return
        if path.is_dir():
            yield from _read_text_folder(path, follow_symlinks)
            return
        from ..data.loading import load_text_dataset

        if path.is_file():
            # streamed, with a cache folder of its own that goes with the generator: reading a
            # corpus leaves nothing behind in the user's `datasets` cache
            scratch = tempfile.TemporaryDirectory(prefix="textmatch-corpus-")
            rows = load_text_dataset(
                str(path), text_column=text_column, label_column=None, streaming=True, cache_dir=scratch.name
            )
        elif str(source).startswith((".", "/", "~")) or path.suffix:
            raise TextMatchError(f"corpus {str(source)!r} does not exist; check the path")
        else:
            try:
                stream = datasets.load_dataset(str(source), streaming=True)
            except Exception as exc:  # noqa: BLE001
                raise TextMatchError(f"cannot read corpus {str(source)!r}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
            if isinstance(stream, datasets.IterableDatasetDict):
                names = list(stream)
                pick = split or next((n for n in ("corpus", "train") if n in names), None)
                if pick not in names:
                    raise TextMatchError(f"corpus {source!r} has splits {names}; pick one with --split")
                stream = stream[pick]
            rows = stream
    try:
        yield from _documents(iter(rows), source, id_column, title_column, text_column)
    finally:
        if scratch is not None:
            scratch.cleanup()


def _documents(iterator: Iterator[Any], source: Any, id_column: str, title_column: str,
               text_column: str) -> Iterator[dict[str, str]]:
    n = 0
    while True:
        try:  # a streamed file is parsed while it is read: its errors surface here
            row = next(iterator)
        except StopIteration:
            return
        except TextMatchError:
            raise
        except Exception as exc:  # noqa: BLE001 - datasets / pandas / pyarrow parse errors, in our words
            from ..data.loading import read_error

            raise read_error(f"corpus {str(source)!r} (document {n})", exc) from None
        yield row_document(dict(row), id_column, title_column, text_column, n)
        n += 1


def checked_documents(documents: Iterable[dict[str, str]], seen: set[str] | None = None) -> Iterator[dict[str, str]]:
    """Pass documents through, refusing duplicate ids and skipping (with one counted warning at
    the end) documents with neither title nor text. `seen` holds ids already indexed."""
    seen = set() if seen is None else seen
    empty: list[str] = []
    count = 0
    for doc in documents:
        if doc["_id"] in seen:
            raise TextMatchError(
                f"document id {doc['_id']!r} appears twice (or is already in the index); ids must be unique"
            )
        seen.add(doc["_id"])
        if not doc["text"].strip() and not doc["title"].strip():
            empty.append(doc["_id"])
            continue
        count += 1
        yield doc
    if empty:
        warnings.warn(
            f"skipped {len(empty)} document(s) with no title and no text, e.g. {empty[0]!r}",
            UserWarning,
            stacklevel=2,
        )
    if count == 0:
        raise TextMatchError("the corpus has no documents with text; nothing to index")


def split_passages(title: str, text: str, tokenizer: Any, max_tokens: int = 256, overlap: int = 32) -> list[str]:
    """Cut `title` + `text` into passages of at most `max_tokens` tokens (special tokens
    included), consecutive windows sharing `overlap` tokens. Each passage starts with the
    title, so a window from the middle of a document still says what it is about."""
    if overlap < 0 or max_tokens < 8 or overlap >= max_tokens // 2:
        raise TextMatchError(f"need max_tokens >= 8 and 0 <= overlap < max_tokens / 2, got {max_tokens} and {overlap}")
    head = f"{title.strip()}. " if title.strip() else ""
    body = " ".join(text.split())
    if not body:
        return [head.strip()]
    encoded = tokenizer(body, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoded["offset_mapping"]
    head_tokens = len(tokenizer(head, add_special_tokens=False)["input_ids"]) if head else 0
    room = max(8, max_tokens - 2 - head_tokens)  # 2 special tokens ([CLS], [SEP])
    if len(offsets) <= room:
        return [head + body]
    passages = []
    step = room - overlap
    for start in range(0, len(offsets), step):
        window = offsets[start : start + room]
        passages.append(head + body[window[0][0] : window[-1][1]])
        if start + room >= len(offsets):
            break
    return passages
