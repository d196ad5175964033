"""Few-shot classification on the core: the episodic trainer, the evaluation protocols
(episodes, out-of-scope), metrics and the scikit-learn estimator."""

from .contrastive import ContrastiveArguments, ContrastiveTrainer
from .evaluation import evaluate
from .fewshot import EpisodicResult, choose_threshold, evaluate_episodes, oos_report
from .metrics import classification_report
from .sklearn import MatchingNetworkClassifier
from .training import Trainer, TrainingArguments

__all__ = [
    "ContrastiveArguments",
    "ContrastiveTrainer",
    "EpisodicResult",
    "MatchingNetworkClassifier",
    "Trainer",
    "TrainingArguments",
    "choose_threshold",
    "classification_report",
    "evaluate",
    "evaluate_episodes",
    "oos_report",
]
