"""Per-head metrics against hand-computed values; the vectorised AUC against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from impulses.pu.metrics import evaluate_heads, fast_auc


def test_metrics_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0])
    # head 0: logits -> predictions [1, 0, 1, 0, 0] (0.0 counts as negative); head 1: perfect ranking
    scores = np.array([[2.0, 3.0], [-1.0, 2.0], [0.5, -1.0], [0.0, -2.0], [-3.0, -3.0]])
    rows = evaluate_heads(scores, y, names=["a", "b"])
    a, b = rows
    assert a["head"] == "a"
    assert a["accuracy"] == pytest.approx(3 / 5)  # rows 0, 3, 4 right
    # tp = 1, fp = 1, fn = 1 -> precision = recall = 1/2 -> F1 = 1/2
    assert a["f1"] == pytest.approx(0.5)
    # positives scored 2 and -1; negatives 0.5, 0, -3: pairs won 3 (2>all) + 1 (-1>-3) = 4 of 6
    assert a["auc"] == pytest.approx(4 / 6)
    # AP: ranking 2(+), 0.5(-), 0(-), -1(+), -3(-) -> precision at the positives 1/1 and 2/4
    assert a["ap"] == pytest.approx((1 + 0.5) / 2)
    assert b["accuracy"] == 1.0 and b["f1"] == 1.0 and b["auc"] == 1.0 and b["ap"] == 1.0


def test_one_class_test_set_gives_nan_auc_with_a_note() -> None:
    rows = evaluate_heads(np.array([[1.0], [-1.0]]), np.array([0, 0]))
    assert math.isnan(rows[0]["auc"]) and math.isnan(rows[0]["ap"])
    assert "only class 0" in rows[0]["note"]
    assert rows[0]["accuracy"] == 0.5 and rows[0]["f1"] == 0.0
    assert np.isnan(fast_auc(np.array([1.0, 2.0]), np.array([1, 1]))).all()


def test_fast_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.3).astype(int)
    scores = np.round(rng.normal(size=(500, 5)) + y[:, None] * np.arange(5), 1)  # rounding makes ties
    expected = [roc_auc_score(y, scores[:, k]) for k in range(5)]
    np.testing.assert_allclose(fast_auc(scores, y), expected, rtol=1e-12)


def test_evaluate_heads_equals_sklearn_with_ties() -> None:
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score

    rng = np.random.default_rng(1)
    y = (rng.random(400) < 0.25).astype(int)
    scores = np.round(rng.normal(size=(400, 4)) + y[:, None] * np.arange(4), 1)  # ties, and zeros
    rows = evaluate_heads(scores, y)
    for k, row in enumerate(rows):
        pred = (scores[:, k] > 0).astype(int)
        assert row["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
        assert row["f1"] == pytest.approx(f1_score(y, pred, zero_division=0), abs=1e-12)
        assert row["auc"] == pytest.approx(roc_auc_score(y, scores[:, k]), abs=1e-12)
        assert row["ap"] == pytest.approx(average_precision_score(y, scores[:, k]), abs=1e-12)


def test_evaluate_heads_does_not_import_sklearn() -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from impulses.pu.metrics import evaluate_heads; "
        "evaluate_heads(np.array([[1.0], [-1.0]]), np.array([1, 0])); print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
