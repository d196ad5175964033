"""textmatch: few-shot text classification and retrieval with Matching Networks
(Vinyals et al. 2016, arXiv 1606.04080).

The layers: `core` (maths, episodes, encoders, MatchingNetwork) stands on `data`, `hub`
resolution and `backends`; `classification` and `retrieval` are siblings on the core;
`hub.model_card` renders cards from a model; `cli` is the top floor.
"""

__version__ = "0.1.0"

from .classification import (
    ContrastiveArguments,
    ContrastiveTrainer,
    EpisodicResult,
    MatchingNetworkClassifier,
    Trainer,
    TrainingArguments,
    choose_threshold,
    evaluate,
    evaluate_episodes,
    oos_report,
)
from .core import (
    BiLSTMEncoder,
    Encoder,
    Episode,
    EpisodeSampler,
    MatchingNetwork,
    MatchingNetworkConfig,
    ModelCardData,
    TrainOutput,
    TransformerEncoder,
)
from .data import (
    ClassSplit,
    class_split_from_files,
    filter_classes,
    load_text_dataset,
    random_class_split,
    sample_dataset,
)
from .errors import TextMatchError
from .hub import DEFAULT_MODEL
from .hub.model_card import (
    generate_model_card,  # also gives save_pretrained its card writer
)
from .retrieval import (
    BeirData,
    IndexConfig,
    RetrievalTrainer,
    RetrievalTrainingArguments,
    Retriever,
    load_beir,
)

__all__ = [
    "DEFAULT_MODEL",
    "BeirData",
    "BiLSTMEncoder",
    "ClassSplit",
    "ContrastiveArguments",
    "ContrastiveTrainer",
    "Encoder",
    "Episode",
    "EpisodeSampler",
    "EpisodicResult",
    "IndexConfig",
    "MatchingNetwork",
    "MatchingNetworkClassifier",
    "MatchingNetworkConfig",
    "ModelCardData",
    "RetrievalTrainer",
    "RetrievalTrainingArguments",
    "Retriever",
    "TextMatchError",
    "TrainOutput",
    "Trainer",
    "TrainingArguments",
    "TransformerEncoder",
    "__version__",
    "choose_threshold",
    "class_split_from_files",
    "evaluate",
    "evaluate_episodes",
    "filter_classes",
    "generate_model_card",
    "load_beir",
    "load_text_dataset",
    "oos_report",
    "random_class_split",
    "sample_dataset",
]
