"""Portable heads: safetensors + JSON sidecar, scikit-learn estimators and ONNX models for serving.

``heads.pt`` is a torch pickle: reading it needs torch and trust in the file. The portable form is
two plain files, readable from any language:

- ``heads.safetensors``: ``weight`` (K, D) float32 (row k is head k, the layout of
  ``torch.nn.Linear``) and ``bias`` (K,) float32; its header names the format and the sidecar.
- ``heads.json``: format name and version, dim, the weights file's name and sha256 (two files cannot
  be replaced together atomically, so the hash tells a matching pair from a half-updated one), per
  head its name, loss, prior, prior_prime, beta, gamma, seed, label set and step counts, the
  training configuration (``training``), the run (``run``: epochs, batches per epoch, seconds) and
  ``meta`` (the training store's fingerprint, dim and feature dtype, selection metrics,
  calibration: whatever the caller records).

One head also becomes a fitted scikit-learn ``LogisticRegression`` (:func:`to_sklearn`) or
:class:`~impulses.pu.estimator.PUClassifier` (:func:`pu_classifier_from_heads`), and any heads an
ONNX model (:func:`to_onnx`). onnx, safetensors and scikit-learn are imported inside the functions
that need them.

**Logits are scores.** Every export computes the head's logit ``x·w + b``. ``predict_proba``
(scikit-learn) and the ONNX ``probabilities`` output are σ(logit): for PU heads trained with the
sigmoid loss (the paper's, and the default) that is a monotone score in [0, 1], not a calibrated
probability, because the sigmoid loss is not a proper scoring rule and imbnnPU re-weights the
classes to π′. For probabilities use ``HeadsResult.predict_proba`` (PU Platt calibration from
``HeadsResult.calibrate``, saved in ``meta["calibration"]``, or logistic-surrogate heads).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from impulses.atomic import atomic_path
from impulses.errors import ImpulsesError, ParameterError
from impulses.files import file_sha256
from impulses.runtime import as_numpy, is_tensor

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

    from impulses.pu.estimator import PUClassifier
    from impulses.pu.heads import HeadSpec, HeadsResult

PORTABLE_FORMAT = "impulses-portable-heads"
PORTABLE_VERSION = 1
WEIGHTS_NAME = "heads.safetensors"
SIDECAR_NAME = "heads.json"
ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # the IR version that introduced opset 17: runtimes that read opset 17 read it

HeadRef = int | str


# ---------------------------------------------------------------------------------------------
# safetensors + JSON sidecar
# ---------------------------------------------------------------------------------------------
def portable_paths(path_or_dir: str | Path) -> tuple[Path, Path]:
    """The (weights, sidecar) pair that ``path_or_dir`` names.

    A ``.safetensors`` file pairs with the ``.json`` of the same stem; a ``.json`` file with the
    weights it records (or the ``.safetensors`` of its stem); anything else is a folder holding
    ``heads.safetensors`` and ``heads.json``.
    """
    path = Path(path_or_dir)
    if path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    if path.suffix == ".json":
        weights = path.with_suffix(".safetensors")
        if path.is_file():
            try:
                named = json.loads(path.read_text()).get("weights")
            except (ValueError, OSError, AttributeError):
                named = None
            if isinstance(named, str) and named:
                weights = path.parent / named
        return weights, path
    return path / WEIGHTS_NAME, path / SIDECAR_NAME


def save_portable(
    result: HeadsResult, path_or_dir: str | Path, *, meta: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write heads as ``heads.safetensors`` + ``heads.json`` (both atomically; weights first).

    Args:
        result: Trained heads (``W`` (D, K), ``b`` (K,), one spec per head).
        path_or_dir: A folder (gets ``heads.safetensors`` and ``heads.json``) or a
            ``NAME.safetensors`` path (the sidecar is ``NAME.json`` beside it).
        meta: JSON-able facts to record with the heads, merged over ``result.meta`` where the
            result has one: e.g. ``store_fingerprint``, ``store_dim``, ``feature_dtype``,
            selection metrics, calibration. Each head's label set comes from the first of
            ``head_label_sets`` (one name per head), ``grid`` (one dict per head with
            ``label_set``, as ``heads.pt`` records it) and ``label_sets`` (indexed by each
            spec's ``column``) that ``meta`` has.
            NaN and infinities are written as null.

    Returns:
        The weights and sidecar paths.

    Raises:
        ParameterError: ``result`` has inconsistent shapes, or ``meta`` holds something JSON
            cannot represent or a ``store_dim`` other than the heads' dim.
    """
    from safetensors.numpy import save_file

    W, b, specs = _checked_arrays(result)
    dim, k = W.shape
    merged = {**result.meta, **dict(meta or {})}
    store_dim = merged.get("store_dim", merged.get("dim"))
    if store_dim is not None and store_dim != dim:
        raise ParameterError(
            "meta", f"says the store's dim is {store_dim}, but the heads take {dim} features"
        )
    label_sets = _head_label_sets(specs, merged)
    merged.pop("head_label_sets", None)  # written per head
    meta_json = _jsonable(merged, "meta")
    steps = _per_head(result.steps, k)
    skipped = _per_head(result.skipped_batches, k)
    heads = []
    for i, spec in enumerate(specs):
        entry = _jsonable(spec.to_dict(), f"head {i}")
        entry["label_set"] = label_sets[i]
        entry["steps"] = steps[i]
        entry["skipped_batches"] = skipped[i]
        heads.append(entry)

    weights_path, sidecar_path = portable_paths(path_or_dir)
    if weights_path.suffix != ".safetensors":
        raise ParameterError("path_or_dir", f"{weights_path}: the weights file must end in .safetensors")
    tensors = {"weight": np.ascontiguousarray(W.T, dtype=np.float32), "bias": b.astype(np.float32)}
    header = {"format": PORTABLE_FORMAT, "version": str(PORTABLE_VERSION), "sidecar": sidecar_path.name}
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
        sha256 = file_sha256(tmp)
    sidecar = {
        "format": PORTABLE_FORMAT,
        "version": PORTABLE_VERSION,
        "weights": weights_path.name,
        "weights_sha256": sha256,
        "dim": int(dim),
        "n_heads": int(k),
        "dtype": "float32",
        "heads": heads,
        "training": _jsonable(dict(result.config), "result.config"),
        "run": {
            "epochs": int(result.epochs),
            "batches_per_epoch": int(result.batches_per_epoch),
            "seconds": _jsonable(result.seconds, "result.seconds"),
        },
        "meta": meta_json,
    }
    with atomic_path(sidecar_path) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2, allow_nan=False) + "\n")
    return weights_path, sidecar_path


def load_portable(path: str | Path) -> HeadsResult:
    """Read heads written by :func:`save_portable`, checking that the two files belong together.

    Args:
        path: The ``.safetensors`` file, its ``.json`` sidecar, or their folder.

    Returns:
        A ``HeadsResult`` (no training history) whose ``decision_function`` equals the saved
        heads'; its ``meta`` is the sidecar's plus ``head_label_sets`` (each head's label set).

    Raises:
        ImpulsesError: A file is missing or unreadable, of another format or version, or the
            weights' shapes or hash disagree with the sidecar (the message names the file).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from impulses.pu.heads import HeadSpec

    weights_path, sidecar_path = portable_paths(path)
    for file in (weights_path, sidecar_path):
        if not file.is_file():
            raise ImpulsesError(
                f"{file}: no such file (portable heads need {weights_path.name} and {sidecar_path.name})"
            )
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (ValueError, OSError) as err:
        raise ImpulsesError(f"{sidecar_path}: not a JSON file ({err})") from None
    if not isinstance(sidecar, dict) or sidecar.get("format") != PORTABLE_FORMAT:
        raise ImpulsesError(
            f"{sidecar_path}: not a portable heads sidecar (format is not {PORTABLE_FORMAT!r})"
        )
    if sidecar.get("version") != PORTABLE_VERSION:
        raise ImpulsesError(
            f"{sidecar_path}: portable heads version {sidecar.get('version')!r} is not supported "
            f"(this impulses reads version {PORTABLE_VERSION})"
        )
    recorded = sidecar.get("weights_sha256")
    if recorded is not None and file_sha256(weights_path) != recorded:
        raise ImpulsesError(
            f"{weights_path}: sha256 differs from the one {sidecar_path.name} records; "
            "the two files come from different saves"
        )
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ImpulsesError(f"{weights_path}: not a safetensors file ({err})") from None
    for name in ("weight", "bias"):
        if name not in tensors:
            raise ImpulsesError(f"{weights_path}: no {name!r} tensor (found {sorted(tensors)})")
    weight, bias = tensors["weight"], tensors["bias"]
    entries = sidecar.get("heads")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "loss" in e for e in entries):
        raise ImpulsesError(f"{sidecar_path}: 'heads' must be a list of head entries with a 'loss'")
    k, dim = len(entries), sidecar.get("dim")
    if weight.ndim != 2 or bias.shape != (weight.shape[0],) or weight.shape != (k, dim):
        raise ImpulsesError(
            f"{weights_path}: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} do not match "
            f"{sidecar_path.name}, which describes {k} head(s) of dim {dim}"
        )
    spec_fields = {f.name for f in fields(HeadSpec)}
    try:
        specs = [HeadSpec(**{key: v for key, v in e.items() if key in spec_fields}) for e in entries]
    except TypeError as err:
        raise ImpulsesError(f"{sidecar_path}: a head entry is malformed ({err})") from None
    run = dict(sidecar.get("run") or {})
    meta = {**dict(sidecar.get("meta") or {}), "head_label_sets": [e.get("label_set") for e in entries]}
    return _new_result(
        W=np.ascontiguousarray(weight.T, dtype=np.float32),
        b=bias.astype(np.float32),
        specs=specs,
        steps=np.array([e.get("steps") or 0 for e in entries], dtype=np.int64),
        skipped_batches=np.array([e.get("skipped_batches") or 0 for e in entries], dtype=np.int64),
        batches_per_epoch=int(run.get("batches_per_epoch") or 0),
        epochs=int(run.get("epochs") or 0),
        seconds=float(run.get("seconds") or 0.0),
        config=dict(sidecar.get("training") or {}),
        meta=meta,
    )


# ---------------------------------------------------------------------------------------------
# scikit-learn
# ---------------------------------------------------------------------------------------------
def to_sklearn(result: HeadsResult | str | Path, head: HeadRef = 0) -> LogisticRegression:
    """One head as a fitted ``sklearn.linear_model.LogisticRegression`` (nothing is trained).

    ``decision_function`` returns the head's logit, ``predict`` thresholds it at 0 (classes_
    ``[0, 1]``), and ``predict_proba`` is [1 − σ(logit), σ(logit)]: for sigmoid-loss PU heads a
    monotone score, NOT a calibrated probability (see the module docstring). The estimator
    pickles, serves and joins pipelines like any LogisticRegression; refitting it discards the head.

    Args:
        result: Trained heads, or a path :func:`load_portable` (or, for ``.pt``, ``load_heads``) reads.
        head: The head's index or name.

    Returns:
        The fitted estimator (coef_ (1, D), intercept_ (1,), classes_, n_features_in_, n_iter_).

    Raises:
        ParameterError: ``head`` names no head.
    """
    from sklearn.linear_model import LogisticRegression

    result = _as_result(result)
    W, b, _ = _checked_arrays(result)
    k = head_index(result, head)
    estimator = LogisticRegression()
    estimator.coef_ = W[:, k].astype(np.float64)[None, :]
    estimator.intercept_ = np.array([b[k]], dtype=np.float64)
    estimator.classes_ = np.array([0, 1])
    estimator.n_features_in_ = int(W.shape[0])
    estimator.n_iter_ = np.array([0], dtype=np.int32)
    return estimator


def pu_classifier_from_heads(result_or_path: HeadsResult | str | Path, head: HeadRef = 0) -> PUClassifier:
    """One head as a fitted :class:`~impulses.pu.estimator.PUClassifier` with the head's hyperparameters.

    Its loss, prior, prior_prime, beta, gamma, pos_weight and seed (``random_state``) are the
    head's, so ``clone(clf).fit(X, s)`` retrains the same kind of head; ``decision_function`` is
    the head's logit.

    Args:
        result_or_path: Trained heads, or a path :func:`load_portable` (or, for ``.pt``,
            ``load_heads``) reads.
        head: The head's index or name.

    Returns:
        The fitted classifier (coef_ (1, D), intercept_ (1,), classes_ ``[0, 1]``, n_features_in_,
        n_skipped_batches_, history_ = this head's column of the training history).

    Raises:
        ParameterError: ``head`` names no head.
    """
    from impulses.pu.estimator import PUClassifier

    result = _as_result(result_or_path)
    W, b, specs = _checked_arrays(result)
    k = head_index(result, head)
    spec = specs[k]
    wanted = {
        "loss": spec.loss,
        "prior": spec.prior,
        "prior_prime": spec.prior_prime,
        "beta": spec.beta,
        "gamma": spec.gamma,
        "pos_weight": spec.pos_weight,
        "random_state": spec.seed,
        "surrogate": spec.surrogate,  # kept where the estimator takes it
    }
    accepted = PUClassifier().get_params(deep=False)
    clf = PUClassifier(**{name: value for name, value in wanted.items() if name in accepted})
    clf.coef_ = W[:, k].astype(np.float64)[None, :]
    clf.intercept_ = np.array([b[k]], dtype=np.float64)
    clf.classes_ = np.array([0, 1])
    clf.n_features_in_ = int(W.shape[0])
    clf.n_skipped_batches_ = int(_per_head(result.skipped_batches, W.shape[1])[k])
    clf.history_ = [
        {key: _column(value, k, W.shape[1]) for key, value in entry.items()} for entry in result.history
    ]
    return clf


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------
def to_onnx(
    result: HeadsResult | str | Path,
    path: str | Path,
    *,
    heads: Sequence[HeadRef] | None = None,
    probabilities: bool = False,
) -> Path:
    """Write heads as an ONNX model (opset 17): ``features`` float32 [N, D] -> ``logits`` float32 [N, K].

    The graph is one Gemm (``features · weightᵀ + bias``, ``weight`` (K, D) as in the safetensors
    file); with ``probabilities`` a Sigmoid adds the output ``probabilities`` [N, K] (a score for
    sigmoid-loss PU heads, not a calibrated probability). The head names, in output column order,
    are in the model's metadata (``heads``, a JSON list). The model passes ``onnx.checker``.

    Args:
        result: Trained heads, or a path :func:`load_portable` (or, for ``.pt``, ``load_heads``) reads.
        path: The ``.onnx`` file to write (atomically).
        heads: Indices or names of the heads to export, in this column order (default: all).
        probabilities: Add the ``probabilities`` output.

    Returns:
        ``path``.

    Raises:
        ParameterError: ``heads`` is empty or names no head.
        ImpulsesError: The onnx package is not installed.
    """
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImpulsesError("ONNX export needs the onnx package: pip install 'impulses[onnx]'") from None

    result = _as_result(result)
    W, b, _ = _checked_arrays(result)
    chosen = list(range(W.shape[1])) if heads is None else [head_index(result, h) for h in heads]
    if not chosen:
        raise ParameterError("heads", "is empty: give at least one head, or None for all")
    names = [_head_name(result, k) for k in chosen]
    dim = int(W.shape[0])
    weight = np.ascontiguousarray(W[:, chosen].T, dtype=np.float32)
    bias = np.asarray(b[chosen], dtype=np.float32)
    n_out = len(chosen)

    nodes = [helper.make_node("Gemm", ["features", "weight", "bias"], ["logits"], transB=1, name="heads")]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_out])]
    if probabilities:
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="sigmoid"))
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_out]))
    graph = helper.make_graph(
        nodes,
        "impulses_heads",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", dim])],
        outputs,
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
        doc_string="Linear PU heads from impulses: logits = features @ weight.T + bias; logit > 0 is positive.",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="impulses",
    )
    helper.set_model_props(model, {"heads": json.dumps(names), "format": PORTABLE_FORMAT})
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
    return path


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def head_index(result: HeadsResult, head: HeadRef) -> int:
    """The column of ``head`` (an index in [0, K) or a head's name) in ``result``'s weights.

    Raises:
        ParameterError: No head has that index or name, or several share the name.
    """
    k = len(_specs(result))
    if isinstance(head, (int, np.integer)) and not isinstance(head, bool):
        if not 0 <= head < k:
            raise ParameterError("head", f"must be an index in 0..{k - 1} or a head's name, got {head}")
        return int(head)
    if isinstance(head, str):
        matches = [i for i in range(k) if _specs(result)[i].name == head]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ParameterError("head", f"{head!r} names {len(matches)} heads ({matches}); give an index")
        known = [s.name for s in _specs(result) if s.name]
        shown = ", ".join(known[:5]) + (f", ... ({len(known)} in all)" if len(known) > 5 else "")
        raise ParameterError("head", f"{head!r} is not a head's name (names: {shown or 'none'})")
    raise ParameterError("head", f"must be an index or a head's name, got {type(head).__name__}")


def _specs(result: HeadsResult) -> list[HeadSpec]:
    """The per-head specs."""
    return list(result.heads)


def _head_name(result: HeadsResult, k: int) -> str:
    spec = _specs(result)[k]
    return spec.name or f"head{k}_{spec.loss}"


def _checked_arrays(result: HeadsResult) -> tuple[np.ndarray, np.ndarray, list[HeadSpec]]:
    """``W`` (D, K), ``b`` (K,) as float32 numpy and the K specs, or a ParameterError on mismatch."""
    W, b = as_numpy(result.W), as_numpy(result.b)
    specs = _specs(result)
    if W.ndim != 2 or b.shape != (W.shape[1],) or len(specs) != W.shape[1]:
        raise ParameterError(
            "result", f"has W {W.shape}, b {b.shape} and {len(specs)} spec(s); expected (D, K), (K,) and K"
        )
    return W.astype(np.float32, copy=False), b.astype(np.float32, copy=False), specs


def _as_result(result: HeadsResult | str | Path) -> HeadsResult:
    """A HeadsResult from itself, a portable path or a ``.pt`` file."""
    if isinstance(result, (str, Path)):
        path = Path(result)
        if path.suffix == ".pt":
            from impulses.pu.heads import load_heads

            return load_heads(path)
        return load_portable(path)
    return result


def _new_result(
    *,
    W: np.ndarray,
    b: np.ndarray,
    specs: list[HeadSpec],
    steps: Any,
    skipped_batches: Any,
    batches_per_epoch: int,
    epochs: int,
    seconds: float,
    config: dict[str, Any],
    meta: dict[str, Any],
) -> HeadsResult:
    """A HeadsResult without a training history."""
    from impulses.pu.heads import HeadsResult

    k = W.shape[1]
    return HeadsResult(
        W=W,
        b=b,
        heads=list(specs),
        steps=np.asarray(_per_head(steps, k), dtype=np.int64),
        skipped_batches=np.asarray(_per_head(skipped_batches, k), dtype=np.int64),
        batches_per_epoch=int(batches_per_epoch or 0),
        epochs=int(epochs or 0),
        seconds=float(seconds or 0.0),
        config=dict(config or {}),
        meta=dict(meta or {}),
    )


def _per_head(values: Any, k: int) -> list[int]:
    """K ints from a per-head count array, zeros where there is none."""
    if values is None:
        return [0] * k
    array = as_numpy(values).reshape(-1)
    return [int(v) for v in array] if len(array) == k else [0] * k


def _column(value: Any, k: int, n_heads: int) -> Any:
    """Head ``k``'s entry of a per-head (K,) history value; anything else unchanged."""
    if isinstance(value, np.ndarray) and value.shape[:1] == (n_heads,):
        return value[k].item()
    return value


def _head_label_sets(specs: list[HeadSpec], meta: Mapping[str, Any]) -> list[str | None]:
    """Each head's label set: ``meta["head_label_sets"]``, ``meta["grid"]`` or ``meta["label_sets"][column]``."""
    given = meta.get("head_label_sets")
    if isinstance(given, (list, tuple)) and len(given) == len(specs):
        return [None if name is None else str(name) for name in given]
    grid = meta.get("grid")
    if isinstance(grid, list) and len(grid) == len(specs) and all(isinstance(g, Mapping) for g in grid):
        return [None if g.get("label_set") is None else str(g["label_set"]) for g in grid]
    names = meta.get("label_sets")
    out: list[str | None] = []
    for spec in specs:
        column = spec.column
        if isinstance(names, list) and column is not None and 0 <= column < len(names):
            out.append(str(names[column]))
        else:
            out.append(None)
    return out


def _jsonable(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (numpy scalars and arrays, paths, tuples converted; NaN/inf -> null)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray) or is_tensor(value):
        return _jsonable(as_numpy(value).tolist(), where)
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    param, _, rest = where.partition("[")
    entry = f" entry [{rest}" if rest else ""
    raise ParameterError(
        param,
        f"{entry.strip()} holds a value of type {type(value).__name__}, which JSON cannot represent".strip(),
    )
