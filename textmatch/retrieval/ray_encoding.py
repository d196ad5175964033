"""Corpus encoding on Ray Data: the corpus read as a Ray dataset of input blocks, its passages
split and encoded by a pool of actors, one Parquet shard per block.

`textmatch index --engine ray` (Python: `Retriever.build(..., engine=RayEngine())`) runs the
whole path from the corpus files to the embeddings on Ray, one Ray Data pipeline:

1. read: `ray.data.read_datasource(CorpusDatasource)`: one read task, and one Ray block, per
   input block of the corpus (textmatch.retrieval.corpus_blocks: byte ranges of JSONL files,
   row ranges of Parquet / CSV files and datasets, ranges of a folder's text files). A block's
   documents are read where the task runs, never in the driver.
2. split: `map_batches(split_passages_stage)`: each block's documents cut into passages
   (textmatch.retrieval.corpus.split_passages, with the model's tokenizer), one row per block.
3. encode: `map_batches(BlockEncoder, compute=ActorPoolStrategy)`: a pool of actors, each
   loading the model once (CPU or GPU actors; any inference backend, int8 included), encodes
   a block's passages and writes them as `block-NNNNNN.parquet` (doc_id, passage number
   within the document, title, text, vector) into the build's partial folder, atomically.

The input block is the unit of resumption: a rerun after an interruption reads only the blocks
whose shard is not on disk, and a worker that dies (its process killed, its node lost) is
restarted and its block retried (Ray Data's default for actor pools); a block's shard is on
disk whole or not at all and is named by the block, so a retry neither loses nor duplicates
passages. The driver then takes the shards in block order: passage positions, document
checks (ids unique; documents without text skipped and counted), and the vector index filled
shard by shard (textmatch.retrieval.encoded_shards).

Without an address Ray starts a local instance on this machine; with `address` (or the
`RAY_ADDRESS` variable) it joins an existing cluster, whose nodes must have textmatch installed
and see the corpus files and the index's partial folder (shared storage).

The embeddings equal the single-process path's to float tolerance: the blocks, read in order,
give the documents read_corpus streams, both split them with the same function and both run
`MatchingNetwork.encode(texts, role="support")`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..config import ConfigMixin
from ..errors import TextMatchError
from ..files import atomic_path
from .corpus_blocks import CorpusBlock, CorpusColumns, plan_blocks, read_block
from .encoded_shards import EncodedCorpus, EncodedShards, open_partial

ENGINES = ("local", "ray")  # where `textmatch index --engine` encodes passages
CRASH_ENV = "TEXTMATCH_RAY_CRASH_ONCE"  # tests: a control file naming a block whose actor dies once (crash_once)
BLOCK_FORMAT = 1  # the layout of block-NNNNNN.parquet


@dataclass
class RayEngine(ConfigMixin):
    """Where and how `Retriever.build` reads, splits and encodes a corpus on Ray.

    address: a Ray cluster to join ("ray://host:10001", "host:6379" or "auto"); None: the
    `RAY_ADDRESS` variable if set, else a local Ray instance. concurrency: encoder actors.
    num_cpus / num_gpus: resources per actor (a GPU actor encodes on its GPU). backend: the
    inference backend the actors use ("torch", "onnx", "onnx-int8"); num_threads: its threads
    per actor (default: num_cpus). block_size: documents per input block (the unit that is
    read, encoded and resumed)."""

    address: str | None = None
    concurrency: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    backend: str = "torch"
    num_threads: int | None = None
    block_size: int = 1000

    def __post_init__(self) -> None:
        from ..backends import BACKENDS

        for name in ("concurrency", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TextMatchError(f"{name} must be a positive integer, got {value!r}")
        if not (self.num_cpus > 0 and self.num_gpus >= 0):
            raise TextMatchError(f"num_cpus must be > 0 and num_gpus >= 0, got {self.num_cpus} and {self.num_gpus}")
        if self.backend not in BACKENDS:
            raise TextMatchError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend != "torch" and self.num_gpus:
            raise TextMatchError(f"backend {self.backend!r} runs on CPUs; use backend='torch' with num_gpus")


def require_ray() -> Any:
    """The ray module, or a TextMatchError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise TextMatchError('the Ray engine needs Ray Data: pip install "textmatch[ray]"') from None
    return ray


def start_ray(engine: RayEngine) -> Any:
    """The ray module, connected: to `engine.address` or RAY_ADDRESS, else a local instance
    (unless this process already joined one)."""
    ray = require_ray()
    address = engine.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     **({} if address else {"num_cpus": os.cpu_count()}))
        except ConnectionError as exc:
            raise TextMatchError(f"cannot reach the Ray cluster at {address!r} ({exc}); check --ray-address / RAY_ADDRESS") from None
    return ray


def block_path(partial: Path, number: int) -> Path:
    return partial / f"block-{number:06d}.parquet"


# -- 1. read -----------------------------------------------------------------------------------

def documents_table(block: CorpusBlock, columns: CorpusColumns) -> Any:
    """One input block's documents as an Arrow table (block, row, block_docs, doc_id, title,
    text); a block without documents is one marker row (row -1), so that it still reaches the
    encoder and gets its (empty) shard."""
    import pyarrow as pa

    docs = read_block(block, columns)
    n, rows = len(docs), list(range(len(docs))) or [-1]
    docs = docs or [{"_id": "", "title": "", "text": ""}]
    return pa.table({
        "block": pa.array([block.number] * len(docs), type=pa.int64()),
        "row": pa.array(rows, type=pa.int64()),
        "block_docs": pa.array([n] * len(docs), type=pa.int64()),
        "doc_id": pa.array([d["_id"] for d in docs], type=pa.string()),
        "title": pa.array([d["title"] for d in docs], type=pa.string()),
        "text": pa.array([d["text"] for d in docs], type=pa.string()),
    })


def corpus_datasource(blocks: list[CorpusBlock], columns: CorpusColumns) -> Any:
    """A Ray Data datasource whose read tasks are the input blocks, one Ray block each."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class CorpusDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list[Any]:
            return [ReadTask(lambda block=block: [documents_table(block, columns)],
                             BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None,
                                           input_files=(block.path,) if block.path else None))
                    for block in blocks]

    return CorpusDatasource()


# -- 2. split ----------------------------------------------------------------------------------

TOKENIZERS: dict[str, Any] = {}  # per worker process: the tokenizer of a folder, loaded once


def split_passages_stage(table: Any, tokenizer_dir: str, max_tokens: int, overlap: int) -> Any:
    """Ray Data stage: documents (rows of documents_table) in, one row per input block out:
    block, documents, empty (ids of documents without text), and the block's passages as lists
    (doc_id, passage number within its document, title, text)."""
    import pyarrow as pa
    from transformers import AutoTokenizer

    from .corpus import split_passages

    if tokenizer_dir not in TOKENIZERS:
        TOKENIZERS[tokenizer_dir] = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer = TOKENIZERS[tokenizer_dir]
    data = table.to_pydict()
    out: dict[str, list[Any]] = {k: [] for k in ("block", "documents", "empty", "doc_id", "passage", "title", "text")}
    for number in dict.fromkeys(data["block"]):
        rows = [i for i, b in enumerate(data["block"]) if b == number]
        expected = data["block_docs"][rows[0]]
        real = [i for i in rows if data["row"][i] >= 0]
        if sorted(data["row"][i] for i in real) != list(range(expected)):
            raise TextMatchError(f"input block {number} reached the split stage in pieces; "
                                 "Ray Data must pass whole blocks (batch_size=None)")
        passages: dict[str, list[Any]] = {k: [] for k in ("doc_id", "passage", "title", "text")}
        empty = []
        for i in sorted(real, key=lambda i: data["row"][i]):
            doc_id, title, text = data["doc_id"][i], data["title"][i], data["text"][i]
            if not title.strip() and not text.strip():
                empty.append(doc_id)
                continue
            for p, passage in enumerate(split_passages(title, text, tokenizer, max_tokens, overlap)):
                passages["doc_id"].append(doc_id)
                passages["passage"].append(p)
                passages["title"].append(title.strip())
                passages["text"].append(passage)
        out["block"].append(number)
        out["documents"].append(expected)
        out["empty"].append(empty)
        for key, values in passages.items():
            out[key].append(values)
    return pa.table({
        "block": pa.array(out["block"], type=pa.int64()),
        "documents": pa.array(out["documents"], type=pa.int64()),
        "empty": pa.array(out["empty"], type=pa.list_(pa.string())),
        "doc_id": pa.array(out["doc_id"], type=pa.list_(pa.string())),
        "passage": pa.array(out["passage"], type=pa.list_(pa.int32())),
        "title": pa.array(out["title"], type=pa.list_(pa.string())),
        "text": pa.array(out["text"], type=pa.list_(pa.string())),
    })


# -- 3. encode ---------------------------------------------------------------------------------

def write_block(path: Path, number: int, documents: int, empty: list[str], passages: dict[str, list[Any]],
                vectors: np.ndarray) -> None:
    """One block's shard as Parquet (doc_id, passage, title, text, vector), atomically; its
    schema metadata names the block and counts its documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, dim)
    table = pa.table({
        "doc_id": pa.array(passages["doc_id"], type=pa.string()),
        "passage": pa.array(passages["passage"], type=pa.int32()),
        "title": pa.array(passages["title"], type=pa.string()),
        "text": pa.array(passages["text"], type=pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1]),
    })
    meta = {"format": BLOCK_FORMAT, "block": number, "documents": documents, "empty": empty}
    table = table.replace_schema_metadata({b"textmatch": json.dumps(meta).encode("utf-8")})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_block_passages(path: Path, number: int) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A block shard's metadata and its passages' columns (no vectors), or a TextMatchError
    when the file is not the shard of block `number`."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["doc_id", "passage", "title", "text"])
        meta = json.loads((table.schema.metadata or {}).get(b"textmatch", b"{}"))
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors, in our words
        raise TextMatchError(f"{path} cannot be read ({exc}); delete it and build again") from None
    if meta.get("format") != BLOCK_FORMAT or meta.get("block") != number:
        raise TextMatchError(f"{path} is not the shard of input block {number}; delete it and build again")
    return meta, table.to_pydict()


class BlockEncoder:
    """The Ray Data actor: loads the model once, then encodes whole blocks (rows of
    split_passages_stage) and writes each one (`write_block`). One summary row per block out."""

    def __init__(self, model_source: str, fingerprint: str, backend: str, num_threads: int | None,
                 batch_size: int, partial: str) -> None:
        import torch

        from ..core.modeling import MatchingNetwork
        from .retriever import model_fingerprint

        if num_threads:
            torch.set_num_threads(num_threads)
        self.model = MatchingNetwork.from_pretrained(model_source, backend=backend, num_threads=num_threads)
        if model_fingerprint(self.model) != fingerprint:
            raise TextMatchError(f"the model at {model_source} is not the one the index is built with")
        self.batch_size = batch_size
        self.partial = Path(partial)
        self.dim = int(self.model.encode(["dimension"], role="support").shape[1])

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        numbers, counts = [int(b) for b in batch["block"]], []
        for i, number in enumerate(numbers):
            crash_once(number)
            passages = {key: list(batch[key][i]) for key in ("doc_id", "passage", "title", "text")}
            texts = passages["text"]
            vectors = (self.model.encode(texts, batch_size=self.batch_size, role="support") if texts
                       else np.zeros((0, self.dim), dtype=np.float32))  # (n, dim)
            write_block(block_path(self.partial, number), number, int(batch["documents"][i]),
                        [str(e) for e in batch["empty"][i]], passages, vectors)
            counts.append(len(texts))
        peak = peak_rss_mb()
        return {"block": np.asarray(numbers, dtype=np.int64), "passages": np.asarray(counts, dtype=np.int64),
                "pid": np.full(len(numbers), os.getpid(), dtype=np.int64), "peak_rss_mb": np.full(len(numbers), peak)}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux: ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def crash_once(number: int) -> None:
    """Fault injection for the tests: when CRASH_ENV names a control file that holds a block
    number, the actor's process exits (os._exit, as a killed process would) before it writes
    that block, once: CONTROL.crashed records it. A real worker death for Ray to recover from."""
    control = os.environ.get(CRASH_ENV)
    if not control or not os.path.isfile(control):
        return
    marker = control + ".crashed"
    target = Path(control).read_text(encoding="utf-8").strip()
    if target == str(number) and not os.path.exists(marker):
        Path(marker).write_text(f"{os.getpid()}\n", encoding="utf-8")
        os._exit(1)


# -- the whole build ---------------------------------------------------------------------------

def encode_corpus(model: Any, corpus: Any, folder: Path, max_tokens: int, overlap: int, batch_size: int,
                  fingerprint: str, engine: RayEngine, seen: Iterable[str] = (), show_progress_bar: bool = False,
                  split: str | None = None, **column_options: Any) -> EncodedCorpus:
    """Read, split and encode `corpus` on Ray into the partial folder of the index `folder`
    (block shards of an earlier, interrupted run of the same build are kept and skipped), then
    check the documents in block order: ids unique and not in `seen` (ids already indexed),
    documents without text skipped with one counted warning."""
    plan = plan_blocks(corpus, engine.block_size, CorpusColumns(**column_options), split=split)
    key = {"engine": "ray", "format": BLOCK_FORMAT, "model": fingerprint, "corpus": plan.digest,
           "block_size": engine.block_size, "passage_tokens": max_tokens, "overlap": overlap,
           "backend": engine.backend, "columns": column_options}
    partial = open_partial(folder, key)
    missing = [b for b in plan.blocks if not block_path(partial, b.number).is_file()]
    workers = run_pipeline(model, missing, CorpusColumns(**column_options), partial, max_tokens, overlap,
                           batch_size, fingerprint, engine, show_progress_bar) if missing else {"workers": {}}
    passages, counts = collect_passages(partial, len(plan.blocks), set(seen))
    encoded = EncodedShards([block_path(partial, b.number) for b in plan.blocks], counts)
    report = {"blocks": len(plan.blocks), "reused_blocks": len(plan.blocks) - len(missing), "ray": workers}
    return EncodedCorpus(passages, encoded, fingerprint, report)


def run_pipeline(model: Any, blocks: list[CorpusBlock], columns: CorpusColumns, partial: Path, max_tokens: int,
                 overlap: int, batch_size: int, fingerprint: str, engine: RayEngine,
                 show_progress_bar: bool) -> dict[str, Any]:
    """Read, split and encode `blocks` on Ray; returns when every block's shard is on disk, with
    what the workers reported: {"workers": {pid: peak resident MiB}, "encoded_blocks": n, and
    the seconds of the whole run and of its parts (`execute`)}."""
    started = time.perf_counter()
    ray = start_ray(engine)
    with data_context(ray, enable_progress_bars=False,  # textmatch's own bar below
                      print_on_execution_start=False,
                      target_max_block_size=None):  # an input block stays one Ray block through the split stage
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        report = execute(ray, model, blocks, columns, partial, max_tokens, overlap, batch_size, fingerprint, engine,
                         show_progress_bar)
    unfinished = [b.name() for b in blocks if not block_path(partial, b.number).is_file()]
    if unfinished:
        raise TextMatchError(f"Ray finished without the blocks {unfinished[:3]}; run the same command again")
    return {**report, "encoded_blocks": len(blocks), "seconds": time.perf_counter() - started}


@contextlib.contextmanager
def data_context(ray: Any, **settings: Any) -> Iterator[None]:
    """Ray Data's DataContext with `settings` for the duration, the caller's own restored after."""
    context = ray.data.DataContext.get_current()
    before = {name: getattr(context, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(context, name, value)
        yield
    finally:
        for name, value in before.items():
            setattr(context, name, value)


def execute(ray: Any, model: Any, blocks: list[CorpusBlock], columns: CorpusColumns, partial: Path, max_tokens: int,
            overlap: int, batch_size: int, fingerprint: str, engine: RayEngine,
            show_progress_bar: bool) -> dict[str, Any]:
    """The pipeline of the module docstring on `blocks`, run to the end: {"workers": {worker pid:
    peak MiB}, "prepare_seconds": the model copy (and its one export), "first_block_seconds":
    from the start of the pipeline to its first finished block (the actors' start)}."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    model_dir, tokenizer_dir = partial / "model", partial / "tokenizer"
    model.save_pretrained(model_dir)  # the actors load these weights: trained or not, whatever their source
    model.support_encoder.tokenizer.save_pretrained(str(tokenizer_dir))
    if engine.backend != "torch":
        # export once, here, into the copy's ONNX cache: the actors then open it instead of each
        # exporting (and racing each other) on their own. From the copy, loaded on the CPU: the
        # model in hand may be on a GPU, where the ONNX export does not run.
        from ..core.modeling import MatchingNetwork

        MatchingNetwork.from_pretrained(str(model_dir), backend=engine.backend, num_threads=1)
    # the read tasks reserve no CPU (a pool of actors that takes every CPU must not starve them),
    # so their number in flight is bounded instead: as many as there are actors
    documents = ray.data.read_datasource(corpus_datasource(blocks, columns), override_num_blocks=len(blocks),
                                         num_cpus=0, concurrency=min(engine.concurrency, len(blocks)))
    split = documents.map_batches(split_passages_stage, batch_size=None, batch_format="pyarrow",
                                  fn_kwargs={"tokenizer_dir": str(tokenizer_dir), "max_tokens": max_tokens,
                                             "overlap": overlap})
    encoded = split.map_batches(
        BlockEncoder,
        batch_size=1,  # one input block per call
        compute=ray.data.ActorPoolStrategy(size=min(engine.concurrency, len(blocks))),
        num_cpus=engine.num_cpus,
        num_gpus=engine.num_gpus or None,
        fn_constructor_kwargs={"model_source": str(model_dir), "fingerprint": fingerprint, "backend": engine.backend,
                               "num_threads": engine.num_threads or max(1, int(engine.num_cpus)),
                               "batch_size": batch_size, "partial": str(partial)},
    )
    bar = tqdm(total=len(blocks), desc="Encoding on Ray", unit="block", disable=not show_progress_bar)
    workers: dict[int, float] = {}
    prepared = time.perf_counter()
    first = None
    try:
        for row in encoded.iter_rows():
            first = first if first is not None else time.perf_counter() - prepared
            bar.update(1)
            workers[int(row["pid"])] = max(workers.get(int(row["pid"]), 0.0), float(row["peak_rss_mb"]))
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in its own types
        raise TextMatchError(ray_failure(exc)) from None
    finally:
        bar.close()
    return {"workers": workers, "prepare_seconds": prepared - started, "first_block_seconds": first}


def ray_failure(exc: BaseException) -> str:
    """A failed Ray run in one line: the TextMatchError a worker raised when there is one (a
    missing column, a broken JSON line), else the exception's first line."""
    text = str(exc)
    marker = "TextMatchError: "
    if marker in text:
        reason = text[text.rindex(marker) + len(marker):].strip().splitlines()[0]
        return f"{reason} (raised on Ray; the finished blocks are kept)"
    first = text.splitlines()[0] if text else ""
    return (f"encoding on Ray failed ({type(exc).__name__}: {first}); "
            "run the same command again: the finished blocks are kept")


def collect_passages(partial: Path, n_blocks: int, seen: set[str]) -> tuple[list[tuple[str, str, str]], list[int]]:
    """The passages of every block shard in block order, and each block's passage count; ids
    checked across blocks as `checked_documents` checks them in a stream."""
    import warnings

    passages: list[tuple[str, str, str]] = []
    counts, empty, documents = [], [], 0
    for number in range(n_blocks):
        meta, columns = read_block_passages(block_path(partial, number), number)
        new = [doc_id for doc_id, p in zip(columns["doc_id"], columns["passage"]) if p == 0] + list(meta["empty"])
        for doc_id in new:
            if doc_id in seen:
                raise TextMatchError(
                    f"document id {doc_id!r} appears twice (or is already in the index); ids must be unique"
                )
            seen.add(doc_id)
        empty.extend(meta["empty"])
        documents += int(meta["documents"]) - len(meta["empty"])
        passages.extend(zip(columns["doc_id"], columns["text"], columns["title"]))
        counts.append(len(columns["doc_id"]))
    if empty:
        warnings.warn(f"skipped {len(empty)} document(s) with no title and no text, e.g. {empty[0]!r}",
                      UserWarning, stacklevel=3)
    if documents == 0:
        raise TextMatchError("the corpus has no documents with text; nothing to index")
    return passages, counts
