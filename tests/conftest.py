"""Shared fixtures: tiny models built locally (no download), a synthetic separable task."""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# A synthetic intent task: each class has its own topic words; sentences mix two or three of
# them with filler words shared by every class, so the task is separable but not trivial.
TOPICS = {
    "weather": ["rain", "sunny", "forecast", "cloudy", "snow", "wind"],
    "music": ["song", "album", "playlist", "guitar", "band", "track"],
    "food": ["pizza", "burger", "salad", "noodles", "dinner", "lunch"],
    "travel": ["flight", "hotel", "train", "airport", "ticket", "trip"],
    "money": ["balance", "account", "transfer", "card", "payment", "bank"],
    "health": ["doctor", "medicine", "fever", "appointment", "pharmacy", "cough"],
}
FILLER = ["please", "can", "you", "my", "the", "today", "now", "me", "i", "want", "about", "what", "is", "for", "a"]


def make_sentences(n_per_class: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for label, words in TOPICS.items():
        for _ in range(n_per_class):
            parts = rng.sample(words, rng.randint(1, 2)) + rng.sample(FILLER, rng.randint(2, 5))
            rng.shuffle(parts)
            texts.append(" ".join(parts))
            labels.append(label)
    return texts, labels


def write_vocab(path: Path) -> Path:
    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER) | {"hello", "bye", "test", "x"})
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    path.write_text("\n".join(special + words) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models gain nothing from two intra-op threads, and on a busy 2-core machine two
    threads were measured up to 50x slower than one (BiLSTM training): pin to one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_tokenizer")
    vocab_file = write_vocab(folder / "vocab.txt")
    vocab = {w: i for i, w in enumerate(vocab_file.read_text(encoding="utf-8").split())}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=True)  # transformers >= 5
    if len(tok) < len(vocab):  # transformers 4 takes a vocab file
        tok = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A randomly initialised 2-layer BERT saved as a transformers folder (safetensors)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    tok = BertTokenizerFast.from_pretrained(str(tiny_tokenizer_dir))
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def _tiny_bert_model(tiny_bert_dir):
    from textmatch import MatchingNetwork

    return MatchingNetwork.from_pretrained(str(tiny_bert_dir))


@pytest.fixture
def tiny_bert_model(_tiny_bert_model):
    """A MatchingNetwork over the tiny BERT, deep-copied per test."""
    return copy.deepcopy(_tiny_bert_model)


@pytest.fixture
def bilstm_model(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from textmatch import BiLSTMEncoder, MatchingNetwork, MatchingNetworkConfig

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    encoder = BiLSTMEncoder.from_tokenizer(tok, embedding_dim=32, hidden_size=32, dropout=0.0, max_length=32)
    return MatchingNetwork(encoder, config=MatchingNetworkConfig(temperature=0.1))


@pytest.fixture(scope="session")
def synthetic():
    """(train_texts, train_labels, valid_texts, valid_labels)."""
    train = make_sentences(30, seed=1)
    valid = make_sentences(10, seed=2)
    return train[0], train[1], valid[0], valid[1]


def pytest_collection_modifyitems(config, items):
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the benchmark data in {SHARED_DATA} (absent in a user's clone)")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)
