"""Retrieval sets in BEIR layout (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) as `datasets`."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..data.loading import check_json_start, column_values, dataset_columns, read_error
from ..errors import TextMatchError

BEIR_LAYOUT = "a BEIR folder holds corpus.jsonl (_id, title, text), queries.jsonl (_id, text) and qrels/<split>.tsv"


@dataclass(repr=False)
class BeirData:
    """A retrieval set in BEIR layout, as `datasets` objects.

    corpus: a `Dataset` (or `IterableDataset` when streamed) with string `_id`, `title`, `text`.
    queries: a `Dataset` with string `_id`, `text`: the queries that have qrels in the split.
    qrels: {query_id: {doc_id: score}}, higher score = more relevant.
    """

    corpus: Any
    queries: Any
    qrels: dict[str, dict[str, int]]

    def __repr__(self) -> str:
        n_docs = len(self.corpus) if hasattr(self.corpus, "__len__") else "streamed"
        pairs = sum(len(docs) for docs in self.qrels.values())
        return f"BeirData(corpus={n_docs} docs, queries={len(self.queries)}, qrels={pairs} pairs)"


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV: `query-id<TAB>corpus-id<TAB>score` lines (integer scores), with
    an optional header row. Ids are strings; a repeated pair keeps its last score."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise TextMatchError(f"{path} is not UTF-8 text; save the qrels as UTF-8") from None
    except OSError as exc:
        raise TextMatchError(f"cannot read {path}: {exc.strerror or exc}; check the path") from None
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) != 3:
            raise TextMatchError(
                f"{path} line {lineno}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                f"got {len(parts)}"
            )
        qid, did, score = parts
        is_header, first = first and not _is_int(score), False
        if is_header:
            continue
        if not _is_int(score):
            raise TextMatchError(f"{path} line {lineno}: score {score!r} is not an integer; qrels scores are integers")
        qrels.setdefault(qid, {})[did] = int(score)
    return qrels


def _is_int(text: str) -> bool:
    return re.fullmatch(r"\s*[+-]?\d+\s*", text) is not None


def _read_jsonl_table(path: Path, required: Sequence[str], optional: Sequence[str], streaming: bool, **load_kwargs: Any):
    """Load a JSONL file with `datasets`, keep the `required` + `optional` fields (missing
    optional ones become ""), ids as strings."""
    import datasets

    check_json_start(path)
    try:
        ds = datasets.load_dataset("json", data_files=str(path), split="train", streaming=streaming, **load_kwargs)
    except Exception as exc:  # noqa: BLE001
        raise read_error(str(path), exc) from None
    columns = dataset_columns(ds, str(path))
    missing = [c for c in required if c not in columns]
    if missing:
        raise TextMatchError(
            f"{path} has no field {missing[0]!r}; its fields are {columns}. Each line must be a JSON object "
            f"with {', '.join(repr(c) for c in (*required, *optional))}"
        )
    ds = ds.select_columns([c for c in (*required, *optional) if c in columns])
    # cast before adding columns: in datasets 5.2 a streamed cast_column after map() changes
    # the declared feature but not the values
    if ds.features["_id"] != datasets.Value("string"):
        try:
            ds = ds.cast_column("_id", datasets.Value("string"))
        except (TypeError, ValueError) as exc:  # e.g. lists or objects as ids
            raise TextMatchError(f"{path}: the _id values must be strings or numbers ({exc})") from None
    for column in optional:
        if column not in columns:
            if isinstance(ds, datasets.IterableDataset):
                features = datasets.Features({**ds.features, column: datasets.Value("string")})
                ds = ds.map(lambda _row, c=column: {c: ""}, features=features)
            else:
                ds = ds.add_column(column, [""] * len(ds))
    return ds.select_columns([required[0], *optional, *required[1:]])  # _id, title, text


def _duplicates(ids: Iterable[str]) -> tuple[int, list[str]]:
    """(number of repeated entries, a few of the repeated ids)."""
    seen: set[str] = set()
    repeated: list[str] = []
    for i in ids:
        if i in seen:
            repeated.append(i)
        seen.add(i)
    return len(repeated), list(dict.fromkeys(repeated))[:3]


def _drop_unknown_pairs(
    qrels: dict[str, dict[str, int]], query_ids: set[str], doc_ids: set[str]
) -> tuple[dict[str, dict[str, int]], str | None]:
    """Qrels without the pairs that name unknown queries or docs, and a message counting them."""
    kept: dict[str, dict[str, int]] = {}
    bad_q: dict[str, int] = {}
    bad_d: dict[str, int] = {}
    for qid, docs in qrels.items():
        if qid not in query_ids:
            bad_q[qid] = len(docs)
            continue
        for did, score in docs.items():
            if did in doc_ids:
                kept.setdefault(qid, {})[did] = score
            else:
                bad_d[did] = bad_d.get(did, 0) + 1
    if not bad_q and not bad_d:
        return kept, None
    parts = []
    if bad_q:
        parts.append(
            f"{sum(bad_q.values())} pair(s) name {len(bad_q)} query id(s) not in queries.jsonl (e.g. {list(bad_q)[:3]})"
        )
    if bad_d:
        parts.append(
            f"{sum(bad_d.values())} pair(s) name {len(bad_d)} doc id(s) not in corpus.jsonl (e.g. {list(bad_d)[:3]})"
        )
    return kept, "; ".join(parts)


def load_beir(folder: str | Path, split: str = "test", streaming: bool = False, **load_kwargs: Any) -> BeirData:
    """Load a retrieval set in BEIR layout: `corpus.jsonl` (`_id`, `title`, `text`),
    `queries.jsonl` (`_id`, `text`) and `qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`).

    Ids become strings; a corpus without titles gets empty ones. Only the queries with qrels in
    `split` are kept (as BEIR does). Qrels pairs naming unknown query or doc ids are dropped
    with a warning that counts them. streaming=True streams the corpus as an
    `IterableDataset` (its ids are still read once, to check them); queries stay in memory.
    load_kwargs: passed on to `datasets.load_dataset` (e.g. cache_dir).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise TextMatchError(f"BEIR folder {str(folder)!r} does not exist or is not a folder; {BEIR_LAYOUT}")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise TextMatchError(f"{root} has no {name}; {BEIR_LAYOUT}")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        there = f"the splits available are {available}; pass one as split=" if available else "it has no qrels/*.tsv files"
        raise TextMatchError(f"{root} has no qrels/{split}.tsv; {there} ({BEIR_LAYOUT})")

    corpus = _read_jsonl_table(root / "corpus.jsonl", ("_id", "text"), ("title",), streaming, **load_kwargs)
    queries = _read_jsonl_table(root / "queries.jsonl", ("_id", "text"), (), False, **load_kwargs)
    try:
        doc_ids = [row["_id"] for row in corpus.select_columns(["_id"])] if streaming else column_values(corpus, "_id")
    except Exception as exc:  # noqa: BLE001 - a streamed file fails while it is read
        raise read_error(str(root / "corpus.jsonl"), exc) from None
    query_ids = column_values(queries, "_id")
    for name, ids in (("corpus.jsonl", doc_ids), ("queries.jsonl", query_ids)):
        n_repeated, examples = _duplicates(ids)
        if n_repeated:
            raise TextMatchError(
                f"{root / name} has {n_repeated} duplicate _id(s) (e.g. {examples}); every _id must be unique"
            )
    qrels, dropped = _drop_unknown_pairs(read_qrels(qrels_path), set(query_ids), set(doc_ids))
    if dropped:
        warnings.warn(f"{qrels_path}: dropped {dropped}", UserWarning, stacklevel=2)
    if not qrels:
        raise TextMatchError(
            f"{qrels_path} has no pairs naming known query and doc ids; check that it belongs to this corpus"
        )
    queries = queries.select([i for i, qid in enumerate(query_ids) if qid in qrels])
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)
