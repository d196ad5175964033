"""Passage encoding on Ray Data: the shards of a resumable index build, encoded by a pool of actors.

`textmatch index --engine ray` (Python: `Retriever.build(..., engine=RayEngine())`) encodes the
passages of a corpus on Ray instead of in the building process. The passages are cut into the
same shards as the single-process path (`IndexConfig.shard_size` consecutive passages each:
the unit of resumption); the shards not yet on disk become a Ray dataset, one row per shard,
and `map_batches` sends them to a pool of `ShardEncoder` actors (one model load per actor; CPU
or GPU actors; any inference backend, int8 included). Each actor writes its shard as Parquet
(passage position, document id, vector) into the build's partial folder, atomically
(textmatch.files), under the shard's own name: a shard is on disk whole or not at all, a retried
shard overwrites nothing but itself, and a rerun after an interruption skips the shards that
are there. An actor that dies (its process killed, its node lost) is restarted and its shard
retried (Ray Data's default for actor pools: restarts and task retries without a limit).

Without an address Ray starts a local instance on this machine; with `address` (or the
`RAY_ADDRESS` variable) it joins an existing cluster, whose nodes must have textmatch installed
and see the index's partial folder (shared storage), where the shards are written.

The embeddings equal the single-process path's to float tolerance: both run
`MatchingNetwork.encode(texts, role="support")` on the same shard of texts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import ConfigMixin
from ..errors import TextMatchError
from ..files import atomic_path

ENGINES = ("local", "ray")  # where `textmatch index --engine` encodes passages
SHARD_FORMATS = (".npy", ".parquet")  # the single-process path writes .npy, the Ray actors .parquet
CRASH_ENV = "TEXTMATCH_RAY_CRASH_ONCE"  # tests: a control file naming a shard whose actor dies once (crash_once)


@dataclass
class RayEngine(ConfigMixin):
    """Where and how `Retriever.build` encodes passages on Ray.

    address: a Ray cluster to join ("ray://host:10001", "host:6379" or "auto"); None: the
    `RAY_ADDRESS` variable if set, else a local Ray instance. concurrency: encoder actors.
    num_cpus / num_gpus: resources per actor (a GPU actor encodes on its GPU). backend: the
    inference backend the actors use ("torch", "onnx", "onnx-int8"); num_threads: its threads
    per actor (default: num_cpus)."""

    address: str | None = None
    concurrency: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    backend: str = "torch"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        from ..backends import BACKENDS

        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise TextMatchError(f"concurrency must be a positive integer, got {self.concurrency!r}")
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


def shard_path(partial: Path, shard: int) -> Path | None:
    """The finished file of `shard` in `partial` (either format), or None."""
    for suffix in SHARD_FORMATS:
        path = partial / f"shard-{shard:06d}{suffix}"
        if path.is_file():
            return path
    return None


def read_shard(path: Path, n_rows: int, start: int) -> np.ndarray:
    """The (n_rows, dim) float32 vectors of a shard file; a Parquet shard must hold exactly the
    passages start .. start + n_rows - 1 in order, else it is damaged: a TextMatchError."""
    if path.suffix == ".npy":
        emb = np.load(path, allow_pickle=False)
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        positions = table.column("position").to_numpy()
        if len(positions) != n_rows or not np.array_equal(positions, np.arange(start, start + n_rows)):
            raise TextMatchError(f"{path} does not hold passages {start}..{start + n_rows - 1}; delete it and build again")
        emb = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    if emb.ndim != 2 or len(emb) != n_rows:
        raise TextMatchError(f"{path} holds {emb.shape} vectors, not {n_rows}; delete it and build again")
    return emb


def write_parquet_shard(path: Path, start: int, doc_ids: Sequence[str], vectors: np.ndarray) -> None:
    """One shard as Parquet (position int64, doc_id string, vector list<float32>), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, dim)
    table = pa.table({
        "position": pa.array(np.arange(start, start + len(vectors), dtype=np.int64)),
        "doc_id": pa.array(list(doc_ids), type=pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


class ShardEncoder:
    """The Ray Data actor: loads the model once, then encodes whole shards and writes each one
    (`write_parquet_shard`). Rows in, one summary row per shard out."""

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

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        shards, done = [int(s) for s in batch["shard"]], []
        for shard, start, texts, doc_ids in zip(shards, batch["start"], batch["texts"], batch["doc_ids"]):
            crash_once(shard)
            vectors = self.model.encode(list(texts), batch_size=self.batch_size, role="support")  # (n, dim)
            write_parquet_shard(self.partial / f"shard-{shard:06d}.parquet", int(start), list(doc_ids), vectors)
            done.append(len(texts))
        peak = peak_rss_mb()
        return {"shard": np.asarray(shards, dtype=np.int64), "rows": np.asarray(done, dtype=np.int64),
                "pid": np.full(len(shards), os.getpid(), dtype=np.int64), "peak_rss_mb": np.full(len(shards), peak)}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux: ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def crash_once(shard: int) -> None:
    """Fault injection for the tests: when CRASH_ENV names a control file that holds a shard
    number, the actor's process exits (os._exit, as a killed process would) before it writes
    that shard, once: CONTROL.crashed records it. A real worker death for Ray to recover from."""
    control = os.environ.get(CRASH_ENV)
    if not control or not os.path.isfile(control):
        return
    marker = control + ".crashed"
    target = Path(control).read_text(encoding="utf-8").strip()
    if target == str(shard) and not os.path.exists(marker):
        Path(marker).write_text(f"{os.getpid()}\n", encoding="utf-8")
        os._exit(1)


def model_source(model: Any, partial: Path) -> str:
    """What the actors load the model from: a copy saved (safetensors) under `partial`, so they
    get the weights in memory, trained or not, without a second load here to compare them with
    the folder or Hub id the model came from. On a cluster `partial` is on shared storage."""
    folder = partial / "model"
    model.save_pretrained(folder)
    return str(folder)


def encode_shards(model: Any, texts: Sequence[str], doc_ids: Sequence[str], shards: Sequence[int], shard_size: int,
                  batch_size: int, partial: Path, fingerprint: str, engine: RayEngine,
                  show_progress_bar: bool = False) -> dict[str, Any]:
    """Encode `shards` (positions of shard_size-passage shards of `texts`) on Ray; each lands in
    `partial` as shard-NNNNNN.parquet. Returns when every one is on disk, with what the workers
    reported: {"workers": {pid: peak resident MiB}, "shards": how many were encoded here}."""
    ray = require_ray()
    from tqdm.auto import tqdm

    if not shards:
        return {"workers": {}, "shards": 0}
    address = engine.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     **({} if address else {"num_cpus": os.cpu_count()}))
        except ConnectionError as exc:
            raise TextMatchError(f"cannot reach the Ray cluster at {address!r} ({exc}); check --ray-address / RAY_ADDRESS") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # textmatch's own bar below
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    source = model_source(model, partial)
    rows = [{"shard": s, "start": s * shard_size, "texts": list(texts[s * shard_size : (s + 1) * shard_size]),
             "doc_ids": list(doc_ids[s * shard_size : (s + 1) * shard_size])} for s in shards]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    encoded = dataset.map_batches(
        ShardEncoder,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(engine.concurrency, len(rows))),
        num_cpus=engine.num_cpus,
        num_gpus=engine.num_gpus or None,
        fn_constructor_kwargs={"model_source": source, "fingerprint": fingerprint, "backend": engine.backend,
                               "num_threads": engine.num_threads or max(1, int(engine.num_cpus)),
                               "batch_size": batch_size, "partial": str(partial)},
    )
    bar = tqdm(total=sum(len(r["texts"]) for r in rows), desc="Encoding on Ray", unit="passage",
               disable=not show_progress_bar)
    workers: dict[int, float] = {}
    try:
        for row in encoded.iter_rows():
            bar.update(int(row["rows"]))
            workers[int(row["pid"])] = max(workers.get(int(row["pid"]), 0.0), float(row["peak_rss_mb"]))
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in its own types
        raise TextMatchError(f"encoding on Ray failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                             "run the same command again: the finished shards are kept") from None
    finally:
        bar.close()
    missing = [s for s in shards if shard_path(partial, s) is None]
    if missing:
        raise TextMatchError(f"Ray finished without shards {missing[:5]}; run the same command again")
    return {"workers": workers, "shards": len(shards)}
