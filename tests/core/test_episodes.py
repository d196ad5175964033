"""EpisodeSampler: N-way K-shot episodes (Vinyals et al. 2016, section 2.2)."""

from __future__ import annotations

from collections import Counter

import pytest

from conftest import TOPICS, make_sentences
from textmatch import Episode, EpisodeSampler, TextMatchError

CLASSES = list(TOPICS)  # 6 classes


def unique_data(n_per_class: int = 12) -> tuple[list[str], list[str]]:
    """Texts that are all different, so a text identifies its row."""
    texts, labels = [], []
    for c in CLASSES:
        for j in range(n_per_class):
            texts.append(f"{c} example number {j}")
            labels.append(c)
    return texts, labels


def check_episode(ep: Episode, n_way: int, k_shot: int, q_query: int, texts, labels) -> None:
    label_of = dict(zip(texts, labels))
    assert isinstance(ep, Episode)
    assert ep.n_way == n_way == len(ep.classes) == len(set(ep.classes))
    assert len(ep.support_texts) == len(ep.support_labels) == n_way * k_shot
    assert len(ep.query_texts) == len(ep.query_labels) == n_way * q_query
    assert Counter(ep.support_labels) == {j: k_shot for j in range(n_way)}
    assert Counter(ep.query_labels) == {j: q_query for j in range(n_way)}
    # local label j stands for dataset label classes[j]
    for t, y in zip(ep.support_texts, ep.support_labels):
        assert label_of[t] == ep.classes[y]
    for t, y in zip(ep.query_texts, ep.query_labels):
        assert label_of[t] == ep.classes[y]
    # no row is drawn twice, and support and query never share a row
    assert len(set(ep.support_texts)) == len(ep.support_texts)
    assert len(set(ep.query_texts)) == len(ep.query_texts)
    assert not set(ep.support_texts) & set(ep.query_texts)


@pytest.mark.parametrize("n_way,k_shot,q_query", [(2, 1, 1), (3, 2, 4), (5, 5, 3), (6, 1, 11), (6, 6, 6)])
def test_episode_counts_labels_and_disjointness(n_way, k_shot, q_query):
    texts, labels = unique_data(12)
    sampler = EpisodeSampler((texts, labels), n_way=n_way, k_shot=k_shot, q_query=q_query, seed=3)
    assert sampler.classes == CLASSES
    for ep in sampler.episodes(10):
        check_episode(ep, n_way, k_shot, q_query, texts, labels)


def test_episodes_cover_the_classes_and_vary():
    texts, labels = unique_data(12)
    sampler = EpisodeSampler((texts, labels), n_way=2, k_shot=1, q_query=1, seed=0)
    eps = list(sampler.episodes(40))
    assert set().union(*(e.classes for e in eps)) == set(CLASSES)
    assert len({tuple(e.support_texts + e.query_texts) for e in eps}) > 30


def test_determinism_same_seed_and_index():
    texts, labels = unique_data()
    a = EpisodeSampler((texts, labels), n_way=4, k_shot=2, q_query=3, seed=7)
    b = EpisodeSampler((texts, labels), n_way=4, k_shot=2, q_query=3, seed=7)
    for i in (0, 1, 5, 123):
        assert a.episode(i) == b.episode(i)
        assert a.episode(i) == a.episode(i)  # does not depend on what was drawn before
    # episodes(n, start) and iteration give the same episodes as episode(i)
    assert list(a.episodes(3, start=5)) == [a.episode(5), a.episode(6), a.episode(7)]
    it = iter(a)
    assert [next(it) for _ in range(3)] == [a.episode(0), a.episode(1), a.episode(2)]


def test_different_seed_or_index_gives_different_episodes():
    texts, labels = unique_data()
    a = EpisodeSampler((texts, labels), n_way=4, k_shot=2, q_query=3, seed=0)
    b = EpisodeSampler((texts, labels), n_way=4, k_shot=2, q_query=3, seed=1)
    assert all(a.episode(i) != b.episode(i) for i in range(5))
    assert a.episode(0) != a.episode(1)


def test_classes_restrict_the_episodes_to_a_class_split():
    texts, labels = make_sentences(8, seed=0)
    train_classes = ["weather", "music", "food", "travel"]
    valid_classes = ["money", "health"]
    train = EpisodeSampler((texts, labels), n_way=3, k_shot=2, q_query=2, seed=0, classes=train_classes)
    valid = EpisodeSampler((texts, labels), n_way=2, k_shot=2, q_query=2, seed=0, classes=valid_classes)
    assert train.classes == train_classes
    assert valid.classes == valid_classes
    seen = set()
    for ep in train.episodes(30):
        assert set(ep.classes) <= set(train_classes)
        assert not set(ep.classes) & set(valid_classes)
        rows = set(ep.support_texts) | set(ep.query_texts)
        allowed = {t for t, y in zip(texts, labels) if y in train_classes}
        assert rows <= allowed
        seen |= set(ep.classes)
    assert seen == set(train_classes)
    for ep in valid.episodes(10):
        assert set(ep.classes) == set(valid_classes)


def test_duplicate_class_names_in_classes_are_dropped():
    texts, labels = unique_data(4)
    s = EpisodeSampler((texts, labels), n_way=2, k_shot=1, q_query=1, classes=["food", "music", "food"])
    assert s.classes == ["food", "music"]


def test_dataset_with_string_labels():
    datasets = pytest.importorskip("datasets")
    texts, labels = unique_data(6)
    ds = datasets.Dataset.from_dict({"text": texts, "label": labels})
    sampler = EpisodeSampler(ds, n_way=3, k_shot=2, q_query=2, seed=1)
    assert sampler.classes == CLASSES
    for ep in sampler.episodes(5):
        check_episode(ep, 3, 2, 2, texts, labels)
        assert all(isinstance(c, str) for c in ep.classes)


def test_dataset_with_classlabel_column_gives_label_names():
    datasets = pytest.importorskip("datasets")
    texts, labels = unique_data(6)
    features = datasets.Features({"sentence": datasets.Value("string"), "intent": datasets.ClassLabel(names=CLASSES)})
    ds = datasets.Dataset.from_dict(
        {"sentence": texts, "intent": [CLASSES.index(y) for y in labels]}, features=features
    )
    assert ds[0]["intent"] == 0  # stored as ints
    sampler = EpisodeSampler(ds, n_way=4, k_shot=1, q_query=3, seed=2, text_column="sentence", label_column="intent")
    assert sampler.classes == CLASSES
    for ep in sampler.episodes(5):
        check_episode(ep, 4, 1, 3, texts, labels)
        assert set(ep.classes) <= set(CLASSES)
    # class splits are given by name too
    split = EpisodeSampler(
        ds, n_way=2, k_shot=1, q_query=1, classes=["music", "health"], text_column="sentence", label_column="intent"
    )
    assert set(split.episode(0).classes) == {"music", "health"}


def test_dict_of_columns_is_accepted():
    texts, labels = unique_data(3)
    sampler = EpisodeSampler({"text": texts, "label": labels}, n_way=2, k_shot=1, q_query=2)
    check_episode(sampler.episode(0), 2, 1, 2, texts, labels)


# -- errors --------------------------------------------------------------------------------
def test_n_way_larger_than_the_number_of_classes():
    texts, labels = unique_data(5)
    with pytest.raises(TextMatchError, match=r"n_way=7 .*only 6 classes"):
        EpisodeSampler((texts, labels), n_way=7, k_shot=1, q_query=1)
    with pytest.raises(TextMatchError, match=r"n_way=3 .*only 2 classes"):
        EpisodeSampler((texts, labels), n_way=3, k_shot=1, q_query=1, classes=["food", "music"])


def test_class_too_small_for_k_shot_plus_q_query_names_the_class_and_count():
    texts, labels = unique_data(6)
    texts += ["tiny one", "tiny two", "tiny three"]
    labels += ["tiny"] * 3
    with pytest.raises(TextMatchError, match=r"class 'tiny' has 3 examples.*k_shot \+ q_query = 2 \+ 2 = 4"):
        EpisodeSampler((texts, labels), n_way=2, k_shot=2, q_query=2)
    # exactly enough is fine
    s = EpisodeSampler((texts, labels), n_way=7, k_shot=2, q_query=1)
    check_episode(s.episode(0), 7, 2, 1, texts, labels)


def test_smallest_class_is_the_one_named():
    texts, labels = unique_data(2)  # every class has 2
    texts += ["only one"]
    labels += ["single"]
    with pytest.raises(TextMatchError, match=r"class 'single' has 1 examples.*7 class\(es\) too small"):
        EpisodeSampler((texts, labels), n_way=2, k_shot=2, q_query=1)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(n_way=1, k_shot=1, q_query=1), r"n_way must be an integer >= 2, got 1"),
        (dict(n_way=0, k_shot=1, q_query=1), r"n_way must be an integer >= 2, got 0"),
        (dict(n_way=2, k_shot=0, q_query=1), r"k_shot must be an integer >= 1, got 0"),
        (dict(n_way=2, k_shot=1, q_query=0), r"q_query must be an integer >= 1, got 0"),
        (dict(n_way=2, k_shot=1.5, q_query=1), r"k_shot must be an integer >= 1, got 1\.5"),
    ],
)
def test_bad_episode_sizes(kwargs, pattern):
    texts, labels = unique_data(4)
    with pytest.raises(TextMatchError, match=pattern):
        EpisodeSampler((texts, labels), **kwargs)


def test_unknown_class_in_classes():
    texts, labels = unique_data(4)
    with pytest.raises(TextMatchError, match=r"class 'sports' has no examples in the data"):
        EpisodeSampler((texts, labels), n_way=2, k_shot=1, q_query=1, classes=["food", "sports"])


def test_bad_data_is_reported():
    with pytest.raises(TextMatchError, match=r"text 1 is missing"):
        EpisodeSampler((["a b", None, "c d"], ["x", "y", "x"]), n_way=2, k_shot=1, q_query=1)
    with pytest.raises(TextMatchError, match=r"got 3 texts but 2 labels"):
        EpisodeSampler((["a b", "e f", "c d"], ["x", "y"]), n_way=2, k_shot=1, q_query=1)
    with pytest.raises(TextMatchError, match=r"expected a datasets.Dataset or a \(texts, labels\) pair, got int"):
        EpisodeSampler(5, n_way=2, k_shot=1, q_query=1)


def test_rows_and_class_rows_are_a_public_view():
    texts = [f"t{i}" for i in range(12)]
    labels = ["a", "b", "c"] * 4
    sampler = EpisodeSampler((texts, labels), n_way=2, k_shot=1, q_query=1, classes=["c", "a"])
    assert sampler.classes == ["c", "a"]
    assert [r.tolist() for r in sampler.class_rows] == [[2, 5, 8, 11], [0, 3, 6, 9]]
    assert sampler.rows.tolist() == [0, 2, 3, 5, 6, 8, 9, 11]
    sampler.class_rows[0][0] = 99  # a copy: the sampler is unchanged
    assert sampler.class_rows[0][0] == 2
    for i in range(20):  # every episode draws from those rows only
        support, query, _ = sampler.episode_indices(i)
        assert set(support.tolist()) | set(query.tolist()) <= set(sampler.rows.tolist())
