"""PU selection criteria: hand-computed values, the SCAR identities on synthetic data, intervals, scorers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from impulses.pu.criteria import (
    CRITERIA,
    PU_SCORERS,
    bootstrap_interval,
    criterion,
    implied_pn_auc,
    lee_liu,
    pu_auc,
    pu_balanced_accuracy,
    pu_error_rates,
    pu_risk_accuracy,
    pu_scorer,
)
from impulses.pu.estimator import PUClassifier

# two labeled positives (3, 1) and four unlabeled rows (2, 1, -1, 2)
SCORES = np.array([3.0, 1.0, 2.0, 1.0, -1.0, 2.0])
S = np.array([1, 1, 0, 0, 0, 0])


def test_pu_auc_by_hand() -> None:
    # pairs (P, U): 3 beats all four; 1 loses to 2 twice, ties 1, beats -1 -> (4 + 0 + 0.5 + 1) / 8
    assert pu_auc(SCORES, S) == pytest.approx(5.5 / 8)
    assert pu_auc(SCORES, S.astype(bool)) == pytest.approx(5.5 / 8)
    both = pu_auc(np.stack([SCORES, -SCORES], axis=1), S)
    np.testing.assert_allclose(both, [5.5 / 8, 2.5 / 8])
    # weights: a weight of 2 on the unlabeled row scoring -1 adds one won pair per labeled positive
    w = np.array([1, 1, 1, 1, 2, 1.0])
    assert pu_auc(SCORES, S, sample_weight=w) == pytest.approx(7.5 / 10)
    assert np.isnan(pu_auc(SCORES, np.zeros(6, dtype=int)))


def test_implied_pn_auc_inverts_the_scar_identity() -> None:
    assert implied_pn_auc(5.5 / 8, 0.25) == pytest.approx((5.5 / 8 - 0.125) / 0.75)
    np.testing.assert_allclose(implied_pn_auc(np.array([0.6, 0.9]), [0.2, 0.5]), [0.5 / 0.8, 0.65 / 0.5])
    with pytest.raises(ValueError, match=r"prior must be in \(0, 1\)"):
        implied_pn_auc(0.8, 1.0)


def test_lee_liu_by_hand() -> None:
    # ŷ = score > 0: recall 2/2, P(ŷ=1) on unlabeled 3/4 -> 1 / 0.75
    assert lee_liu(SCORES > 0, S) == pytest.approx(4 / 3)
    # ŷ = score > 1.5: recall 1/2, P(ŷ=1) 2/4 -> 0.25 / 0.5
    assert lee_liu((SCORES > 1.5).astype(int), S) == pytest.approx(0.5)
    np.testing.assert_allclose(lee_liu(np.stack([SCORES > 0, SCORES > 1.5], 1), S), [4 / 3, 0.5])
    assert lee_liu(np.zeros(6, dtype=bool), S) == 0.0  # nothing predicted positive
    assert np.isnan(lee_liu(S.astype(bool), S))  # the labeled positives only: undefined
    with pytest.raises(ValueError, match="decisions"):
        lee_liu(SCORES, S)


def test_pu_risk_accuracies_by_hand() -> None:
    # threshold 0, π = 0.25: FNR = 0; P_U(ŷ=1) = 3/4; FPR = (3/4 − 0.25·1) / 0.75 = 2/3
    fnr, fpr = pu_error_rates(SCORES, S, 0.25)
    assert (fnr, fpr) == pytest.approx((0.0, 2 / 3))
    assert pu_risk_accuracy(SCORES, S, 0.25) == pytest.approx(1 - 0.75 * 2 / 3)  # = 1 − (P_U(ŷ=1) − π)
    assert pu_balanced_accuracy(SCORES, S, 0.25) == pytest.approx(1 - (2 / 3) / 2)
    assert pu_risk_accuracy(SCORES, S, 0.25, prevalence=0.5) == pytest.approx(1 - 0.5 * 2 / 3)
    # threshold 2.5: FNR = 1/2; no unlabeled row predicted positive, so FPR = (0 − 0.125)/0.75 -> 0
    fnr, fpr = pu_error_rates(SCORES, S, 0.25, threshold=2.5)
    assert (fnr, fpr) == pytest.approx((0.5, 0.0))
    assert pu_risk_accuracy(SCORES, S, 0.25, threshold=2.5) == pytest.approx(1 - 0.25 * 0.5)
    assert pu_risk_accuracy(SCORES, S, 0.25, threshold=2.5, prevalence=0.6) == pytest.approx(1 - 0.6 * 0.5)
    # K heads with one prior each
    two = np.stack([SCORES, SCORES - 2.5], axis=1)
    np.testing.assert_allclose(pu_risk_accuracy(two, S, [0.25, 0.25]), [0.5, 0.875])
    np.testing.assert_allclose(pu_balanced_accuracy(two, S, 0.25), [2 / 3, 0.75])
    with pytest.raises(ValueError, match="prior is required"):
        pu_risk_accuracy(SCORES, S, None)


def test_bad_labels_are_value_errors() -> None:
    with pytest.raises(ValueError, match="s must hold 0"):
        pu_auc(SCORES, S * 2)
    with pytest.raises(ValueError, match="s has 5 labels but there are 6 scores"):
        pu_auc(SCORES, S[:5])


def scar_sample(n_u: int, n_p: int, prior: float, gap: float, seed: int) -> tuple[np.ndarray, ...]:
    """1-D scores: positives ~ N(gap, 1), negatives ~ N(0, 1); labeled positives, then unlabeled rows."""
    rng = np.random.default_rng(seed)
    y_u = rng.random(n_u) < prior
    x = np.concatenate([rng.normal(gap, 1, n_p), rng.normal(0, 1, n_u) + gap * y_u])
    s = np.r_[np.ones(n_p, int), np.zeros(n_u, int)]
    return x, s, y_u


def test_scar_identity_and_the_estimates_on_synthetic_data() -> None:
    prior, gap = 0.3, 1.5
    x, s, y_u = scar_sample(200_000, 50_000, prior, gap, seed=0)
    auc_pn = norm.cdf(gap / np.sqrt(2))  # P(X+ > X−) for unit-variance Gaussians
    auc = pu_auc(x, s)
    assert auc == pytest.approx(prior / 2 + (1 - prior) * auc_pn, abs=0.004)
    assert implied_pn_auc(auc, prior) == pytest.approx(auc_pn, abs=0.006)
    # the risk estimates agree with the true rates of the unlabeled population at threshold 0.75
    pred_u = x[s == 0] > 0.75
    fnr, fpr = 1 - pred_u[y_u].mean(), pred_u[~y_u].mean()
    assert pu_error_rates(x, s, prior, threshold=0.75) == pytest.approx((fnr, fpr), abs=0.01)
    assert pu_risk_accuracy(x, s, prior, threshold=0.75) == pytest.approx((pred_u == y_u).mean(), abs=0.01)
    assert pu_balanced_accuracy(x, s, prior, threshold=0.75) == pytest.approx(1 - (fnr + fpr) / 2, abs=0.01)
    # Lee & Liu = precision · recall / π
    precision, recall = y_u[pred_u].mean(), 1 - fnr
    assert lee_liu(x > 0.75, s) == pytest.approx(precision * recall / prior, rel=0.02)


def test_bootstrap_interval() -> None:
    x, s, _ = scar_sample(2000, 500, 0.3, 1.5, seed=1)
    a = bootstrap_interval(pu_auc, x, s, n=100, seed=3)
    assert a.estimate == pu_auc(x, s) and a.low < a.estimate < a.high < 1
    assert a == bootstrap_interval(pu_auc, x, s, n=100, seed=3)
    wide = bootstrap_interval(pu_auc, x[::10], s[::10], n=100, seed=3)
    assert wide.high - wide.low > 2 * (a.high - a.low)  # 10x fewer rows, ~3x wider
    # positional and keyword arguments pass through; K heads give (K,) bounds
    acc = bootstrap_interval(pu_risk_accuracy, np.stack([x, x - 1], 1), s, 0.3, n=50, threshold=0.5)
    assert acc.low.shape == (2,) and (acc.low <= acc.estimate).all() and (acc.estimate <= acc.high).all()
    # labeled positives and unlabeled rows are resampled separately: their counts never change
    share = bootstrap_interval(lambda _x, lab: lab.mean(), x, s, n=20)
    assert share.low == share.high == pytest.approx(500 / 2500)
    # a perfect ranking stays perfect in every replicate
    sep = bootstrap_interval(pu_auc, np.r_[np.ones(5), np.zeros(9)], np.r_[np.ones(5), np.zeros(9)], n=20)
    assert (sep.estimate, sep.low, sep.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(pu_auc, x, s, level=1.5)


def test_criterion_dispatches_by_name() -> None:
    assert criterion("pu-auc", SCORES, S) == pu_auc(SCORES, S)
    assert criterion("lee-liu", SCORES, S, threshold=1.5) == lee_liu(SCORES > 1.5, S)
    assert criterion("pu-accuracy", SCORES, S, 0.25) == pu_risk_accuracy(SCORES, S, 0.25)
    assert criterion("pu-balanced-accuracy", SCORES, S, 0.25) == pu_balanced_accuracy(SCORES, S, 0.25)
    with pytest.raises(ValueError, match="name must be one of"):
        criterion("f1", SCORES, S)


def fitted() -> tuple[PUClassifier, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    X = rng.normal(size=(400, 3)) + 1.5 * y[:, None]
    s = (y & (rng.random(400) < 0.5)).astype(int)
    return PUClassifier(prior=0.2, epochs=20, lr=1e-2).fit(X, s), X, s


def test_scorers_compute_the_criteria_on_the_estimators_logits() -> None:
    clf, X, s = fitted()
    logits = clf.decision_function(X)
    assert set(PU_SCORERS) == set(CRITERIA)
    assert (
        PU_SCORERS["pu-auc"](clf, X, s) == pytest.approx(pu_auc(logits, s)) == pytest.approx(clf.score(X, s))
    )
    assert PU_SCORERS["lee-liu"](clf, X, s) == pytest.approx(lee_liu(logits > 0, s))
    # the accuracies take the estimator's prior unless given one
    assert PU_SCORERS["pu-accuracy"](clf, X, s) == pytest.approx(pu_risk_accuracy(logits, s, 0.2))
    assert pu_scorer("pu-balanced-accuracy", prior=0.4)(clf, X, s) == pytest.approx(
        pu_balanced_accuracy(logits, s, 0.4)
    )
    # labels in another encoding, the labeled positives carrying the smaller label, and a Pipeline
    y_str = np.where(s == 1, "a", "b")
    flipped = make_pipeline(StandardScaler(), PUClassifier(prior=0.2, epochs=20, lr=1e-2, pos_label="a"))
    flipped.fit(X, y_str)
    own = flipped[-1].positive_logit(flipped[0].transform(X))
    assert PU_SCORERS["pu-auc"](flipped, X, y_str) == pytest.approx(pu_auc(own, s))
    assert PU_SCORERS["lee-liu"](flipped, X, y_str) == pytest.approx(lee_liu(own > 0, s))
    with pytest.raises(ValueError, match="name must be one of"):
        pu_scorer("accuracy")
    with pytest.raises(ValueError, match="sample_weight"):
        PU_SCORERS["lee-liu"](clf, X, s, sample_weight=np.ones(len(s)))


def test_multi_metric_grid_search() -> None:
    _, X, s = fitted()
    search = GridSearchCV(
        PUClassifier(epochs=10, lr=1e-2), {"prior": [0.1, 0.3]}, scoring=PU_SCORERS, refit="pu-auc", cv=2
    ).fit(X, s)
    for name in CRITERIA:
        assert np.isfinite(search.cv_results_[f"mean_test_{name}"]).all()
    assert search.best_params_["prior"] in (0.1, 0.3) and hasattr(search.best_estimator_, "coef_")
