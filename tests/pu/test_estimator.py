"""PUClassifier: scikit-learn's own estimator checks, label encodings, a PU score, grid search on PU data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from impulses.pu.criteria import PU_SCORERS, pu_auc
from impulses.pu.estimator import PUClassifier
from impulses.pu.heads import HeadSpec, train_heads


def pu_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(800) < 0.2).astype(int)
    X = rng.normal(size=(800, 6)) * 5 + 20  # unscaled features, so the scaler matters
    X[y == 1, :2] += 12
    s = ((y == 1) & (rng.random(800) < 0.3)).astype(int)
    return X, s, y


# The checks fit on 200 rows of blobs (one batch per epoch) and require a training accuracy > 0.83;
# the paper's defaults (lr 3e-4) take 100 tiny steps there, too few to move the head from its
# random initialisation, so the checked instances use a larger learning rate (nnPU at π = 0.1
# still calls too few rows positive within 100 steps on these fully labeled blobs; at π = 0.3 it
# does not). No check is expected to fail.
@parametrize_with_checks(
    [
        PUClassifier(prior=0.1, epochs=100, lr=1e-2),
        PUClassifier("nnpu", prior=0.3, epochs=100, lr=3e-2),
        PUClassifier("bce", epochs=100, lr=1e-2),
    ],
    expected_failed_checks=lambda estimator: {},
)
def test_scikit_learn_estimator_checks(estimator: PUClassifier, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


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
    assert clf.pos_label_ == 1
    logits = clf.decision_function(X)
    np.testing.assert_allclose(logits, X @ clf.coef_[0] + clf.intercept_[0])
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-logits)))
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), (logits > 0).astype(int))
    # the same head as train_heads with the seed as initialisation and shuffling seed
    ref = train_heads(X.astype(np.float32), s, [HeadSpec("imbnnpu", 0.1, seed=3)], epochs=2, shuffle_seed=3)
    np.testing.assert_allclose(clf.coef_[0], ref.W[:, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :5])


@pytest.mark.parametrize(
    ("labels", "pos_label", "expected_classes"),
    [
        ((0, 1), None, [0, 1]),
        ((-1, 1), None, [-1, 1]),
        ((False, True), None, [False, True]),
        (("unlabeled", "positive"), "positive", ["positive", "unlabeled"]),
        ((0, 1), 0, [0, 1]),  # the labeled positives carry the smaller label
    ],
)
def test_any_two_labels_train_the_same_head(labels: tuple, pos_label: object, expected_classes: list) -> None:
    X, s, _ = pu_data()
    y = np.where(s == 1, labels[1], labels[0])
    if pos_label == 0:  # swap the encoding: 0 marks the labeled positives
        y = 1 - s
    clf = PUClassifier(prior=0.1, epochs=3, pos_label=pos_label).fit(X, y)
    ref = PUClassifier(prior=0.1, epochs=3).fit(X, s)
    assert clf.classes_.tolist() == expected_classes
    assert clf.pos_label_ == (labels[1] if pos_label is None else pos_label)
    # the head is the same; decision_function > 0 predicts classes_[1], as in scikit-learn
    np.testing.assert_allclose(clf.positive_logit(X), ref.decision_function(X), rtol=1e-9)
    predicted_positive = clf.predict(X) == clf.pos_label_
    np.testing.assert_array_equal(predicted_positive, ref.predict(X) == 1)
    assert clf.score(X, y) == pytest.approx(ref.score(X, s))


def test_random_state_none_or_generator_draws_the_seed() -> None:
    X, s, _ = pu_data()
    a = PUClassifier(prior=0.1, epochs=1, random_state=np.random.RandomState(5)).fit(X, s)
    b = PUClassifier(prior=0.1, epochs=1, random_state=np.random.RandomState(5)).fit(X, s)
    c = PUClassifier(prior=0.1, epochs=1, random_state=np.random.RandomState(6)).fit(X, s)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.allclose(a.coef_, c.coef_)
    with pytest.raises(ValueError, match="seed"):
        PUClassifier(prior=0.1, epochs=1, random_state="x").fit(X, s)


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


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "prior is required"),
        ({"prior": 1.0}, r"prior must be in \(0, 1\)"),
        ({"prior": 0.1, "prior_prime": 0.0}, "prior_prime"),
        ({"prior": 0.1, "loss": "svm"}, "loss must be one of"),
        ({"prior": 0.1, "epochs": 0}, "epochs must be an integer >= 1"),
        ({"prior": 0.1, "batch_size": 2.5}, "batch_size"),
        ({"prior": 0.1, "lr": 0}, "lr must be"),
        ({"prior": 0.1, "gamma": -1}, "gamma must be"),
        ({"prior": 0.1, "pos_weight": 0}, "pos_weight"),
        ({"prior": 0.1, "pos_label": 7}, r"pos_label must be one of the labels \[0, 1\]"),
    ],
)
def test_bad_parameters_are_value_errors_naming_the_parameter(params: dict, message: str) -> None:
    X, s, _ = pu_data()
    with pytest.raises(ValueError, match=message):
        PUClassifier(**params).fit(X, s)


def test_labels_must_be_two_classes() -> None:
    X, s, _ = pu_data()
    with pytest.raises(ValueError, match="two labels"):
        PUClassifier(prior=0.1).fit(X, np.zeros_like(s))
    with pytest.raises(ValueError, match="Only binary classification"):
        PUClassifier(prior=0.1).fit(X, s + (np.arange(len(s)) % 3 == 0))
    clf = PUClassifier(prior=0.1, epochs=1).fit(X, s)
    with pytest.raises(ValueError, match="not one of the labels"):
        clf.score(X, s + 1)


def test_score_is_the_pu_auc_not_the_accuracy_against_s() -> None:
    X, s, _ = pu_data()
    clf = PUClassifier(prior=0.2, epochs=5, lr=1e-2).fit(X, s)
    logits = clf.decision_function(X)
    assert clf.score(X, s) == pytest.approx(roc_auc_score(s, logits))
    weights = np.linspace(0.5, 2, len(s))
    assert clf.score(X, s, sample_weight=weights) == pytest.approx(
        roc_auc_score(s, logits, sample_weight=weights)
    )
    # a model that calls nothing positive scores 0.5 with constant logits, not its accuracy vs s
    clf.coef_ = np.zeros_like(clf.coef_)
    clf.intercept_ = np.array([-5.0])
    assert (clf.predict(X) == s).mean() > 0.9
    assert clf.score(X, s) == pytest.approx(0.5)
    assert pu_auc(clf.decision_function(X), s) == pytest.approx(0.5)


def digits_pu_split() -> tuple[np.ndarray, ...]:
    """Digits 3, 5, 8 positive; 30% of them labeled (SCAR); a train split and a PN test split."""
    X, digit = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    rng = np.random.default_rng(0)
    y = np.isin(digit, (3, 5, 8)).astype(int)
    s = ((y == 1) & (rng.random(len(y)) < 0.3)).astype(int)
    order = rng.permutation(len(y))
    train, test = order[:1200], order[1200:]
    return X[train], s[train], X[test], y[test]


def test_grid_search_on_pu_data_picks_the_prior_with_the_best_pn_auc() -> None:
    X, s, X_test, y_test = digits_pu_split()
    priors = [0.05, 0.2, 0.4, 0.8]  # the unlabeled rows hold 24% positives
    model = PUClassifier("nnpu", epochs=30, lr=3e-3, batch_size=128)
    test_auc = {
        p: roc_auc_score(y_test, clone(model).set_params(prior=p).fit(X, s).decision_function(X_test))
        for p in priors
    }
    best, worst = max(test_auc, key=test_auc.get), min(test_auc, key=test_auc.get)
    assert test_auc[best] - test_auc[worst] > 0.05  # the grid matters
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(model, {"prior": priors}, cv=cv).fit(X, s)  # default score: PU-AUC
    assert search.best_params_["prior"] == best
    by_scorer = GridSearchCV(model, {"prior": priors}, cv=cv, scoring=PU_SCORERS["pu-auc"]).fit(X, s)
    np.testing.assert_allclose(
        by_scorer.cv_results_["mean_test_score"], search.cv_results_["mean_test_score"]
    )
    # accuracy against s, the old score, prefers calling few rows positive: the worst prior here
    by_accuracy = GridSearchCV(model, {"prior": priors}, cv=cv, scoring="accuracy").fit(X, s)
    assert by_accuracy.best_params_["prior"] == worst
