"""README's "--prior auto" recipe, end to end on scikit-learn's digits, with no label but the PU labels.

Estimate π as `--prior auto` does (BBE, with its interval), sweep heads around the estimate, select one by PU-AUC on
held-out PU rows, calibrate it on the same rows by PU Platt scaling and score new rows with
probabilities. The true labels are only read to check the outcome.
"""

from __future__ import annotations

import numpy as np
import pytest

from impulses.pu.calibration import PUPlatt, expected_calibration_error
from impulses.pu.criteria import pu_auc
from impulses.pu.metrics import fast_auc
from impulses.pu.prior import auto_prior
from impulses.pu.sweep import run_sweep


@pytest.fixture(scope="module")
def digits_pu() -> dict[str, np.ndarray]:
    """Digits 0-3 positive; a third kept as unlabeled new data; 30% of the other positives labeled."""
    from sklearn.datasets import load_digits

    data = load_digits()
    X = (data.data / 16).astype(np.float32)
    y = np.isin(data.target, [0, 1, 2, 3]).astype(np.int8)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(X))
    new, pool = perm[:600], perm[600:]
    s = np.zeros(pool.size, dtype=np.int8)
    positives = np.flatnonzero(y[pool] == 1)
    s[rng.choice(positives, round(0.3 * positives.size), replace=False)] = 1
    return {"X": X[pool], "s": s, "y": y[pool], "X_new": X[new], "y_new": y[new]}


def hold_out(s: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded mask of ``fraction`` of the labeled and of the unlabeled rows (stratified on s)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(s.size, dtype=bool)
    for label in (0, 1):
        rows = np.flatnonzero(s == label)
        mask[rng.choice(rows, round(fraction * rows.size), replace=False)] = True
    return mask


def test_prior_auto_recipe_selects_and_calibrates_without_labels(digits_pu) -> None:
    X, s = digits_pu["X"], digits_pu["s"]
    # 1. estimate π = p(y=1 | s=0) as `--prior auto` does (BBE, with its interval)
    estimate = auto_prior(X, s)
    # 2. hold out half of the labeled and of the unlabeled rows (PU Platt needs enough held-out labeled
    #    positives: with a quarter, ~36 here, its fit was off by 0.18 in mean probability); sweep
    #    around the estimate on the rest
    val = hold_out(s, 0.5, seed=0)
    sweep = run_sweep(
        X[~val], s[~val], ["s"], losses=("imbnnpu", "nnpu"), priors=[estimate.prior],
        distortions=(0.5, 1.0, 2.0), seeds=2, epochs=30, batch_size=64, lr=3e-3,
    )  # fmt: skip
    # 3. select the head with the highest PU-AUC on the held-out PU rows
    val_logits = sweep.heads.decision_function(X[val])
    chosen = int(np.argmax(pu_auc(val_logits, s[val])))
    # 4. calibrate it on the same held-out rows (PU Platt at the estimated π) and score new data at
    #    the positive share p(y=1) the estimate implies for the whole population
    platt = PUPlatt(prior=estimate.prior).fit(val_logits[:, chosen], s[val])
    n_l, n_u = int(s.sum()), int((s == 0).sum())
    prevalence = (n_l + estimate.prior * n_u) / (n_l + n_u)
    new_logits = sweep.heads.decision_function(digits_pu["X_new"])
    probs = platt.predict_proba(new_logits[:, chosen], prevalence=prevalence)

    # checks, with the labels the recipe never saw
    y, y_new = digits_pu["y"], digits_pu["y_new"]
    true_prior = float(y[s == 0].mean())
    assert estimate.lower <= true_prior <= estimate.upper
    assert abs(prevalence - y_new.mean()) <= 0.05
    aucs = fast_auc(new_logits, y_new)
    print(
        f"π̂ {estimate.prior:.4f} (true {true_prior:.4f}), test AUC chosen {aucs[chosen]:.4f}, max {aucs.max():.4f}"
    )
    assert aucs[chosen] >= np.median(aucs)
    assert aucs[chosen] >= aucs.max() - 0.02
    assert probs.shape == (len(y_new),) and ((probs > 0) & (probs < 1)).all()
    print(
        f"ECE {expected_calibration_error(probs, y_new):.4f}, mean p {probs.mean():.4f} vs {y_new.mean():.4f}"
    )
    assert expected_calibration_error(probs, y_new) <= 0.1
    assert abs(probs.mean() - y_new.mean()) <= 0.05
