"""PUClassifier follows scikit-learn's conventions: Pipeline, clone, params, fitted attributes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from impulses.errors import ImpulsesError
from impulses.pu.estimator import PUClassifier
from impulses.pu.heads import HeadSpec, train_heads


def pu_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(800) < 0.2).astype(int)
    X = rng.normal(size=(800, 6)) * 5 + 20  # unscaled features, so the scaler matters
    X[y == 1, :2] += 12
    s = ((y == 1) & (rng.random(800) < 0.3)).astype(int)
    return X, s, y


def test_in_a_pipeline_it_learns_the_pu_task() -> None:
    X, s, y = pu_data()
    prior = y[s == 0].mean()
    model = make_pipeline(StandardScaler(), PUClassifier(prior=prior, epochs=30, lr=1e-2))
    assert model.fit(X, s) is model
    Xt, _, yt = pu_data(seed=1)
    pred = model.predict(Xt)
    assert set(np.unique(pred)) <= {0, 1}
    assert f1_score(yt, pred) > 0.75
    naive = make_pipeline(StandardScaler(), PUClassifier("bce", epochs=30, lr=1e-2)).fit(X, s)
    assert f1_score(yt, naive.predict(Xt)) < f1_score(yt, pred) - 0.2


def test_fitted_attributes_and_probabilities() -> None:
    X, s, _ = pu_data()
    clf = PUClassifier(prior=0.1, epochs=2, random_state=3)
    assert not hasattr(clf, "coef_")
    clf.fit(X, s)
    assert clf.coef_.shape == (1, 6) and clf.intercept_.shape == (1,) and clf.n_features_in_ == 6
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    logits = clf.decision_function(X)
    np.testing.assert_allclose(logits, X @ clf.coef_[0] + clf.intercept_[0])
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-logits)))
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(clf.predict(X), (logits > 0).astype(int))
    # the same head as train_heads with the seed as initialisation and shuffling seed
    ref = train_heads(X.astype(np.float32), s, [HeadSpec("imbnnpu", 0.1, seed=3)], epochs=2, shuffle_seed=3)
    np.testing.assert_allclose(clf.coef_[0], ref.W[:, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :5])


def test_clone_and_params() -> None:
    clf = PUClassifier("nnpu", 0.3, gamma=0.5, epochs=7)
    params = clf.get_params()
    assert (
        params["loss"] == "nnpu"
        and params["prior"] == 0.3
        and params["gamma"] == 0.5
        and params["epochs"] == 7
    )
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == params
    twin.set_params(prior=0.2, lr=1e-3)
    assert twin.prior == 0.2 and clf.prior == 0.3


def test_missing_prior_is_a_clear_error() -> None:
    X, s, _ = pu_data()
    with pytest.raises(ImpulsesError, match="prior"):
        PUClassifier().fit(X, s)
