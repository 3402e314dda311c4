"""End-to-end baselines: stratified batches, learning on a real image task, input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from impulses.errors import ImpulsesError
from impulses.pipeline.end_to_end import (
    EndToEndConfig,
    images_to_tensor,
    predict_logits,
    run_end_to_end,
    stratified_batches,
    train_end_to_end,
)


def test_stratified_batches_partition_the_rows_with_positives_in_each() -> None:
    labels = np.zeros(1000, dtype=np.int64)
    labels[np.random.default_rng(0).choice(1000, 37, replace=False)] = 1
    batches = stratified_batches(labels, 128, np.random.default_rng(1))
    assert len(batches) == 8  # ceil(1000 / 128)
    rows = np.concatenate(batches)
    assert np.array_equal(np.sort(rows), np.arange(1000))  # every row exactly once
    per_batch = [int(labels[b].sum()) for b in batches]
    assert min(per_batch) >= 4 and max(per_batch) <= 5  # 37 positives dealt evenly over 8 batches
    assert max(len(b) for b in batches) - min(len(b) for b in batches) <= 2  # P and U each split evenly


def test_fewer_positives_than_batches_gives_fewer_batches_not_empty_ones() -> None:
    labels = np.zeros(1000, dtype=np.int64)
    labels[:3] = 1
    batches = stratified_batches(labels, 128, np.random.default_rng(0))
    assert len(batches) == 3 and all(labels[b].sum() == 1 for b in batches)


def _digits_task() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    digits = load_digits()
    images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)  # (N, 1, 8, 8)
    y = (digits.target == 0).astype(np.int64)
    s = y * (np.random.default_rng(0).random(len(y)) < 0.3)
    return images, s, y


def test_imbnnpu_end_to_end_learns_from_pu_labels() -> None:
    images, s, y = _digits_task()
    train, test = np.arange(0, 1200), np.arange(1200, len(y))
    config = EndToEndConfig(
        encoder="smallcnn", loss="imbnnpu", prior=float(y[train][s[train] == 0].mean()), epochs=3
    )
    logits, record = run_end_to_end(images[train], s[train], images[test], config)
    assert logits.shape == (len(test),) and np.isfinite(logits).all()
    assert roc_auc_score(y[test], logits) > 0.9  # zeros vs the rest, from a few labeled zeros
    assert record["loss"] == "imbnnpu" and record["seconds"] > 0


def test_training_is_reproducible_from_the_seed() -> None:
    images, s, _ = _digits_task()
    config = EndToEndConfig(encoder="smallcnn", loss="wbce", epochs=1, seed=3)
    a = predict_logits(train_end_to_end(images[:300], s[:300], config), images[300:340])
    b = predict_logits(train_end_to_end(images[:300], s[:300], config), images[300:340])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("labels", "config", "match"),
    [
        (np.zeros(20), EndToEndConfig(loss="imbnnpu", prior=0.1), "no positive label"),
        (np.r_[1, np.zeros(19)], EndToEndConfig(loss="nnpu"), "needs a prior"),
        (np.r_[1, np.zeros(18)], EndToEndConfig(loss="bce"), "20 images but 19 labels"),
        (np.r_[1, np.zeros(19)], EndToEndConfig(loss="hinge"), "unknown loss"),
    ],
)
def test_bad_input_is_an_impulses_error(labels: np.ndarray, config: EndToEndConfig, match: str) -> None:
    with pytest.raises(ImpulsesError, match=match):
        train_end_to_end(torch.zeros(20, 1, 8, 8), labels, config)


def test_images_to_tensor_applies_the_transform_in_row_order() -> None:
    source = [(np.full((2, 2), i, dtype=np.float32), f"id{i}", 0) for i in range(5)]
    out = images_to_tensor(source, [3, 1], lambda image: torch.from_numpy(image)[None])
    assert out.shape == (2, 1, 2, 2) and out[0, 0, 0, 0] == 3 and out[1, 0, 0, 0] == 1
