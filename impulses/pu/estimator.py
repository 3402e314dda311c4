"""A scikit-learn PU classifier: one linear head trained by :func:`impulses.pu.heads.train_heads`.

``PUClassifier(prior=0.074).fit(X, y)`` follows scikit-learn's conventions and passes its estimator
checks (``tests/pu/test_estimator.py``): ``__init__`` only stores hyperparameters, ``fit`` returns
``self``, fitted attributes end with ``_``, errors about values are ``ValueError`` subclasses, and it works
in a :class:`~sklearn.pipeline.Pipeline`, with :func:`~sklearn.base.clone` and in grid searches.

**Labels.** ``fit`` takes the PU labels as its ``y``: any two labels ({0, 1}, {-1, 1}, booleans,
strings), one of which, ``pos_label``, marks the labeled positives (default: the greater label,
i.e. 1 or True for the usual encodings); every other row is unlabeled. With ``loss="pn"`` (the
supervised baseline) ``y`` holds the true classes and ``pos_label`` the positive one.
``classes_`` is the sorted pair of labels and, as in scikit-learn's linear classifiers,
``decision_function > 0`` predicts ``classes_[1]``: when ``pos_label`` is the smaller label the
head's weights are negated into ``coef_``/``intercept_``.

**Score.** ``score(X, y)`` is the **PU-AUC**: the ROC-AUC of the labeled positives against the
unlabeled rows of ``(X, y)`` (:func:`impulses.pu.criteria.pu_auc`), not the accuracy against the
PU labels (which ranks a model that calls nothing positive above a good one). Under SCAR
AUC_PU = π/2 + (1−π)·AUC_PN, with π = p(y=1 | s=0), so the PU-AUC ranks models as the PN AUC does,
without a single negative label. Other criteria for :class:`~sklearn.model_selection.GridSearchCV`
are in :data:`impulses.pu.criteria.PU_SCORERS`.

**Probabilities.** ``predict_proba`` is σ(logit). The sigmoid-loss PU objectives do not train
calibrated probabilities (the sigmoid loss is not a proper scoring rule and imbnnPU re-weights the
classes by π′), so it is a monotone score in [0, 1]; calibrate it on held-out PU data with
:class:`impulses.pu.calibration.PUPlatt`. ``predict`` thresholds the logit at 0.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from impulses.errors import ParameterError
from impulses.pu.heads import HeadSpec, train_heads
from impulses.pu.losses import LOSSES


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class PUClassifier(LinearClassifierMixin, BaseEstimator):
    """Linear PU classifier (default: imbalanced nnPU with the sigmoid loss, the paper's head).

    Args:
        loss: ``imbnnpu``, ``nnpu``, ``upu`` (PU losses, need ``prior``), ``bce``, ``wbce`` (unlabeled
            taken as negative) or ``pn`` (true labels).
        prior: π = p(y=1 | s=0), the share of positives among the unlabeled rows (PU losses).
        pos_label: The label of the labeled positives in ``y`` (default: the greater label).
        prior_prime: imbnnPU's π′, the class balance the head is trained for.
        beta: The nnPU threshold: the negative risk is corrected when it falls below −β.
        gamma: The step size of that correction.
        pos_weight: wbce/pn weight of the positives (default |U|/|P|, pn: |N|/|P|).
        epochs: Passes over the training rows.
        batch_size: Rows per Adam step.
        lr: Adam's learning rate.
        stratified: Give every batch its share of labeled positives.
        random_state: An int seeds the initialisation (as ``HeadSpec.seed``) and, unless
            ``shuffle_seed`` is given, the batch order; ``None`` or a ``RandomState`` draws that
            seed from :func:`~sklearn.utils.check_random_state`.
        shuffle_seed: Seed of the batch order (default: the initialisation seed).
        device: Torch device of the training.

    Attributes:
        coef_: (1, D) weights; ``decision_function > 0`` predicts ``classes_[1]``.
        intercept_: (1,) bias.
        classes_: The two labels, sorted.
        pos_label_: The label of the labeled positives.
        n_features_in_: D.
        n_skipped_batches_: Batches without a labeled positive or unlabeled row (no step taken).
        history_: The trainer's per-epoch records (empty unless tracked).
    """

    def __init__(
        self,
        loss: str = "imbnnpu",
        prior: float | None = None,
        *,
        pos_label: Any = None,
        prior_prime: float = 0.5,
        beta: float = 0.0,
        gamma: float = 1.0,
        pos_weight: float | None = None,
        epochs: int = 100,
        batch_size: int = 256,
        lr: float = 3e-4,
        stratified: bool = False,
        random_state: int | np.random.RandomState | None = 0,
        shuffle_seed: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.loss = loss
        self.prior = prior
        self.pos_label = pos_label
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

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # one head: labeled positive vs unlabeled
        return tags

    def _check_params(self) -> str:
        """The loss name, lower-cased, after checking every hyperparameter (ParameterError otherwise)."""
        if not isinstance(self.loss, str) or self.loss.lower() not in LOSSES:
            raise ParameterError("loss", f"must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        loss = self.loss.lower()
        if LOSSES[loss].uses_prior:
            if self.prior is None:
                raise ParameterError("prior", f"is required by the {loss} loss (a value in (0, 1))")
            if not (_real(self.prior) and 0 < self.prior < 1):
                raise ParameterError("prior", f"must be in (0, 1), got {self.prior!r}")
            if loss == "imbnnpu" and not (_real(self.prior_prime) and 0 < self.prior_prime < 1):
                raise ParameterError("prior_prime", f"must be in (0, 1), got {self.prior_prime!r}")
        for name in ("beta", "gamma"):
            value = getattr(self, name)
            if not (_real(value) and value >= 0):
                raise ParameterError(name, f"must be a number >= 0, got {value!r}")
        if self.pos_weight is not None and not (_real(self.pos_weight) and self.pos_weight > 0):
            raise ParameterError("pos_weight", f"must be a number > 0 or None, got {self.pos_weight!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not (_int(value) and value >= 1):
                raise ParameterError(name, f"must be an integer >= 1, got {value!r}")
        if not (_real(self.lr) and self.lr > 0):
            raise ParameterError("lr", f"must be a number > 0, got {self.lr!r}")
        if self.shuffle_seed is not None and not _int(self.shuffle_seed):
            raise ParameterError("shuffle_seed", f"must be an integer or None, got {self.shuffle_seed!r}")
        return loss

    def _seed(self) -> int:
        """The initialisation seed: ``random_state`` itself when an int, else drawn from it."""
        rng = check_random_state(self.random_state)  # also rejects what is not a seed
        if _int(self.random_state):
            return int(self.random_state)
        return int(rng.randint(np.iinfo(np.int32).max))

    @classmethod
    def from_heads(cls, path: Any, head: int | str = 0) -> PUClassifier:
        """One trained head (``heads.pt``, portable heads or a HeadsResult) as a fitted classifier.

        Args:
            path: ``heads.pt``, a portable ``.safetensors``/``.json``/folder, or a ``HeadsResult``.
            head: The head's index or name.

        Returns:
            A fitted PUClassifier with the head's weights and hyperparameters
            (:func:`impulses.pu.export.pu_classifier_from_heads`).

        Raises:
            ParameterError: ``head`` names no head.
            ImpulsesError: the file is missing or not a heads file.
        """
        from impulses.pu.export import pu_classifier_from_heads

        return pu_classifier_from_heads(path, head=head)

    def fit(self, X: Any, y: Any) -> PUClassifier:
        """Train on features ``X`` (N, D) and PU labels ``y`` (``pos_label`` = labeled positive).

        Args:
            X: Features (N, D); float16 and float32 are trained on as they are, anything else is
                converted to float32 (the head's arithmetic).
            y: Two labels: ``pos_label`` for the labeled positives, the other for unlabeled rows
                (with ``loss="pn"``: the true classes).

        Returns:
            self, fitted.

        Raises:
            ValueError: A hyperparameter out of range, labels that are not exactly two classes, a
                ``pos_label`` that is not one of them, or features scikit-learn's validation rejects.
        """
        loss = self._check_params()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32, np.float16])
        check_classification_targets(y)
        y_type = type_of_target(y, input_name="y")
        classes = np.unique(y)
        if y_type != "binary" or classes.size != 2:
            raise ParameterError(
                "y",
                f"must hold exactly two labels (labeled positive and unlabeled), got {classes.size} classes "
                f"({y_type} target). Only binary classification is supported.",
            )
        pos_label = classes[-1] if self.pos_label is None else self.pos_label
        matches = np.flatnonzero([c == pos_label for c in classes])
        if matches.size != 1:
            raise ParameterError(
                "pos_label", f"must be one of the labels {classes.tolist()}, got {pos_label!r}"
            )
        s = (y == classes[matches[0]]).astype(np.int8)
        seed = self._seed()
        head = HeadSpec(
            loss=loss,
            prior=self.prior,
            seed=seed,
            prior_prime=self.prior_prime,
            beta=self.beta,
            gamma=self.gamma,
            pos_weight=self.pos_weight,
        )
        result = train_heads(
            X if X.dtype != np.float64 else X.astype(np.float32),
            s,
            [head],
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            stratified=self.stratified,
            shuffle_seed=seed if self.shuffle_seed is None else int(self.shuffle_seed),
            device=self.device,
        )
        sign = 1.0 if matches[0] == 1 else -1.0  # coef_ points to classes_[1], as in scikit-learn
        self.coef_ = sign * result.W.T.astype(np.float64)
        self.intercept_ = sign * result.b.astype(np.float64)
        self.classes_ = classes
        self.pos_label_ = classes[matches[0]]
        self.n_skipped_batches_ = int(result.skipped_batches[0])
        self.history_ = result.history
        return self

    def positive_logit(self, X: Any) -> np.ndarray:
        """The head's logit of every row (N,): positive means ``pos_label`` (labeled-positive class)."""
        d = self.decision_function(X)
        return d if self.pos_label_ == self.classes_[1] else -d

    def predict_proba(self, X: Any) -> np.ndarray:
        """[1 − σ(d), σ(d)] per row, columns in ``classes_`` order: a monotone score, NOT calibrated."""
        from scipy.special import expit

        p = expit(self.decision_function(X))
        return np.stack([1 - p, p], axis=1)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The log of :meth:`predict_proba`, computed without underflow."""
        from scipy.special import log_expit

        d = self.decision_function(X)
        return np.stack([log_expit(-d), log_expit(d)], axis=1)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """PU-AUC: ROC-AUC of the rows labeled ``pos_label`` against the others (higher is better).

        Under SCAR, AUC_PU = π/2 + (1−π)·AUC_PN (π = p(y=1 | s=0)), so it ranks models as the PN AUC
        does; :func:`impulses.pu.criteria.implied_pn_auc` turns it into a PN AUC estimate.

        Args:
            X: Features (N, D).
            y: PU labels in the encoding ``fit`` saw (with ``loss="pn"``: true labels, so the
                score is the ROC-AUC).
            sample_weight: Optional row weights.

        Returns:
            The PU-AUC, NaN when ``y`` holds only one of the labels.
        """
        from impulses.pu.criteria import pu_auc

        check_is_fitted(self)
        return float(pu_auc(self.positive_logit(X), self.pu_labels(y), sample_weight=sample_weight))

    def pu_labels(self, y: Any) -> np.ndarray:
        """``y`` as 0/1 PU labels (1 where ``y == pos_label_``); a label ``fit`` did not see is an error."""
        check_is_fitted(self)
        y = np.asarray(y).reshape(-1)
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ParameterError(
                "y", f"holds {y[unknown][0]!r}, which is not one of the labels {self.classes_.tolist()}"
            )
        return (y == self.pos_label_).astype(np.int8)
