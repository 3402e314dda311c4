"""Portable heads: safetensors + sidecar round trips, scikit-learn and ONNX exports against the heads' logits."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from impulses.errors import ImpulsesError, ParameterError
from impulses.pu.export import (
    PORTABLE_FORMAT,
    head_index,
    load_portable,
    portable_paths,
    pu_classifier_from_heads,
    save_portable,
    to_onnx,
    to_sklearn,
)
from impulses.pu.heads import HeadSpec, save_heads, train_heads

D = 7
LABEL_SETS = ["tops", "shoes"]


def specs_of(result) -> list[HeadSpec]:
    return list(result.heads)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(np.int64)
    X = rng.normal(size=(300, D)).astype(np.float32)
    X[y == 1, :2] += 1.0
    s = np.stack([(y == 1) & (rng.random(300) < 0.5), (y == 1) & (rng.random(300) < 0.3)], 1).astype(np.int64)
    return X, s, y


@pytest.fixture(scope="module")
def result(data):
    X, s, _ = data
    specs = [
        HeadSpec("imbnnpu", 0.3, seed=1, column=0, prior_prime=0.4, name="imbnnpu_tops"),
        HeadSpec("nnpu", 0.25, seed=2, column=1, beta=0.1, gamma=0.5, name="nnpu_shoes"),
        HeadSpec("bce", None, seed=3, column=0, name="bce_tops"),
    ]
    return train_heads(X, s, specs, epochs=2, batch_size=64, kernel="torch", threads=1)


@pytest.fixture
def meta() -> dict:
    return {
        "store_fingerprint": "abc123",
        "store_dim": D,
        "feature_dtype": "float16",
        "label_sets": LABEL_SETS,
        "selection": {"criterion": "pu-auc", "pu_auc": np.array([0.9, 0.8, np.nan])},
    }


def about(path: Path, text: str) -> str:
    """A pattern for an error message that starts with ``path`` and continues with ``text``."""
    return "^" + re.escape(f"{path}: {text}")


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


# ---------------------------------------------------------------------------------------------
# safetensors + sidecar
# ---------------------------------------------------------------------------------------------
def test_round_trip_folder_gives_identical_logits_specs_and_meta(tmp_path, data, result, meta):
    X = data[0]
    weights, sidecar = save_portable(result, tmp_path / "out", meta=meta)
    assert (weights, sidecar) == (tmp_path / "out/heads.safetensors", tmp_path / "out/heads.json")
    assert sorted(p.name for p in weights.parent.iterdir()) == [
        "heads.json",
        "heads.safetensors",
    ]  # no temp files
    for where in (tmp_path / "out", weights, sidecar):
        loaded = load_portable(where)
        assert np.array_equal(loaded.decision_function(X), result.decision_function(X))
        assert specs_of(loaded) == specs_of(result)
        assert np.array_equal(loaded.steps, result.steps)
        assert np.array_equal(loaded.skipped_batches, result.skipped_batches)
        assert loaded.epochs == result.epochs == 2
        assert loaded.batches_per_epoch == result.batches_per_epoch
        assert loaded.config == result.config
        assert loaded.meta["store_fingerprint"] == "abc123"
        assert loaded.meta["selection"]["pu_auc"] == [0.9, 0.8, None]  # NaN -> null
        assert loaded.meta["head_label_sets"] == ["tops", "shoes", "tops"]


def test_safetensors_layout_and_sidecar_fields(tmp_path, result, meta):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    weights, sidecar = save_portable(result, tmp_path / "model.safetensors", meta=meta)
    assert sidecar == tmp_path / "model.json"
    tensors = load_file(str(weights))
    assert tensors["weight"].dtype == np.float32 and tensors["weight"].shape == (3, D)
    assert np.array_equal(tensors["weight"], result.W.T)
    assert np.array_equal(tensors["bias"], result.b)
    with safe_open(str(weights), "np") as f:
        assert f.metadata()["format"] == PORTABLE_FORMAT
        assert f.metadata()["sidecar"] == "model.json"
    doc = json.loads(sidecar.read_text())
    assert doc["format"] == PORTABLE_FORMAT and doc["version"] == 1
    assert doc["weights"] == "model.safetensors" and doc["dim"] == D and doc["n_heads"] == 3
    assert doc["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    first, second, third = doc["heads"]
    assert {k: first[k] for k in ("name", "loss", "prior", "prior_prime", "seed", "label_set")} == {
        "name": "imbnnpu_tops", "loss": "imbnnpu", "prior": 0.3, "prior_prime": 0.4, "seed": 1, "label_set": "tops",
    }  # fmt: skip
    assert (second["beta"], second["gamma"], second["label_set"]) == (0.1, 0.5, "shoes")
    assert third["prior"] is None and third["label_set"] == "tops"
    assert first["steps"] == int(result.steps[0])
    assert doc["meta"]["feature_dtype"] == "float16" and doc["meta"]["store_dim"] == D


def test_label_sets_from_a_grid_and_from_a_reloaded_result(tmp_path, result):
    grid = [{"label_set": name} for name in ("a", "b", "y")]
    save_portable(result, tmp_path / "one", meta={"grid": grid})
    loaded = load_portable(tmp_path / "one")
    assert loaded.meta["head_label_sets"] == ["a", "b", "y"]
    save_portable(loaded, tmp_path / "two")  # the reloaded result keeps them, not duplicated into meta
    doc = json.loads((tmp_path / "two/heads.json").read_text())
    assert [h["label_set"] for h in doc["heads"]] == ["a", "b", "y"]
    assert "head_label_sets" not in doc["meta"]
    save_portable(result, tmp_path / "three")
    assert [h["label_set"] for h in json.loads((tmp_path / "three/heads.json").read_text())["heads"]] == [
        None
    ] * 3


def test_save_refuses_meta_json_cannot_hold_and_a_wrong_store_dim(tmp_path, result):
    with pytest.raises(
        ParameterError,
        match=r"^meta entry \['when'\] holds a value of type object, which JSON cannot represent",
    ):
        save_portable(result, tmp_path, meta={"when": object()})
    with pytest.raises(
        ParameterError, match=f"^meta says the store's dim is 9, but the heads take {D} features"
    ):
        save_portable(result, tmp_path, meta={"store_dim": 9})
    assert not list(tmp_path.iterdir())


def _rewrite_sidecar(sidecar: Path, **changes) -> None:
    doc = json.loads(sidecar.read_text())
    doc.update(changes)
    sidecar.write_text(json.dumps(doc))


def test_load_failures_name_the_file(tmp_path, result):
    weights, sidecar = save_portable(result, tmp_path / "h")
    with pytest.raises(ImpulsesError, match=about(tmp_path / "nope/heads.safetensors", "no such file")):
        load_portable(tmp_path / "nope")

    good = sidecar.read_text()
    sidecar.unlink()
    with pytest.raises(ImpulsesError, match=about(sidecar, "no such file")):
        load_portable(weights)

    sidecar.write_text("{not json")
    with pytest.raises(ImpulsesError, match=about(sidecar, "not a JSON file")):
        load_portable(weights)

    sidecar.write_text(good)
    _rewrite_sidecar(sidecar, format="something-else")
    with pytest.raises(ImpulsesError, match=about(sidecar, "not a portable heads sidecar")):
        load_portable(weights)

    sidecar.write_text(good)
    _rewrite_sidecar(sidecar, version=99)
    with pytest.raises(ImpulsesError, match=about(sidecar, "portable heads version 99 is not supported")):
        load_portable(weights)

    sidecar.write_text(good)
    _rewrite_sidecar(sidecar, dim=D + 1)
    with pytest.raises(
        ImpulsesError, match=about(weights, f"weight (3, {D}) and bias (3,) do not match heads.json")
    ):
        load_portable(weights)

    sidecar.write_text(good)
    doc = json.loads(good)
    _rewrite_sidecar(sidecar, heads=doc["heads"][:2])
    with pytest.raises(ImpulsesError, match="describes 2 head"):
        load_portable(weights)

    sidecar.write_text(good)
    weights.write_bytes(b"\x00" * 64)
    _rewrite_sidecar(sidecar, weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    with pytest.raises(ImpulsesError, match=about(weights, "not a safetensors file")):
        load_portable(weights)


def test_load_refuses_weights_from_another_save(tmp_path, result):
    weights_a, _ = save_portable(result, tmp_path / "a")
    shifted = type(result)(**{**result.__dict__, "b": result.b + 1})
    _, sidecar_b = save_portable(shifted, tmp_path / "b")  # same shapes, other values: only the hash differs
    (tmp_path / "a/heads.json").write_text(sidecar_b.read_text())
    with pytest.raises(
        ImpulsesError,
        match=about(weights_a, "sha256 differs from the one heads.json records"),
    ):
        load_portable(tmp_path / "a")


def test_portable_paths():
    assert portable_paths("d") == (Path("d/heads.safetensors"), Path("d/heads.json"))
    assert portable_paths("m.safetensors") == (Path("m.safetensors"), Path("m.json"))
    assert portable_paths("m.json") == (Path("m.safetensors"), Path("m.json"))


# ---------------------------------------------------------------------------------------------
# scikit-learn
# ---------------------------------------------------------------------------------------------
def test_to_sklearn_matches_each_head(data, result):
    from sklearn.linear_model import LogisticRegression

    X = data[0]
    logits = result.decision_function(X)
    for k, spec in enumerate(specs_of(result)):
        for ref in (k, spec.name):
            est = to_sklearn(result, head=ref)
            assert isinstance(est, LogisticRegression)
            assert est.n_features_in_ == D and list(est.classes_) == [0, 1]
            np.testing.assert_allclose(est.decision_function(X), logits[:, k], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(
                est.predict_proba(X)[:, 1], sigmoid(logits[:, k]), rtol=1e-5, atol=1e-6
            )
            assert np.array_equal(est.predict(X), (est.decision_function(X) > 0).astype(int))
    assert np.mean(to_sklearn(result, 0).predict(X) == (logits[:, 0] > 0)) == 1.0


def test_to_sklearn_from_a_portable_folder_and_a_heads_pt(tmp_path, data, result):
    X = data[0]
    save_portable(result, tmp_path)
    save_heads(tmp_path / "heads.pt", result, store_dim=D)
    for source in (tmp_path, tmp_path / "heads.pt"):
        est = to_sklearn(source, head="nnpu_shoes")
        np.testing.assert_allclose(
            est.decision_function(X), result.decision_function(X)[:, 1], rtol=1e-5, atol=1e-5
        )


def test_head_references_that_name_no_head(result):
    with pytest.raises(ParameterError, match=r"^head must be an index in 0\.\.2 or a head's name, got 3"):
        head_index(result, 3)
    with pytest.raises(ParameterError, match=r"^head must be an index in 0\.\.2 or a head's name, got -1"):
        head_index(result, -1)
    with pytest.raises(
        ParameterError, match=r"^head 'missing' is not a head's name \(names: imbnnpu_tops, nnpu_shoes"
    ):
        to_sklearn(result, "missing")
    with pytest.raises(ParameterError, match=r"^head must be an index or a head's name, got bool"):
        head_index(result, True)
    assert head_index(result, np.int64(2)) == 2


def test_pu_classifier_from_heads(tmp_path, data, result):
    from sklearn.base import clone

    from impulses.pu.estimator import PUClassifier

    X = data[0]
    save_portable(result, tmp_path)
    logits = result.decision_function(X)
    for source in (result, tmp_path):
        clf = pu_classifier_from_heads(source, head="nnpu_shoes")
        assert isinstance(clf, PUClassifier)
        params = clf.get_params()
        assert (params["loss"], params["prior"], params["beta"], params["gamma"], params["random_state"]) == (
            "nnpu", 0.25, 0.1, 0.5, 2,
        )  # fmt: skip
        np.testing.assert_allclose(clf.decision_function(X), logits[:, 1], rtol=1e-5, atol=1e-5)
        assert np.array_equal(clf.predict(X), (clf.decision_function(X) > 0).astype(int))
        assert clf.n_skipped_batches_ == int(result.skipped_batches[1])
        assert clone(clf).get_params() == params  # an unfitted twin that retrains the same kind of head
    heads_pt = save_heads(tmp_path / "heads.pt", result)
    for source in (result, tmp_path, heads_pt):
        clf = PUClassifier.from_heads(source, head=1)
        np.testing.assert_allclose(clf.decision_function(X), logits[:, 1], rtol=1e-5, atol=1e-5)
        assert clf.get_params()["loss"] == "nnpu"


def test_calibration_and_store_encoder_survive_the_portable_round_trip(tmp_path, data, result):
    X, s = data[0], data[1]
    result = dataclasses.replace(result, meta={})  # the module's result stays uncalibrated
    result.calibrate(X, s, prior=0.3)  # each head reads its training column of s
    assert [entry["prior"] for entry in result.meta["calibration"]] == [0.3, 0.3, 0.3]
    result.meta["store_encoder"] = {
        "encoder": "smallcnn",
        "encoder_sha256": "ab" * 32,
        "transform": {"a": [1]},
    }
    save_portable(result, tmp_path)
    loaded = load_portable(tmp_path)
    assert loaded.meta["calibration"] == result.meta["calibration"]
    assert loaded.meta["store_encoder"] == result.meta["store_encoder"]
    np.testing.assert_allclose(loaded.predict_proba(X, 0.4), result.predict_proba(X, 0.4), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------
def test_to_onnx_logits_and_probabilities_equal_the_heads(tmp_path, data, result):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    X = data[0]
    logits = result.decision_function(X)
    path = to_onnx(result, tmp_path / "heads.onnx", probabilities=True)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain == ""] == [17]
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["logits", "probabilities"]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["heads"]) == [s.name for s in specs_of(result)]
    got_logits, got_probs = ReferenceEvaluator(model).run(None, {"features": X})
    assert got_logits.shape == (len(X), 3)
    np.testing.assert_allclose(got_logits, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_probs, sigmoid(logits), rtol=1e-5, atol=1e-6)


def test_to_onnx_selected_heads_in_the_given_order(tmp_path, data, result):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    X = data[0][:5]
    path = to_onnx(result, tmp_path / "two.onnx", heads=["bce_tops", 0])
    model = onnx.load(str(path))
    assert [o.name for o in model.graph.output] == ["logits"]
    (got,) = ReferenceEvaluator(model).run(None, {"features": X})
    np.testing.assert_allclose(got, result.decision_function(X)[:, [2, 0]], rtol=1e-5, atol=1e-5)
    with pytest.raises(ParameterError, match=r"^heads is empty"):
        to_onnx(result, tmp_path / "none.onnx", heads=[])
    assert not (tmp_path / "none.onnx").exists()


def test_importing_the_module_loads_no_optional_package():
    code = (
        "import sys, impulses.pu.export; "
        "print([m for m in ('onnx', 'safetensors', 'sklearn', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
