"""PU calibration: Platt scaling on PU data recovers a known posterior; prior shift; ECE by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from impulses.errors import ImpulsesError, ParameterError
from impulses.pu.calibration import (
    PUPlatt,
    decide,
    expected_calibration_error,
    logit_balance,
    parse_threshold,
    shift_logits,
)
from impulses.pu.estimator import PUClassifier
from impulses.pu.heads import HeadSpec, train_heads

MU_POS, MU_NEG = np.array([1.0, 0.5]), np.array([-0.5, 0.0])


def gaussians(n_u: int, n_p: int, prior: float, seed: int) -> tuple[np.ndarray, ...]:
    """SCAR PU sample from two unit-covariance Gaussians: n_p labeled positives, then n_u unlabeled rows.

    Returns X, s, the true classes y of all rows, and the log-likelihood ratio log p₊(x)/p₋(x), which
    is linear: (μ₊ − μ₋)·x − (|μ₊|² − |μ₋|²)/2. The posterior at positive share P is
    σ(llr + logit P).
    """
    rng = np.random.default_rng(seed)
    y_u = rng.random(n_u) < prior
    X = np.concatenate(
        [
            rng.normal(size=(n_p, 2)) + MU_POS,
            rng.normal(size=(n_u, 2)) + np.where(y_u[:, None], MU_POS, MU_NEG),
        ]
    )
    s = np.r_[np.ones(n_p, int), np.zeros(n_u, int)]
    y = np.r_[np.ones(n_p, bool), y_u]
    llr = X @ (MU_POS - MU_NEG) - (MU_POS @ MU_POS - MU_NEG @ MU_NEG) / 2
    return X, s, y, llr


def test_pu_platt_recovers_the_posterior_of_two_gaussians() -> None:
    prior = 0.3
    _, s, _, llr = gaussians(20_000, 5_000, prior, seed=0)
    scores = 3 * llr + 2  # an uncalibrated head: an affine map of the log-likelihood ratio
    platt = PUPlatt(prior).fit(scores, s)  # PU labels only
    # the true map: posterior logit at π = llr + logit π = (scores − 2)/3 + logit π
    assert platt.coef_ == pytest.approx(1 / 3, abs=0.03)
    assert platt.intercept_ == pytest.approx(-2 / 3 + logit(prior), abs=0.1)
    assert platt.calibration_balance == prior
    _, _, y_test, llr_test = gaussians(20_000, 0, prior, seed=1)
    f_test = 3 * llr_test + 2
    for prevalence in (None, 0.6):
        target = prior if prevalence is None else prevalence
        error = np.abs(platt.predict_proba(f_test, prevalence) - expit(llr_test + logit(target)))
        assert error.max() < 0.04
    np.testing.assert_allclose(platt.logit(f_test, 0.6), shift_logits(platt.logit(f_test), prior, 0.6))
    assert expected_calibration_error(platt.predict_proba(f_test), y_test) < 0.02
    assert expected_calibration_error(expit(f_test), y_test) > 0.15  # σ(score) was far off


def test_pu_platt_calibrates_a_trained_pu_head() -> None:
    prior = 0.3
    X, s, _, _ = gaussians(8_000, 2_000, prior, seed=2)
    # imbnnPU with the sigmoid loss, trained until its direction is the Bayes one (μ₊ − μ₋): Platt
    # scaling fixes the scale and offset of a score, not its direction
    head = PUClassifier(prior=prior, epochs=30, lr=1e-2).fit(X, s)
    X_val, s_val, _, _ = gaussians(8_000, 2_000, prior, seed=3)
    platt = PUPlatt(prior).fit(head.decision_function(X_val), s_val)
    X_test, _, y_test, llr_test = gaussians(20_000, 0, prior, seed=4)
    f_test = head.decision_function(X_test)
    raw = expit(f_test)  # imbnnPU's σ(logit) refers to π′ = 0.5 at best, and is not calibrated
    probs = platt.predict_proba(f_test, prevalence=prior)
    assert np.abs(probs - expit(llr_test + logit(prior))).max() < 0.05
    assert expected_calibration_error(probs, y_test) < 0.02 < expected_calibration_error(raw, y_test)


def test_the_non_negative_correction_keeps_the_fit_finite() -> None:
    # unlabeled rows scoring as high as the labeled positives, at a prior far too large for them:
    # the unbiased risk is unbounded below (its negative part can be made arbitrarily negative),
    # the non-negative risk is not
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(1, 1, 200), rng.normal(0, 1, 2000)]
    s = np.r_[np.ones(200, int), np.zeros(2000, int)]
    platt = PUPlatt(0.9).fit(scores, s)
    assert np.isfinite([platt.coef_, platt.intercept_]).all() and platt.risk_ >= 0
    probs = platt.predict_proba(scores)
    assert ((probs >= 0) & (probs <= 1)).all()


def test_pu_platt_errors() -> None:
    with pytest.raises(ValueError, match=r"prior must be in \(0, 1\)"):
        PUPlatt(0.0)
    with pytest.raises(ValueError, match="needs labeled positives"):
        PUPlatt(0.3).fit(np.arange(4.0), np.zeros(4))
    with pytest.raises(ValueError, match="constant"):
        PUPlatt(0.3).fit(np.ones(4), [1, 0, 0, 0])
    with pytest.raises(ValueError, match="same length"):
        PUPlatt(0.3).fit(np.arange(4.0), [1, 0, 0])
    with pytest.raises(ImpulsesError, match="not fitted"):
        PUPlatt(0.3).predict_proba(np.arange(4.0))


def test_shift_logits_by_hand_and_against_a_balanced_logistic_regression() -> None:
    assert shift_logits(0.0, 0.5, 0.2) == pytest.approx(np.log(0.25))
    np.testing.assert_allclose(shift_logits([1.0, -2.0], 0.3, 0.3), [1.0, -2.0])
    # one balance per head broadcasts over the columns
    np.testing.assert_allclose(
        shift_logits(np.zeros((2, 2)), [0.5, 0.2], 0.2), [[np.log(0.25), 0], [np.log(0.25), 0]]
    )
    with pytest.raises(ValueError, match="prevalence"):
        shift_logits(0.0, 0.5, 1.0)
    # a logistic regression with balanced class weights estimates the log-odds at balance 0.5
    rng = np.random.default_rng(5)
    y = rng.random(40_000) < 0.2
    X = rng.normal(size=(40_000, 2)) + np.where(y[:, None], MU_POS, MU_NEG)
    balanced = LogisticRegression(class_weight="balanced").fit(X, y)
    llr = X @ (MU_POS - MU_NEG) - (MU_POS @ MU_POS - MU_NEG @ MU_NEG) / 2
    probs = expit(shift_logits(balanced.decision_function(X), logit_balance("pn"), 0.2))
    assert np.abs(probs - expit(llr + logit(0.2))).max() < 0.03


def test_logit_balance() -> None:
    assert logit_balance("imbnnpu", 0.1, prior_prime=0.4) == 0.4
    assert logit_balance("nnPU", 0.1) == logit_balance("upu", 0.1) == 0.1
    assert logit_balance("pn") == 0.5
    for loss in ("bce", "wbce"):
        with pytest.raises(ValueError, match="odds of being labeled"):
            logit_balance(loss)
    with pytest.raises(ValueError, match="prior is required"):
        logit_balance("nnpu")


def test_expected_calibration_error_by_hand() -> None:
    # 2 bins, (0, .5] and (.5, 1]: |0.5 − 0.15|·2/4 + |1 − 0.8|·2/4
    assert expected_calibration_error([0.1, 0.2, 0.7, 0.9], [0, 1, 1, 1], bins=2) == pytest.approx(0.275)
    # 0.5 lies on an edge and goes to the lower bin; 0 goes to the first bin
    assert expected_calibration_error([0.0, 0.5, 0.6], [0, 1, 1], bins=2) == pytest.approx((0.5 + 0.4) / 3)
    assert expected_calibration_error([0.25, 0.75], [0, 1], bins=1) == pytest.approx(0.0)
    assert expected_calibration_error([0.25, 0.75], [0, 1], bins=15) == pytest.approx(0.25)
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
    with pytest.raises(ValueError, match="probabilities"):
        expected_calibration_error([1.5], [1])
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error([0.5], [1], bins=0)


@pytest.mark.parametrize("loss", ["nnpu", "imbnnpu"])
def test_logistic_surrogate_heads_shifted_probabilities_recover_the_posterior(loss: str) -> None:
    """A logistic-surrogate PU head estimates the log-odds at its balance (π for nnPU, π′ for imbnnPU):
    shifted to P, its probabilities are the true posterior of the two Gaussians at P."""
    prior = 0.3
    X, s, _, _ = gaussians(16_000, 4_000, prior, seed=5)
    head = HeadSpec(loss, prior, surrogate="logistic", prior_prime=0.5)
    result = train_heads(X.astype(np.float32), s, [head], epochs=40, batch_size=256, lr=1e-2)
    X_test, _, y_test, llr_test = gaussians(20_000, 0, 0.4, seed=6)
    # the true log-odds at balance w are (μ₊ − μ₋)·x − (|μ₊|² − |μ₋|²)/2 + logit w
    balance = prior if loss == "nnpu" else 0.5
    np.testing.assert_allclose(result.W[:, 0], MU_POS - MU_NEG, atol=0.15)
    assert result.b[0] == pytest.approx(-(MU_POS @ MU_POS - MU_NEG @ MU_NEG) / 2 + logit(balance), abs=0.1)
    probs = result.predict_proba(X_test, prevalence=0.4)[:, 0]
    error = np.abs(probs - expit(llr_test + logit(0.4)))
    assert error.mean() < 0.02 and error.max() < 0.1
    assert expected_calibration_error(probs, y_test) < 0.02
    # the default prevalence is the head's prior π
    default = result.predict_proba(X_test)[:, 0]
    assert np.abs(default - expit(llr_test + logit(prior))).mean() < 0.02


def test_heads_result_calibrate_then_predict_proba_and_the_refusal_before() -> None:
    prior = 0.3
    X, s, _, _ = gaussians(8_000, 2_000, prior, seed=2)
    heads = [HeadSpec("imbnnpu", prior, name="sigmoid"), HeadSpec("bce", name="bce")]
    result = train_heads(X.astype(np.float32), s, heads, epochs=30, batch_size=256, lr=1e-2)
    X_val, s_val, _, _ = gaussians(8_000, 2_000, prior, seed=3)
    with pytest.raises(
        ParameterError,
        match=r"^heads include head sigmoid \(imbnnpu, sigmoid loss\), whose logits are scores",
    ):
        result.predict_proba(X_val, prevalence=0.4)
    result.calibrate(X_val, s_val)  # bce has no prior: left uncalibrated
    entry, bce_entry = result.meta["calibration"]
    assert bce_entry is None and entry["prior"] == prior and entry["method"] == "pu-platt"
    platt = PUPlatt(prior).fit(result.decision_function(X_val)[:, 0], s_val)
    assert (entry["coef"], entry["intercept"]) == (platt.coef_, platt.intercept_)
    with pytest.raises(ParameterError, match=r"include head bce \(bce\), whose logits are scores"):
        result.predict_proba(X_val, prevalence=0.4)
    result.calibrate(X_val, s_val, prior=prior)  # a prior for every head calibrates bce too
    X_test, _, y_test, llr_test = gaussians(20_000, 0, 0.4, seed=4)
    probs = result.predict_proba(X_test, prevalence=0.4)
    for k in range(2):
        assert np.abs(probs[:, k] - expit(llr_test + logit(0.4))).max() < 0.06
        assert expected_calibration_error(probs[:, k], y_test) < 0.02
    with pytest.raises(ParameterError, match="prior must be a float or one value per head"):
        result.calibrate(X_val, s_val, prior=[0.3])


def test_decision_rules_by_hand() -> None:
    z = np.array([[2.0, -1.0], [-0.5, 3.0], [0.1, 0.0], [-3.0, 1.0]])
    assert decide(z, "logit0").tolist() == [[True, False], [False, True], [True, False], [False, True]]
    p = np.array([[0.7, 0.2], [0.5, 0.9], [0.49, 0.1], [0.1, 0.6]])
    assert decide(z, "bayes", p).tolist() == [[True, False], [True, True], [False, False], [False, True]]
    # top ⌈0.5·4⌉ = 2 rows per head; ⌈0.3·4⌉ = 2; ⌈0.25·4⌉ = 1
    assert decide(z, "rate:0.5").tolist() == [[True, False], [False, True], [True, False], [False, True]]
    assert decide(z, "rate:0.25")[:, 1].tolist() == [False, True, False, False]
    assert decide(z[:, 0], "rate:0.3").tolist() == [True, False, True, False]
    assert decide(z, "rate:1").all()
    assert parse_threshold("RATE:0.1") == ("rate", 0.1)
    for bad, message in (
        ("rate:0", "share Q in \\(0, 1\\]"),
        ("rate:x", "share Q"),
        ("p50", "must be one of"),
    ):
        with pytest.raises(ParameterError, match=message):
            decide(z, bad)
    with pytest.raises(ParameterError, match=r"^prevalence is needed by the bayes threshold"):
        decide(z, "bayes")
