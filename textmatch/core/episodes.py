"""N-way K-shot episodes (Vinyals et al. 2016, section 2.2: "train as you test").

An episode draws n_way classes, then k_shot support and q_query query examples per class,
without overlap. Episode i of a sampler depends only on (seed, i), so validation episodes
are the same at every evaluation and a run is reproducible. `MultiSourceEpisodeSampler` draws
each episode from one of several labelled datasets (meta-training over datasets).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterator, Mapping, Sequence

import numpy as np

from ..data.loading import as_text_label_lists
from ..errors import TextMatchError


@dataclass
class Episode:
    """One task: support and query texts with episode-local labels 0..n_way-1.

    classes[j] is the dataset label behind local label j. source: the dataset it was drawn
    from, for episodes of a `MultiSourceEpisodeSampler` (None otherwise).
    """

    support_texts: list[str]
    support_labels: list[int]
    query_texts: list[str]
    query_labels: list[int]
    classes: list[Hashable] = field(default_factory=list)
    source: str | None = None

    @property
    def n_way(self) -> int:
        return len(self.classes)


class EpisodeStream:
    """Iteration over a sampler's episodes, from its `episode(i)`."""

    def episode(self, index: int) -> Episode:  # pragma: no cover - every sampler defines it
        raise NotImplementedError

    def episodes(self, n: int, start: int = 0) -> Iterator[Episode]:
        """Episodes start .. start + n - 1."""
        for i in range(start, start + n):
            yield self.episode(i)

    def __iter__(self) -> Iterator[Episode]:
        i = 0
        while True:
            yield self.episode(i)
            i += 1


class EpisodeSampler(EpisodeStream):
    """Samples episodes from a labelled dataset.

    data: a `datasets.Dataset` with text and label columns (string or ClassLabel labels), or
    a (texts, labels) pair. classes: restrict episodes to these labels (a class split).
    """

    def __init__(
        self,
        data: Any,
        n_way: int,
        k_shot: int,
        q_query: int,
        seed: int = 0,
        classes: Sequence[Hashable] | None = None,
        text_column: str = "text",
        label_column: str = "label",
    ) -> None:
        self.texts, labels = as_text_label_lists(data, text_column, label_column)
        for name, value, low in (("n_way", n_way, 2), ("k_shot", k_shot, 1), ("q_query", q_query, 1)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise TextMatchError(f"{name} must be an integer >= {low}, got {value!r}")
        self.n_way, self.k_shot, self.q_query, self.seed = int(n_way), int(k_shot), int(q_query), int(seed)

        by_class: dict[Hashable, list[int]] = {}
        for i, y in enumerate(labels):
            by_class.setdefault(y, []).append(i)
        if classes is not None:
            classes = list(dict.fromkeys(classes))
            unknown = [c for c in classes if c not in by_class]
            if unknown:
                raise TextMatchError(
                    f"class {unknown[0]!r} has no examples in the data ({len(unknown)} such classes); "
                    "check the class split against the dataset's labels"
                )
            by_class = {c: by_class[c] for c in classes}
        if len(by_class) < self.n_way:
            raise TextMatchError(
                f"n_way={self.n_way} but the data has only {len(by_class)} classes; lower n_way"
            )
        need = self.k_shot + self.q_query
        short = [(c, len(ix)) for c, ix in by_class.items() if len(ix) < need]
        if short:
            c, n = min(short, key=lambda t: t[1])
            raise TextMatchError(
                f"class {c!r} has {n} examples but k_shot + q_query = {self.k_shot} + {self.q_query} = {need} "
                f"are needed per class ({len(short)} class(es) too small); lower k_shot or q_query"
            )
        self.classes = list(by_class)
        self._indices = [np.asarray(by_class[c]) for c in self.classes]

    @property
    def class_rows(self) -> list[np.ndarray]:
        """The rows (indices into `texts`) of each class, in `classes` order: what episodes are drawn from."""
        return [rows.copy() for rows in self._indices]

    @property
    def rows(self) -> np.ndarray:
        """Every row an episode can use (those of the sampler's classes), ascending: (n_rows,)."""
        return np.sort(np.concatenate(self._indices)) if self._indices else np.zeros(0, dtype=int)

    def episode_indices(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row indices of the index-th episode: (support rows (n_way*k_shot,), query rows
        (n_way*q_query,), chosen class positions (n_way,)), class-major; local label of a row
        is its class's position in the third array. The same for the same (seed, index)."""
        rng = np.random.default_rng([self.seed, int(index)])
        chosen = rng.choice(len(self.classes), size=self.n_way, replace=False)
        support, query = [], []
        for c in chosen:
            picked = rng.choice(self._indices[c], size=self.k_shot + self.q_query, replace=False)
            support.append(picked[: self.k_shot])
            query.append(picked[self.k_shot :])
        return np.concatenate(support), np.concatenate(query), chosen

    def episode(self, index: int) -> Episode:
        """The index-th episode; the same for the same (seed, index)."""
        support, query, chosen = self.episode_indices(index)
        return Episode(
            [self.texts[i] for i in support],
            np.repeat(np.arange(self.n_way), self.k_shot).tolist(),
            [self.texts[i] for i in query],
            np.repeat(np.arange(self.n_way), self.q_query).tolist(),
            [self.classes[c] for c in chosen],
        )


class MultiSourceEpisodeSampler(EpisodeStream):
    """Episodes from several labelled datasets ("sources"), each episode from ONE source.

    samplers: source name -> that source's EpisodeSampler, with the source's own episode shape
    (a 7-class source gives 7-way episodes while another gives 64-way ones). Classes of two
    sources never meet in an episode: a query would then be told from support examples of
    another dataset by its style alone, which makes the episode easy and teaches nothing.

    Episode i: a `random.Random(f"{seed}:{i}")` draw picks the source, with probability
    proportional to the square root of its number of texts (those its sampler draws from),
    then it is that source's episode i. Square-root sampling is the alpha = 0.5 smoothing of
    XLM's language sampling (Lample & Conneau 2019), between sampling sources in proportion to
    their size (a small source is drowned) and uniformly (a small source is over-sampled, its
    episodes repeated). Episode i depends only on (seed, i) and the source samplers' seeds.
    """

    def __init__(self, samplers: Mapping[str, EpisodeSampler], seed: int = 0) -> None:
        if not isinstance(samplers, Mapping) or not samplers:
            raise TextMatchError(
                "MultiSourceEpisodeSampler needs at least one source: a dict of name -> EpisodeSampler"
            )
        for name, sampler in samplers.items():
            if not isinstance(name, str) or not name.strip():
                raise TextMatchError(f"source names must be non-empty strings, got {name!r}")
            if not isinstance(sampler, EpisodeSampler):
                raise TextMatchError(f"source {name!r}: expected an EpisodeSampler, got {type(sampler).__name__}")
        self.samplers: dict[str, EpisodeSampler] = dict(samplers)
        self.sources: list[str] = list(self.samplers)
        self.seed = int(seed)
        self.sizes: list[int] = [len(s.rows) for s in self.samplers.values()]  # texts per source
        weights = [math.sqrt(n) for n in self.sizes]
        total = sum(weights)
        self.probabilities: dict[str, float] = {name: w / total for name, w in zip(self.sources, weights)}
        self._cumulative = np.cumsum(weights).tolist()  # for random.choices

    def source_of(self, index: int) -> str:
        """The source of episode `index`: a draw of `random.Random(f"{seed}:{index}")`, with
        probability proportional to sqrt(texts of the source)."""
        rng = random.Random(f"{self.seed}:{int(index)}")
        return rng.choices(self.sources, cum_weights=self._cumulative)[0]

    def episode_indices(self, index: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
        """(source, support rows (n_way*k_shot,), query rows (n_way*q_query,), chosen class
        positions (n_way,)) of the index-th episode: `EpisodeSampler.episode_indices` of its
        source, whose texts the rows index."""
        source = self.source_of(index)
        return (source, *self.samplers[source].episode_indices(index))

    def episode(self, index: int) -> Episode:
        """The index-th episode (its `source` set); the same for the same (seed, index)."""
        source = self.source_of(index)
        episode = self.samplers[source].episode(index)
        episode.source = source
        return episode

