"""textmatch: few-shot text classification and retrieval with Matching Networks
(Vinyals et al. 2016, arXiv 1606.04080)."""

__version__ = "0.1.0"

from .data import (
    BeirData,
    ClassSplit,
    class_split_from_files,
    filter_classes,
    load_beir,
    load_text_dataset,
    random_class_split,
    sample_dataset,
)
from .encoders import BiLSTMEncoder, Encoder, TransformerEncoder
from .episodes import Episode, EpisodeSampler
from .errors import TextMatchError
from .fewshot import EpisodicResult, choose_threshold, evaluate_episodes, oos_report
from .hub import DEFAULT_MODEL
from .model_card import ModelCardData, generate_model_card
from .modeling import MatchingNetwork, MatchingNetworkConfig
from .retrieval import IndexConfig, Retriever
from .retrieval_training import RetrievalTrainer, RetrievalTrainingArguments
from .sklearn import MatchingNetworkClassifier
from .training import Trainer, TrainingArguments, TrainOutput

__all__ = [
    "BeirData",
    "ClassSplit",
    "class_split_from_files",
    "filter_classes",
    "generate_model_card",
    "load_beir",
    "random_class_split",
    "sample_dataset",
    "DEFAULT_MODEL",
    "BiLSTMEncoder",
    "Encoder",
    "Episode",
    "EpisodicResult",
    "choose_threshold",
    "evaluate_episodes",
    "oos_report",
    "EpisodeSampler",
    "MatchingNetwork",
    "MatchingNetworkClassifier",
    "IndexConfig",
    "Retriever",
    "RetrievalTrainer",
    "RetrievalTrainingArguments",
    "MatchingNetworkConfig",
    "ModelCardData",
    "TextMatchError",
    "Trainer",
    "TrainingArguments",
    "TrainOutput",
    "TransformerEncoder",
    "__version__",
    "load_text_dataset",
]
