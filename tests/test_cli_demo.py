"""``impulses demo`` end to end through the CLI (tiny settings, so it runs in seconds)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import impulses.pipeline.experiment as experiment


@pytest.fixture
def tiny_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    tiny = replace(
        experiment.DEMO, n_label_sets=2, pretrain_epochs=1, head_epochs=2, e2e_epochs=1, tsne_points=60
    )
    monkeypatch.setattr(experiment, "DEMO", tiny)


def test_demo_prints_the_tables_and_writes_the_run(cli, tiny_demo, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = cli("demo", "--out", out, "--plot", tmp_path / "figures", "--no-progress", "--device", "cpu")
    assert result.code == 0, result.stderr
    for text in ("Methods (test set)", "ImPULSeS", "PN (upper", "Prior misspecification", "π = p(y=1|s=0)"):
        assert text in result.stdout, text
    assert (out / "report.md").exists() and (out / "runs.csv").exists()
    assert (tmp_path / "figures" / "auc_over_epochs.png").exists()
    assert (tmp_path / "figures" / "tsne.png").exists()


def test_demo_json_prints_only_the_rows(cli, tiny_demo, tmp_path: Path) -> None:
    result = cli("demo", "--out", tmp_path / "demo", "--no-progress", "--device", "cpu", "--json")
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {"method", "label_set", "auc", "f1", "accuracy", "pretrained"} <= set(rows[0])
    assert {r["method"] for r in rows} >= {"ImPULSeS", "nnPU", "BCE", "wBCE", "PN (upper bound)", "imbnnPU"}


def test_demo_on_an_unavailable_device_is_a_clean_error(cli, tiny_demo, tmp_path: Path) -> None:
    result = cli("demo", "--out", tmp_path / "demo", "--device", "tpu")
    assert result.code == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
