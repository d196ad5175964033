"""Document retrieval on the core: corpora and passages, vector indexes, BM25, fusion, one
ranking rule, BEIR data, IR metrics and retrieval training."""

from .beir import BeirData, load_beir, read_qrels
from .metrics import evaluate_retrieval
from .retriever import IndexConfig, Retriever
from .training import RetrievalTrainer, RetrievalTrainingArguments

__all__ = [
    "BeirData",
    "IndexConfig",
    "RetrievalTrainer",
    "RetrievalTrainingArguments",
    "Retriever",
    "evaluate_retrieval",
    "load_beir",
    "read_qrels",
]
