"""Class-prior estimation: conversions by hand, BBE against a brute-force count, accuracy on real splits."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from impulses.catalog import FASHION_MNIST_CLASSES
from impulses.errors import ImpulsesError, ParameterError
from impulses.pu.prior import (
    AUTO_PRIOR_METHOD,
    TednOptions,
    auto_prior,
    bbe_from_scores,
    class_prior_from_prior,
    elkan_noto_from_probs,
    estimate_prior,
    held_out_scores,
    prior_from_class_prior,
    prior_report,
    tedn_prior,
)
from impulses.pu.splits import PRESETS, make_split, preset_classes

FASHION_MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fashion-mnist"


# --------------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------------
def test_prior_conversion_by_hand():
    # 3,000 P + 30,000 N, c = 0.2: p(y=1) = 1/11; U = 2,400 P + 30,000 N -> π = 2400/32400.
    assert prior_from_class_prior(1 / 11, 0.2) == pytest.approx(2400 / 32400)
    assert class_prior_from_prior(2400 / 32400, 0.2) == pytest.approx(1 / 11)
    # c = 0.5, p = 0.5: 50 P (25 labeled) + 50 N -> U = 25 P + 50 N -> π = 1/3.
    assert prior_from_class_prior(0.5, 0.5) == pytest.approx(1 / 3)
    assert prior_from_class_prior(0.3, 1.0) == 0.0  # every positive labeled: none left in U


@pytest.mark.parametrize("c", [0.05, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("p", [0.01, 0.1, 0.4, 0.8])
def test_prior_conversions_invert_each_other(p, c):
    assert class_prior_from_prior(prior_from_class_prior(p, c), c) == pytest.approx(p)


def test_prior_conversion_rejects_values_outside_unit_interval():
    with pytest.raises(ImpulsesError, match=r"label_frequency = 1\.2"):
        prior_from_class_prior(0.1, 1.2)
    with pytest.raises(ImpulsesError, match=r"prior = -0\.1"):
        class_prior_from_prior(-0.1, 0.2)


# --------------------------------------------------------------------------------------------------
# Elkan–Noto
# --------------------------------------------------------------------------------------------------
def test_elkan_noto_conversion_by_hand():
    # c = 0.25 with 100 labeled of 1,000: p(y=1) = 100 / (0.25 * 1000) = 0.4 -> 400 positives,
    # 300 of them among the 900 unlabeled -> π = 1/3.
    estimate = elkan_noto_from_probs(np.array([0.2, 0.3, 0.25, 0.25]), n_labeled=100, n_unlabeled=900)
    assert estimate.details["label_frequency"] == pytest.approx(0.25)
    assert estimate.details["class_prior"] == pytest.approx(0.4)
    assert estimate.prior == pytest.approx(1 / 3)
    assert estimate.prior == pytest.approx(prior_from_class_prior(0.4, 0.25))


def test_elkan_noto_needs_positive_scores():
    with pytest.raises(ImpulsesError, match="p\\(s=1\\|x\\) = 0"):
        elkan_noto_from_probs(np.zeros(5), n_labeled=5, n_unlabeled=10)


# --------------------------------------------------------------------------------------------------
# BBE on scores
# --------------------------------------------------------------------------------------------------
def brute_force_bbe(
    p: np.ndarray, u: np.ndarray, delta: float = 0.1, gamma: float = 0.01
) -> tuple[float, float]:
    """The paper's Algorithm 1 written as a plain loop over thresholds, counting with >=."""
    eps = math.sqrt(math.log(4 / delta) / (2 * len(p))) + math.sqrt(math.log(4 / delta) / (2 * len(u)))
    best = (math.inf, 0.0, 0.0)
    for c in sorted(set(p.tolist()) | set(u.tolist())):
        q_p = sum(x >= c for x in p) / len(p)
        q_u = sum(x >= c for x in u) / len(u)
        if q_p > 0:
            objective = q_u / q_p + (1 + gamma) * eps / q_p
            if objective < best[0]:
                best = (objective, q_u / q_p, (1 + gamma) * eps / q_p)
    return best[1], best[2]


def test_bbe_on_a_pure_top_bin_by_hand():
    # U = 900 negatives scored in [0, 1] + 100 positives scored like the last P of each group of 10
    # (P sorted). At the threshold p[10k + j] (0 <= j < 10), q_u = (100 - k)/1000 and
    # q_p = (1000 - 10k - j)/1000, so q_u/q_p >= 0.1, with equality at j = 0 where the penalty
    # (1+γ)ε/q_p is smallest for k = 0: ĉ = p[0] = 2, q_p = 1, π̂ = 0.1.
    p = np.linspace(2, 3, 1000)
    u = np.concatenate([np.linspace(0, 1, 900), p[9::10]])
    estimate = bbe_from_scores(p, u)
    eps = 2 * math.sqrt(math.log(40) / 2000)
    assert estimate.prior == pytest.approx(0.1)
    assert estimate.bound == pytest.approx(1.01 * eps)
    assert (estimate.lower, estimate.upper) == pytest.approx((0.1 - 1.01 * eps, 0.1 + 1.01 * eps))
    assert estimate.details["threshold"] == 2.0 and estimate.details["q_p"] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bbe_matches_a_brute_force_count(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.normal(1.0, 1.0, 150), 2)  # rounded: ties between and within P and U
    u = np.round(np.concatenate([rng.normal(1.0, 1.0, 60), rng.normal(-1.0, 1.0, 240)]), 2)
    expected, bound = brute_force_bbe(p, u)
    estimate = bbe_from_scores(p, u)
    assert estimate.prior == pytest.approx(min(1.0, expected))
    assert estimate.bound == pytest.approx(bound)


def test_bbe_rejects_empty_or_non_finite_scores():
    with pytest.raises(ImpulsesError, match="got 0 and 3"):
        bbe_from_scores(np.array([]), np.ones(3))
    with pytest.raises(ImpulsesError, match="NaN or Inf"):
        bbe_from_scores(np.array([1.0, np.nan]), np.ones(3))


# --------------------------------------------------------------------------------------------------
# Estimates from features
# --------------------------------------------------------------------------------------------------
def test_estimate_prior_on_separable_gaussians():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(1.5, 1.0, (1000, 10)), rng.normal(-1.5, 1.0, (4000, 10))])
    s = np.zeros(5000, dtype=int)
    s[rng.choice(1000, 300, replace=False)] = 1
    true_prior = 700 / 4700
    estimates = estimate_prior(X, s, seed=0)
    assert abs(estimates["bbe"].prior - true_prior) <= 0.03
    assert estimates["bbe"].lower <= true_prior <= estimates["bbe"].upper
    assert abs(estimates["elkan-noto"].prior - true_prior) <= 0.03


def test_cross_fitting_scores_every_row_and_holdout_half():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    s = (np.arange(200) < 40).astype(int)
    logits, probs = held_out_scores(X, s, n_folds=4)
    assert np.isfinite(logits).all() and ((probs > 0) & (probs < 1)).all()
    logits, _ = held_out_scores(X, s, cross_fit=False)
    assert np.isfinite(logits).sum() == 100 and np.isfinite(logits[s == 1]).sum() == 20


def test_estimate_prior_errors():
    X = np.zeros((10, 2))
    with pytest.raises(ImpulsesError, match="at least 2 labeled"):
        estimate_prior(X, np.r_[1, np.zeros(9, dtype=int)])
    with pytest.raises(ImpulsesError, match=r"must be 0 .* or 1"):
        estimate_prior(X, np.full(10, 2))
    with pytest.raises(ImpulsesError, match=r"unknown prior estimator.*known: bbe, elkan-noto, tedn"):
        estimate_prior(X, np.r_[1, 1, np.zeros(8, dtype=int)], methods=("tice",))


# --------------------------------------------------------------------------------------------------
# TEDⁿ
# --------------------------------------------------------------------------------------------------
def gaussian_mixture(
    n_pos: int, n_neg: int, shift: float, *, dim: int = 10, label_frequency: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """Positives N(+shift, I), negatives N(−shift, I) in ``dim`` dimensions; a random share of the positives labeled.

    Returns X, s and the true π = p(y=1 | s=0), the positives' share of the unlabeled rows.
    """
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(shift, 1.0, (n_pos, dim)), rng.normal(-shift, 1.0, (n_neg, dim))])
    s = np.zeros(n_pos + n_neg, dtype=int)
    n_labeled = round(label_frequency * n_pos)
    s[rng.choice(n_pos, n_labeled, replace=False)] = 1
    return X.astype(np.float32), s, (n_pos - n_labeled) / (n_pos - n_labeled + n_neg)


@pytest.mark.parametrize(("n_pos", "shift"), [(1000, 0.8), (600, 0.8), (2000, 0.7)])
def test_tedn_recovers_the_prior_of_gaussian_mixtures(n_pos, shift):
    X, s, true_prior = gaussian_mixture(n_pos, 4000, shift, seed=n_pos)
    estimate = tedn_prior(X, s, seed=0)
    assert estimate.method == "tedn"
    assert abs(estimate.prior - true_prior) <= 0.03, (estimate.prior, true_prior)
    assert estimate.lower <= true_prior <= estimate.upper
    assert estimate.details["n_p"] + estimate.details["n_u"] == len(s)  # cross-fitted: every row scored


def test_tedn_is_deterministic_given_the_seed():
    X, s, _ = gaussian_mixture(500, 2000, 0.5)
    options = TednOptions(hidden=16, warm_epochs=2, epochs=3)
    first = tedn_prior(X, s, options=options, seed=3)
    assert tedn_prior(X, s, options=options, seed=3) == first
    assert estimate_prior(X, s, methods=("tedn",), seed=3, tedn=options) == {"tedn": first}


def test_tedn_cvir_drops_the_highest_scored_unlabeled_share(monkeypatch):
    """Each CVIR epoch trains on the fold's unlabeled rows minus the ⌊α̂·n⌋ the classifier scores highest."""
    import impulses.pu.prior as prior_module

    X, s, _ = gaussian_mixture(500, 2000, 0.5)
    calls = []

    def record(model, optimizer, Z, positives, unlabeled, batch_size, gen):
        calls.append((model, Z, positives.copy(), unlabeled.copy()))  # no step: scores stay put

    monkeypatch.setattr(prior_module, "_tedn_epoch", record)
    estimate = tedn_prior(X, s, options=TednOptions(warm_epochs=1, epochs=1), n_folds=2, seed=0)
    assert len(calls) == 4  # 2 folds x (1 warm-start + 1 CVIR epoch)
    alpha = estimate.details["warm_start_prior"]
    assert 0 < alpha < 1 and estimate.prior == alpha  # untrained in between: the same scores, the same α̂
    for (model, Z, positives, warm_rows), (_, _, cvir_positives, kept) in zip(
        calls[:2], calls[2:], strict=True
    ):
        assert (s[positives] == 1).all() and (s[warm_rows] == 0).all()
        assert np.array_equal(positives, cvir_positives)
        assert kept.size == warm_rows.size - math.floor(alpha * warm_rows.size)
        dropped = np.setdiff1d(warm_rows, kept)
        scores = prior_module._tedn_scores(model, Z)
        assert scores[dropped].min() >= scores[kept].max()
    held_out = np.setdiff1d(np.arange(len(s)), np.concatenate([calls[0][2], calls[0][3]]))
    assert np.array_equal(held_out, np.sort(np.concatenate([calls[1][2], calls[1][3]])))  # folds swap


def test_tedn_options_are_checked():
    X, s, _ = gaussian_mixture(100, 400, 0.5)
    for field_name, value in (
        ("hidden", -1),
        ("epochs", 1.5),
        ("batch_size", 0),
        ("min_steps", 0),
        ("lr", 0.0),
    ):
        with pytest.raises(ParameterError, match=f"^{field_name} must") as info:
            tedn_prior(X, s, options=TednOptions(**{field_name: value}))
        assert info.value.params == (field_name,)
    with pytest.raises(ImpulsesError, match="at least 3 labeled"):
        tedn_prior(X[:200], np.r_[1, 1, np.zeros(198, dtype=int)], n_folds=3)


def test_adam_matches_torch_optim_adam():
    import torch

    from impulses.pu.prior import _Adam

    start = torch.linspace(-1, 1, 5)
    ours, theirs = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    optimizers = (
        _Adam([ours], lr=0.01, weight_decay=0.001),
        torch.optim.Adam([theirs], lr=0.01, weight_decay=0.001),
    )
    for _ in range(30):
        for param, optimizer in zip((ours, theirs), optimizers, strict=True):
            param.grad = None
            ((param**3).sum() + (param * torch.arange(5.0)).sum()).backward()
            optimizer.step()
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert not torch.allclose(ours, start, atol=0.1)  # it moved


@pytest.mark.slow
def test_tedn_on_40k_by_128_features_takes_under_a_minute():
    import time

    X, s, true_prior = gaussian_mixture(3000, 37000, 0.15, dim=128, label_frequency=0.2)
    started = time.perf_counter()
    estimate = tedn_prior(X, s)
    assert time.perf_counter() - started < 60
    assert abs(estimate.prior - true_prior) <= 0.05


def test_bbe_interval_covers_the_prior_on_digits():
    from sklearn.datasets import load_digits

    X, targets = load_digits(return_X_y=True)
    ids = np.array([str(i) for i in range(targets.size)], dtype=object)
    for seed in range(3):
        split = make_split(ids, targets, [3], label_frequency=0.5, seed=seed)
        rows = split.labels["id"].cast(int).to_numpy()
        bbe = estimate_prior(X[rows], split.labels["s"].to_numpy(), methods=("bbe",), seed=seed)["bbe"]
        assert bbe.lower <= split.stats.prior <= bbe.upper


def digits_pu(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, targets = load_digits(return_X_y=True)
    ids = np.array([str(i) for i in range(targets.size)], dtype=object)
    split = make_split(ids, targets, [3], label_frequency=0.5, seed=seed)
    rows = split.labels["id"].cast(int).to_numpy()
    return X[rows], split.labels["s"].to_numpy(), split.labels["y"].to_numpy()


def test_prior_report_counts_estimates_and_class_priors():
    X, s, y = digits_pu()
    report = prior_report(X, s, y, n_folds=3, seed=1)
    expected = estimate_prior(X, s, n_folds=3, seed=1)
    n_l, n_u = int(s.sum()), int((s == 0).sum())
    assert (report["n_labeled"], report["n_unlabeled"]) == (n_l, n_u)
    true_prior = float(y[s == 0].mean())
    assert report["true_prior"] == pytest.approx(true_prior)
    assert report["true_class_prior"] == pytest.approx(y.mean())  # p(y=1) of the whole set
    for name, est in expected.items():
        entry = report["estimates"][name]
        assert entry["prior"] == pytest.approx(est.prior)
        assert entry["class_prior"] == pytest.approx((n_l + est.prior * n_u) / (n_l + n_u))
        assert entry["error"] == pytest.approx(est.prior - true_prior)
    assert prior_report(X, s)["true_prior"] is None
    with pytest.raises(ParameterError, match="n_folds must be at least 2, got 1"):
        prior_report(X, s, n_folds=1)  # refused, not clamped


def test_auto_prior_is_the_chosen_estimate_and_refuses_0_or_1(monkeypatch):
    X, s, _ = digits_pu()
    assert AUTO_PRIOR_METHOD == "bbe"  # the smallest error over docs/results/prior-estimators
    assert auto_prior(X, s) == estimate_prior(X, s, methods=("bbe",))["bbe"]
    assert auto_prior(X, s, method="tedn") == estimate_prior(X, s, methods=("tedn",))["tedn"]
    import impulses.pu.prior as prior_module

    def zero(X, s, methods, **kwargs):
        return {methods[0]: prior_module.PriorEstimate(methods[0], 0.0)}

    monkeypatch.setattr(prior_module, "estimate_prior", zero)
    with pytest.raises(ParameterError, match="BBE estimate for label set s_2 is 0") as info:
        auto_prior(X, s, label_set="s_2")
    assert info.value.params == ("priors",)
    with pytest.raises(ParameterError, match="auto: the TEDⁿ estimate is 0"):
        auto_prior(X, s, method="tedn")


def _idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian dims after a 4-byte magic whose last byte is ndim."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data[4 : 4 + 4 * ndim], dtype=">u4")
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


@pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason=f"Fashion-MNIST not found at {FASHION_MNIST}",
)
def test_bbe_within_003_on_the_fashion_mnist_preset_split():
    """The fashion-mnist-imbalanced split (π = 0.0741) on raw pixels reduced to 50 principal components."""
    from sklearn.decomposition import PCA

    images = _idx(FASHION_MNIST / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255
    targets = _idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz").astype(np.int64)
    features = PCA(50, random_state=0).fit_transform(images)
    preset = PRESETS["fashion-mnist-imbalanced"]
    positive = preset_classes(preset, list(FASHION_MNIST_CLASSES), 10)
    ids = np.array([str(i) for i in range(targets.size)], dtype=object)
    errors = []
    for seed in range(3):
        split = make_split(
            ids, targets, positive, n_positive=preset.n_positive, label_frequency=0.2, seed=seed
        )
        rows = split.labels["id"].cast(int).to_numpy()
        bbe = estimate_prior(features[rows], split.labels["s"].to_numpy(), methods=("bbe",), seed=seed)["bbe"]
        errors.append(bbe.prior - split.stats.prior)
    print(f"BBE - true prior on fashion-mnist-imbalanced, seeds 0..2: {np.round(errors, 4).tolist()}")
    assert max(abs(e) for e in errors) <= 0.03
