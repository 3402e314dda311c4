"""A scikit-learn style PU classifier: one linear head trained by :func:`impulses.pu.heads.train_heads`.

``PUClassifier(prior=0.074).fit(X, s)`` follows scikit-learn's conventions (``__init__`` only stores
hyperparameters, ``fit`` returns ``self``, fitted attributes end with ``_``, ``classes_ = [0, 1]``),
so it works in a :class:`~sklearn.pipeline.Pipeline`, with :func:`~sklearn.base.clone` and in grid
searches. ``fit`` takes the PU labels ``s`` (1 = labeled positive, 0 = unlabeled) as its ``y``
(true labels for ``loss="pn"``); ``score(X, y)`` is the accuracy against true labels.

``predict_proba`` is σ(decision_function): the sigmoid-loss PU objectives do not train calibrated
probabilities (the sigmoid loss is not a proper scoring rule and imbnnPU re-weights the classes by
π′), so treat it as a monotone score in [0, 1]; ``predict`` thresholds the logit at 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from impulses.pu.heads import HeadSpec, train_heads


class PUClassifier(ClassifierMixin, BaseEstimator):
    """Linear PU classifier (default: imbalanced nnPU with the sigmoid loss, the paper's head).

    Parameters mirror :func:`impulses.pu.heads.train_heads` and :class:`~impulses.pu.heads.HeadSpec`:
    ``loss`` (imbnnpu, nnpu, upu, bce, wbce, pn), ``prior`` (π = p(y=1 | s=0), required by the PU
    losses), ``prior_prime``, ``beta``, ``gamma``, ``pos_weight``, ``epochs``, ``batch_size``,
    ``lr``, ``stratified``, ``random_state`` (initialisation seed, and the shuffling seed unless
    ``shuffle_seed`` is given), ``device``.

    Fitted attributes: ``coef_`` (1, D), ``intercept_`` (1,), ``classes_``, ``n_features_in_``,
    ``n_skipped_batches_`` (batches without a labeled positive or unlabeled row, where the head
    took no step), ``history_``.
    """

    def __init__(
        self,
        loss: str = "imbnnpu",
        prior: float | None = None,
        *,
        prior_prime: float = 0.5,
        beta: float = 0.0,
        gamma: float = 1.0,
        pos_weight: float | None = None,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 3e-4,
        stratified: bool = False,
        random_state: int = 0,
        shuffle_seed: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.loss = loss
        self.prior = prior
        self.prior_prime = prior_prime
        self.beta = beta
        self.gamma = gamma
        self.pos_weight = pos_weight
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.stratified = stratified
        self.random_state = random_state
        self.shuffle_seed = shuffle_seed
        self.device = device

    def fit(self, X: Any, y: Any) -> PUClassifier:
        """Train on features ``X`` (N, D) and PU labels ``y`` = s (true labels for ``loss="pn"``)."""
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], y_numeric=True)
        head = HeadSpec(
            loss=self.loss,
            prior=self.prior,
            seed=int(self.random_state),
            prior_prime=self.prior_prime,
            beta=self.beta,
            gamma=self.gamma,
            pos_weight=self.pos_weight,
        )
        result = train_heads(
            X.astype(np.float32, copy=False),
            y,
            [head],
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            stratified=self.stratified,
            shuffle_seed=int(self.random_state if self.shuffle_seed is None else self.shuffle_seed),
            device=self.device,
        )
        self.coef_ = result.W.T.astype(np.float64)
        self.intercept_ = result.b.astype(np.float64)
        self.classes_ = np.array([0, 1])
        self.n_skipped_batches_ = int(result.skipped_batches[0])
        self.history_ = result.history
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """The logit of every row (N,); positive means class 1."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return X @ self.coef_[0] + self.intercept_[0]

    def predict(self, X: Any) -> np.ndarray:
        """1 where the logit is > 0, else 0."""
        return (self.decision_function(X) > 0).astype(np.int64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """[1 − σ(logit), σ(logit)] per row: a monotone score, NOT a calibrated probability."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1 - p, p], axis=1)
