"""Sharded search on Ray: each shard of an index held by a Ray actor, all searched at once.

An index built with `--index-shards N` (textmatch.retrieval.sharded_index) is searched in one
process by default, one shard after the other. With `Retriever.load(folder, engine=RayEngine())`
(`textmatch search --engine ray`) each shard is loaded by a `ShardSearcher` actor instead, on
whichever node of the Ray cluster has room (each node must see the index folder), and a search
sends the query vectors to every actor at once. The driver keeps only the ids; it merges the
shards' k best with `merge_top_k`, the project's one ranking rule, so the results equal the
one-process sharded search's (and, with exact shards, the unsharded exact search's, ties
included). The driver never loads a shard's vectors.

    retriever = Retriever.load("big-index", model, engine=RayEngine(num_cpus=1))
    retriever.search(["how do I reset my card"])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TextMatchError
from .ray_encoding import RayEngine, peak_rss_mb, start_ray
from .sharded_index import SHARD_FOLDER, ShardedIndex
from .vector_index import SHARDED, load_index


class ShardSearcher:
    """The Ray actor of one shard: loads it once (load_index), then answers searches."""

    def __init__(self, folder: str, meta: dict[str, Any], num_threads: int) -> None:
        import torch

        torch.set_num_threads(num_threads)  # faiss follows torch's thread count
        self.index = load_index(Path(folder), meta)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        return self.index.search(queries, min(k, self.index.ntotal))

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "ntotal": self.index.ntotal, "peak_rss_mb": peak_rss_mb()}


class RayShardedIndex(ShardedIndex):
    """A ShardedIndex whose shards live in Ray actors (`start`); read-only: build and add with
    the local index."""

    def _load_files(self, folder: Path, ntotal: int) -> None:
        self.shard_folders = [folder / SHARD_FOLDER / f"shard-{n:05d}" for n in range(len(self.pending_metas))]
        self.shard_metas, self.pending_metas = list(self.pending_metas), []
        sizes = [int(meta["ntotal"]) for meta in self.shard_metas]
        if sum(sizes) != ntotal or not all(f.is_dir() for f in self.shard_folders):
            raise TextMatchError(f"the shards in {folder / SHARD_FOLDER} do not match its index.json: build the index again")
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist()
        self.actors: list[Any] = []

    def start(self, engine: RayEngine) -> None:
        """One ShardSearcher per non-empty shard, each with `engine.num_cpus` CPUs; a cluster
        with fewer CPUs than that in all is refused (the actors would wait for ever)."""
        ray = start_ray(engine)
        wanted = [i for i, meta in enumerate(self.shard_metas) if int(meta["ntotal"])]
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if len(wanted) * engine.num_cpus > cpus:
            raise TextMatchError(
                f"{len(wanted)} shards x {engine.num_cpus:g} CPUs per actor need more than the {cpus:g} CPUs of the Ray "
                f"cluster; pass --ray-num-cpus {cpus / len(wanted):.2g} (num_cpus=) or use a larger cluster"
            )
        searcher = ray.remote(num_cpus=engine.num_cpus, max_restarts=-1, max_task_retries=3)(ShardSearcher)
        threads = engine.num_threads or max(1, int(engine.num_cpus))
        self.actors = [searcher.remote(str(self.shard_folders[i]), self.shard_metas[i], threads) for i in wanted]
        self.ray = ray
        try:
            self.workers = ray.get([actor.info.remote() for actor in self.actors])  # loaded, or the error now
        except Exception as exc:  # noqa: BLE001 - Ray wraps the actor's error in its own type
            raise TextMatchError(f"a shard could not be loaded on Ray ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from None

    def shard_results(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, list[list[str]]]]:
        if not self.actors:
            raise TextMatchError("the shards are not served yet: call start(engine) first")
        queries_ref = self.ray.put(np.ascontiguousarray(queries, dtype=np.float32))  # sent once to every actor
        return self.ray.get([actor.search.remote(queries_ref, k) for actor in self.actors])

    def add(self, vectors: np.ndarray, ids: Any) -> None:
        raise TextMatchError("an index searched on Ray is read-only; load it without engine= to add to it")

    def _save_files(self, folder: Path) -> None:
        raise TextMatchError("an index searched on Ray is read-only; load it without engine= to save it")


def load_on_ray(folder: Path, meta: dict[str, Any], engine: RayEngine) -> RayShardedIndex:
    """The sharded vector index saved in `folder` (its `meta()`), served by Ray actors."""
    if meta.get("kind") != SHARDED:
        raise TextMatchError(
            f"the index in {folder} is one {meta.get('kind')} index; searching on Ray needs an index built in shards "
            "(--index-shards N, IndexConfig(index_shards=N))"
        )
    index = RayShardedIndex.load(folder, meta)
    index.start(engine)
    return index
