"""A scikit-learn estimator around MatchingNetwork, for cross_val_score, GridSearchCV and pipelines."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..core.modeling import MatchingNetwork
from ..hub.resolution import DEFAULT_MODEL
from .training import Trainer, TrainingArguments


class MatchingNetworkClassifier(ClassifierMixin, BaseEstimator):
    """fit(X, y) stores X as the support set, after `num_episodes` of episodic fine-tuning on it
    (0 = no training, plain matching with the pretrained encoder).

    model: a Hub id or folder, or a MatchingNetwork (copied at each fit, never changed).
    """

    def __init__(
        self,
        model: Any = DEFAULT_MODEL,
        num_episodes: int = 0,
        learning_rate: float = 3e-5,
        temperature: float = 0.05,
        threshold: float | None = None,
        batch_size: int = 32,
        seed: int = 42,
    ) -> None:
        self.model = model
        self.num_episodes = num_episodes
        self.learning_rate = learning_rate
        self.temperature = temperature
        self.threshold = threshold
        self.batch_size = batch_size
        self.seed = seed

    def _build(self) -> MatchingNetwork:
        if isinstance(self.model, MatchingNetwork):
            net = copy.deepcopy(self.model)
            net.config.threshold = self.threshold
            net.config.temperature = self.temperature
            with_temp = net.log_temperature.data
            with_temp.fill_(float(np.log(self.temperature)))
            return net
        return MatchingNetwork.from_pretrained(self.model, temperature=self.temperature, threshold=self.threshold)

    def fit(self, X: Any, y: Any) -> "MatchingNetworkClassifier":
        texts, labels = list(X), list(np.asarray(y).tolist())
        net = self._build()
        if self.num_episodes > 0:
            args = TrainingArguments(
                num_episodes=self.num_episodes,
                learning_rate=self.learning_rate,
                encode_batch_size=self.batch_size,
                seed=self.seed,
                show_progress_bar=False,
            )
            Trainer(net, args, train_dataset=(texts, labels)).train()
        net.fit(texts, labels, batch_size=self.batch_size)
        self.model_ = net
        self.classes_ = np.asarray(net.classes_)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.model_.predict_proba(list(X), batch_size=self.batch_size)

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.model_.predict(list(X), batch_size=self.batch_size))

    def explain(self, X: Any, top_k: int = 3) -> list[Any]:
        """Why each text gets its label: `MatchingNetwork.explain` of the fitted model (the
        support examples with the largest attention weight, the runner-up's best example)."""
        return self.model_.explain(list(X), top_k=top_k, batch_size=self.batch_size)
