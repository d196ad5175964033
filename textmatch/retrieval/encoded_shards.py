"""The encoding shards of an index build, on disk in `<index>.partial/` until the index is written.

An index build encodes its passages in shards, each written whole (textmatch.files.atomic_path)
as soon as it is done, so that an interrupted build resumes without encoding them again. The
single-process path writes `shard-NNNNNN.npy` (`IndexConfig.shard_size` consecutive passages
each); the Ray engine writes `block-NNNNNN.parquet`, one per input block of the corpus
(textmatch.retrieval.ray_encoding). `open_partial` keeps the shards of an earlier run only when
it was the same build (same model, corpus and settings: its `key`); `EncodedShards` reads the
finished shards back one at a time, so that the index is filled without every embedding in
memory at once.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import TextMatchError

STATE_FILE = "state.json"


@dataclass
class EncodedCorpus:
    """A corpus ready to be written as an index: its passages (doc_id, text, title) in index
    order, their embeddings in shards on disk, the fingerprint of the model that encoded them,
    and a report of the run (shards, reused ones, what Ray's workers reported)."""

    passages: list[tuple[str, str, str]]
    encoded: "EncodedShards"
    fingerprint: str
    report: dict[str, Any]


def partial_dir(folder: Path) -> Path:
    """Where the build of the index `folder` keeps its finished shards: `<folder>.partial/`."""
    return folder.with_name(folder.name + ".partial")


def open_partial(folder: Path, key: dict[str, Any]) -> Path:
    """The partial folder of the index `folder`, emptied first unless it holds the shards of the
    same build (`key`: model fingerprint, what is encoded and how)."""
    partial = partial_dir(folder)
    if partial.is_dir():
        try:
            same = json.loads((partial / STATE_FILE).read_text(encoding="utf-8")) == key
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    (partial / STATE_FILE).write_text(json.dumps(key) + "\n", encoding="utf-8")
    return partial


def read_vectors(path: Path, n_rows: int) -> np.ndarray:
    """The (n_rows, dim) float32 vectors of a shard file (.npy, or a Parquet shard's "vector"
    column), or a TextMatchError when it holds another number of rows: the file is damaged."""
    try:
        if path.suffix == ".npy":
            emb = np.load(path, allow_pickle=False)
        else:
            import pyarrow.parquet as pq

            column = pq.read_table(path, columns=["vector"]).column("vector").combine_chunks()
            emb = column.flatten().to_numpy().reshape(len(column), -1) if len(column) else np.zeros((0, 0))
    except (OSError, ValueError, KeyError) as exc:
        raise TextMatchError(f"{path} cannot be read ({exc}); delete it and build again") from None
    if emb.ndim != 2 or len(emb) != n_rows:
        raise TextMatchError(f"{path} holds {emb.shape} vectors, not {n_rows}; delete it and build again")
    return np.ascontiguousarray(emb, dtype=np.float32)


class EncodedShards:
    """The finished shards of a build in index order (`files`, holding `counts` vectors each),
    read back from disk one at a time (`iter`), in `count` groups of about equal size
    (`groups`), or as an evenly spread sample (`sample`): the index is built from them without
    holding every embedding in memory (except where the index itself holds them: exact, flat,
    HNSW)."""

    def __init__(self, files: Sequence[Path], counts: Sequence[int]) -> None:
        if len(files) != len(counts) or not files:
            raise TextMatchError("no passages to encode")
        self.files = [Path(f) for f in files]
        self.counts = [int(c) for c in counts]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)  # (n_shards + 1,)
        self.n = int(self.starts[-1])
        self.n_shards = len(self.files)
        if not self.n:
            raise TextMatchError("no passages to encode")

    @functools.cached_property
    def dim(self) -> int:
        """The embeddings' dimension (from the first non-empty shard)."""
        return int(self.read(next(i for i, c in enumerate(self.counts) if c)).shape[1])

    @classmethod
    def uniform(cls, partial: Path, n: int, shard_size: int) -> "EncodedShards":
        """The single-process path's shards: shard-NNNNNN.npy of `shard_size` passages each."""
        n_shards = (n + shard_size - 1) // shard_size
        return cls([partial / f"shard-{s:06d}.npy" for s in range(n_shards)],
                   [min(shard_size, n - s * shard_size) for s in range(n_shards)])

    def read(self, shard: int) -> np.ndarray:
        """Shard `shard`'s embeddings, (rows, dim) float32."""
        path = self.files[shard]
        if not path.is_file():
            raise TextMatchError(f"encoding shard {path.name} is missing from {path.parent}; run the build again")
        return read_vectors(path, self.counts[shard])

    def iter(self) -> Iterator[tuple[int, np.ndarray]]:
        """(position of the shard's first passage, its embeddings) for every non-empty shard, in order."""
        for shard in range(self.n_shards):
            if self.counts[shard]:
                yield int(self.starts[shard]), self.read(shard)

    def slice(self, lo: int, hi: int) -> np.ndarray:
        """The embeddings of positions lo .. hi - 1, read from the shards they span, (hi - lo, dim)."""
        parts = [np.zeros((0, self.dim), dtype=np.float32)]
        first = int(np.searchsorted(self.starts, lo, side="right")) - 1
        for shard in range(max(first, 0), self.n_shards):
            begin = int(self.starts[shard])
            if begin >= hi:
                break
            if self.counts[shard]:
                parts.append(self.read(shard)[max(lo, begin) - begin : hi - begin])
        return np.concatenate(parts)

    def groups(self, count: int) -> Iterator[tuple[int, np.ndarray]]:
        """The passages in `count` consecutive groups of about equal size (index_shards): (first
        position, embeddings) each."""
        bounds = np.linspace(0, self.n, min(count, self.n) + 1).round().astype(int)
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            yield lo, self.slice(lo, hi)

    def sample(self, size: int) -> np.ndarray:
        """`size` embeddings at evenly spaced positions (all of them when size >= n), (size, dim)."""
        positions = np.unique(np.linspace(0, self.n - 1, min(size, self.n)).astype(np.int64))
        shard_of = np.searchsorted(self.starts, positions, side="right") - 1  # (size,)
        parts = []
        for shard in np.unique(shard_of):
            rows = positions[shard_of == shard] - self.starts[shard]
            parts.append(self.read(int(shard))[rows])
        return np.concatenate(parts)
