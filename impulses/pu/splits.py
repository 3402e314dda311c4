"""PU splits: from a store's class targets to label sets (the format of :mod:`impulses.pu.labels`).

A split picks the positive classes, optionally downsamples the positives (seeded) to reach a chosen
imbalance, and labels an exact share ``c`` of them (``round(c * n_positive)``, half up): the labeled
positives have ``s = 1``, everything else kept is unlabeled (``s = 0``). Positives dropped by the
downsampling and rows whose target is unknown (-1) are left out of the label set, and counted.

``K`` independent labeled subsets of the *same* samples go into one file as columns ``s_0 ...
s_{K-1}`` (a single set is the column ``s``), the several-label-sets layout of
:mod:`impulses.pu.labels` (label set ``k`` is named ``s_k``, short name ``k``): the samples, ``y``
and π are shared; only which positives are labeled differs. Set ``k`` is drawn from its own child
of ``numpy.random.SeedSequence(seed)``, so it does not depend on how many sets were asked for.

The presets reproduce the paper's Table I (CIFAR-10 and CIFAR-100) and its Fashion-MNIST analogue.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from impulses.catalog import CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR100_SUPERCLASSES, FASHION_MNIST_CLASSES
from impulses.errors import ImpulsesError, ParameterError


def _norm(name: str) -> str:
    """Names compare case-insensitively, with spaces, underscores and hyphens alike ("vehicles 1" = "vehicles_1")."""
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


def cifar100_coarse_targets(fine_targets: np.ndarray) -> np.ndarray:
    """CIFAR-100 fine class indices -> superclass indices (order of :data:`CIFAR100_SUPERCLASSES`)."""
    lookup = np.empty(len(CIFAR100_CLASSES), dtype=np.int64)
    for coarse, members in enumerate(CIFAR100_SUPERCLASSES.values()):
        for fine in members:
            lookup[CIFAR100_CLASSES.index(fine)] = coarse
    return lookup[np.asarray(fine_targets, dtype=np.int64)]


# --------------------------------------------------------------------------------------------------
# Positive classes
# --------------------------------------------------------------------------------------------------
def parse_class_list(text: str) -> list[str]:
    """``"0,1,8,9"`` or ``"airplane, ship"`` -> tokens; empty tokens are an error."""
    tokens = [token.strip() for token in text.split(",")]
    if not tokens or any(not token for token in tokens):
        raise ParameterError(
            "positive_classes", f"{text!r}: give a comma-separated list of class indices or names"
        )
    return tokens


def _is_cifar100(class_names: Sequence[str] | None) -> bool:
    return class_names is not None and [_norm(n) for n in class_names] == [_norm(n) for n in CIFAR100_CLASSES]


def resolve_classes(
    tokens: Sequence[str | int], class_names: Sequence[str] | None, *, n_classes: int | None = None
) -> list[int]:
    """Class indices for ``tokens``: indices, class names, or (for a CIFAR-100 store) superclass names.

    ``n_classes`` bounds the indices when the store has no class names (then names cannot be used).
    Raises :class:`ImpulsesError` naming the unknown class and listing the known ones.
    """
    known = len(class_names) if class_names is not None else n_classes
    by_name = {_norm(name): index for index, name in enumerate(class_names or ())}
    resolved: list[int] = []
    for token in tokens:
        text = str(token).strip()
        if re.fullmatch(r"-?\d+", text):
            index = int(text)
            if index < 0 or (known is not None and index >= known):
                raise ParameterError(
                    "positive_classes",
                    f"class index {index} is out of range (the store has {known} classes: 0..{known - 1})"
                    if known
                    else f"class index {index} is out of range",
                )
            resolved.append(index)
        elif _norm(text) in by_name:
            resolved.append(by_name[_norm(text)])
        elif _is_cifar100(class_names) and _norm(text) in CIFAR100_SUPERCLASSES:
            resolved.extend(by_name[_norm(fine)] for fine in CIFAR100_SUPERCLASSES[_norm(text)])
        elif class_names is None:
            raise ParameterError(
                "positive_classes",
                f"class {text!r} given by name, but the store has no class names (use indices)",
            )
        else:
            listing = ", ".join(f"{i} {name}" for i, name in enumerate(class_names))
            if len(listing) > 400:
                listing = listing[:400] + " ..."
            raise ParameterError(
                "positive_classes", f"unknown class {text!r} (the store's classes: {listing})"
            )
    unique = sorted(set(resolved))
    if not unique:
        raise ParameterError("positive_classes", "no class given")
    return unique


# --------------------------------------------------------------------------------------------------
# Presets (the paper's Table I)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitPreset:
    """A named split: the dataset it is for, its positive classes, the positives kept and c."""

    name: str
    dataset: str
    classes: tuple[str, ...]  # the dataset's class names, in target order
    positive: tuple[str, ...]  # positive class (or CIFAR-100 superclass) names
    n_positive: int | None
    label_frequency: float
    description: str


PRESETS: dict[str, SplitPreset] = {
    preset.name: preset
    for preset in (
        SplitPreset(
            "cifar10-imbalanced",
            "CIFAR-10 (train, 50,000 images)",
            CIFAR10_CLASSES,
            ("airplane", "automobile", "ship", "truck"),
            3000,
            0.2,
            "vehicles (0,1,8,9) positive, downsampled to 3,000 vs 30,000 negatives; 600 L + 32,400 U, π = 0.0741",
        ),
        SplitPreset(
            "cifar100-vehicles",
            "CIFAR-100 (train, 50,000 images)",
            CIFAR100_CLASSES,
            ("vehicles_1", "vehicles_2"),
            None,
            0.2,
            "superclasses vehicles 1 + vehicles 2 positive: 5,000 vs 45,000; 1,000 L + 49,000 U, π = 0.0816",
        ),
        SplitPreset(
            "fashion-mnist-imbalanced",
            "Fashion-MNIST (train, 60,000 images)",
            FASHION_MNIST_CLASSES,
            ("T-shirt/top", "Pullover", "Coat", "Shirt"),
            3600,
            0.2,
            "tops (0,2,4,6) positive, downsampled to 3,600 vs 36,000 negatives; 720 L + 38,880 U, π = 0.0741",
        ),
    )
}


def get_split_preset(name: str) -> SplitPreset:
    """The split preset called ``name``; an unknown name is a ParameterError about ``preset`` listing the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ParameterError("preset", f"{name!r} is not a preset (known: {', '.join(PRESETS)})") from None


def preset_classes(preset: SplitPreset, class_names: Sequence[str] | None, n_classes: int) -> list[int]:
    """The preset's positive class indices for a store; refuses a store of another dataset.

    A store with class names must have exactly the preset dataset's names; one without must not
    have more classes than the dataset (its targets are then taken as the dataset's indices).
    """
    if class_names is not None:
        if [_norm(n) for n in class_names] != [_norm(n) for n in preset.classes]:
            shown = ", ".join(list(class_names)[:12]) + (" ..." if len(class_names) > 12 else "")
            raise ParameterError(
                "preset", f"{preset.name} is for {preset.dataset}, but the store's classes are: {shown}"
            )
    elif n_classes > len(preset.classes):
        raise ParameterError(
            "preset",
            f"{preset.name} is for {preset.dataset} ({len(preset.classes)} classes), "
            f"but the store's targets reach class {n_classes - 1}",
        )
    return resolve_classes(preset.positive, preset.classes)


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitStats:
    """Counts of a split; π, P:N and L:U follow from them."""

    n_positive: int  # positives kept (labeled + unlabeled)
    n_negative: int
    n_labeled: int
    n_unlabeled: int
    n_unlabeled_positive: int
    n_dropped_positive: int  # positives left out by downsampling
    n_unknown: int  # rows with target -1, left out

    @property
    def n(self) -> int:
        """Number of samples in the split (positives + negatives)."""
        return self.n_positive + self.n_negative

    @property
    def prior(self) -> float:
        """π = p(y=1 | s=0): the share of positives among the unlabeled (the project's convention)."""
        return self.n_unlabeled_positive / self.n_unlabeled if self.n_unlabeled else float("nan")

    @property
    def class_prior(self) -> float:
        """p(y=1) over the samples kept."""
        return self.n_positive / self.n

    @property
    def label_frequency(self) -> float:
        """The label frequency c = p(s=1 | y=1), exact for this split."""
        return self.n_labeled / self.n_positive

    @property
    def pn_ratio(self) -> str:
        """P:N as ``1:r``."""
        return f"1:{self.n_negative / self.n_positive:.4g}"

    @property
    def lu_ratio(self) -> str:
        """L:U as counts."""
        return f"{self.n_labeled:,}:{self.n_unlabeled:,}"

    def as_dict(self) -> dict[str, Any]:
        """The counts and derived rates as a plain dict (JSON output)."""
        data: dict[str, Any] = asdict(self)
        data.update(
            n=self.n,
            prior=self.prior,
            class_prior=self.class_prior,
            label_frequency=self.label_frequency,
            pn_ratio=self.pn_ratio,
            lu_ratio=self.lu_ratio,
        )
        return data


@dataclass(frozen=True)
class PUSplit:
    """A split's label-set table (``id``, ``y``, ``s`` or ``s_0..s_{K-1}``), its counts and classes."""

    labels: pl.DataFrame
    stats: SplitStats
    positive_classes: tuple[int, ...]

    @property
    def label_columns(self) -> list[str]:
        """The label-set columns (``s`` or ``s_<name>``) of ``labels``."""
        return [c for c in self.labels.columns if c == "s" or c.startswith("s_")]


def label_column_names(n_label_sets: int) -> list[str]:
    """``["s"]`` for one label set, ``["s_0", ..., "s_{K-1}"]`` for K."""
    return ["s"] if n_label_sets == 1 else [f"s_{k}" for k in range(n_label_sets)]


def n_labeled_for(n_positive: int, label_frequency: float) -> int:
    """Exact number of labeled positives: ``round(c * n_positive)``, halves rounded up."""
    return math.floor(label_frequency * n_positive + 0.5 + 1e-9)


def check_targets(targets: np.ndarray, *, where: str = "the store") -> np.ndarray:
    """Targets as int64; a store whose targets are all unknown (-1) cannot be split."""
    targets = np.asarray(targets, dtype=np.int64)
    if targets.ndim != 1:
        raise ImpulsesError(f"{where}: targets must be 1-D, got shape {targets.shape}")
    if targets.size == 0 or (targets < 0).all():
        raise ImpulsesError(
            f"{where} has no class targets (all -1): a PU split needs the true classes; "
            "embed a labelled dataset or write the label set yourself"
        )
    return targets


def make_split(
    ids: Sequence[str] | np.ndarray,
    targets: Sequence[int] | np.ndarray,
    positive_classes: Sequence[int],
    *,
    n_positive: int | None = None,
    label_frequency: float = 0.2,
    seed: int = 0,
    n_label_sets: int = 1,
) -> PUSplit:
    """Draw a PU split: keep ``n_positive`` positives (all when ``None``), label ``round(c * n_pos)`` of them.

    Rows of the result keep the input order. ``y`` is 1 for the positive classes; the label
    columns are described in the module docstring.
    """
    ids = np.asarray(ids, dtype=object)
    targets = check_targets(targets)
    if ids.shape != targets.shape:
        raise ValueError(f"make_split: {ids.shape[0]} ids but {targets.shape[0]} targets")
    if not 0.0 < label_frequency <= 1.0:
        raise ParameterError("label_frequency", f"must be in (0, 1], got {label_frequency}")
    if n_label_sets < 1:
        raise ParameterError("n_label_sets", f"must be at least 1, got {n_label_sets}")
    known = targets >= 0
    is_pos = np.isin(targets, np.asarray(list(positive_classes), dtype=np.int64)) & known
    pos_rows = np.flatnonzero(is_pos)
    neg_rows = np.flatnonzero(known & ~is_pos)
    if pos_rows.size == 0:
        raise ParameterError(
            "positive_classes", f"{list(positive_classes)}: no sample of these classes in the store"
        )
    if neg_rows.size == 0:
        raise ParameterError("positive_classes", "covers every class: a PU split needs negatives")

    seeds = np.random.SeedSequence(seed).spawn(1 + n_label_sets)
    if n_positive is not None:
        if n_positive < 1:
            raise ParameterError("n_positive", f"must be at least 1, got {n_positive}")
        if n_positive > pos_rows.size:
            raise ParameterError(
                "n_positive", f"{n_positive} is more than the {pos_rows.size} positives available"
            )
        pos_rows = np.sort(np.random.default_rng(seeds[0]).choice(pos_rows, size=n_positive, replace=False))
    n_pos = int(pos_rows.size)
    n_lab = n_labeled_for(n_pos, label_frequency)
    if n_lab < 1:
        raise ParameterError(
            "label_frequency", f"{label_frequency} labels no positive out of {n_pos} (round(c * n) = 0)"
        )

    keep = np.sort(np.concatenate([pos_rows, neg_rows]))
    kept_pos = is_pos[keep]
    pos_positions = np.flatnonzero(kept_pos)  # positions of the kept positives in the output
    columns: dict[str, Any] = {"id": [str(i) for i in ids[keep]], "y": kept_pos.astype(np.int8)}
    for name, child in zip(label_column_names(n_label_sets), seeds[1:], strict=True):
        s = np.zeros(keep.size, dtype=np.int8)
        s[np.random.default_rng(child).choice(pos_positions, size=n_lab, replace=False)] = 1
        columns[name] = s
    labels = pl.DataFrame(
        columns, schema={"id": pl.String, "y": pl.Int8, **{k: pl.Int8 for k in columns if k.startswith("s")}}
    )
    stats = SplitStats(
        n_positive=n_pos,
        n_negative=int(neg_rows.size),
        n_labeled=n_lab,
        n_unlabeled=int(keep.size - n_lab),
        n_unlabeled_positive=n_pos - n_lab,
        n_dropped_positive=int(is_pos.sum() - n_pos),
        n_unknown=int((~known).sum()),
    )
    return PUSplit(labels=labels, stats=stats, positive_classes=tuple(int(c) for c in positive_classes))


def make_test_labels(
    ids: Sequence[str] | np.ndarray, targets: Sequence[int] | np.ndarray, positive_classes: Sequence[int]
) -> pl.DataFrame:
    """The test label set (``id``, ``y``): every row with a known target, y = membership of the positive classes."""
    ids = np.asarray(ids, dtype=object)
    targets = check_targets(targets, where="the test store")
    known = targets >= 0
    y = np.isin(targets[known], np.asarray(list(positive_classes), dtype=np.int64)).astype(np.int8)
    return pl.DataFrame({"id": [str(i) for i in ids[known]], "y": y}, schema={"id": pl.String, "y": pl.Int8})


# --------------------------------------------------------------------------------------------------
# A split of an embedding store
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreSplit:
    """A PU split of a store: the split, its positive classes and their names, the test label table."""

    split: PUSplit
    classes: list[int]
    class_names: list[str]
    test_labels: pl.DataFrame | None
    preset: str | None = None
    seed: int = 0

    def summary(self) -> dict[str, Any]:
        """Counts and settings of the split (what ``impulses split --json`` prints, less file paths)."""
        data: dict[str, Any] = {
            "preset": self.preset,
            "positive_classes": [int(c) for c in self.classes],
            "positive_class_names": list(self.class_names),
            "seed": self.seed,
            "label_sets": self.split.label_columns,
            **self.split.stats.as_dict(),
        }
        if self.test_labels is not None:
            data.update(test_rows=self.test_labels.height, test_positive=int(self.test_labels["y"].sum()))
        return data


def split_store(
    store: Any,
    *,
    positive_classes: str | Sequence[str | int] | None = None,
    preset: str | None = None,
    n_positive: int | None = None,
    label_frequency: float | None = None,
    seed: int = 0,
    n_label_sets: int = 1,
    test_store: Any = None,
) -> StoreSplit:
    """Draw a PU split of a store's samples from its class targets, and label a test store alike.

    Args:
        store: The training :class:`~impulses.embed.store.EmbeddingStore` (``ids``, ``targets``,
            ``class_names``).
        positive_classes: Class indices or names ("0,1,8,9" or a list; a CIFAR-100 store also takes
            superclass names). Exactly one of this and ``preset``.
        preset: A split of the paper's Table I (:data:`PRESETS`); its n_positive and label frequency
            apply unless given here.
        n_positive: Keep this many positives (seeded); default all, or the preset's.
        label_frequency: c, the share of kept positives labeled; default 0.2, or the preset's.
        seed: Seed of the downsampling and the labeled subsets.
        n_label_sets: K independent labeled subsets (columns s_0..s_K-1).
        test_store: A test store to label (id, y) with the same positive classes.

    Returns:
        A :class:`StoreSplit`.

    Raises:
        ParameterError: both or neither of ``positive_classes``/``preset``, unknown classes, a preset
            of another dataset, counts out of range, or a test store with other class names.
    """
    if (positive_classes is None) == (preset is None):
        raise ParameterError(("positive_classes", "preset"), "exclude each other: give exactly one")
    targets = check_targets(store.targets, where=str(getattr(store, "path", "the store")))
    names = store.class_names
    n_classes = int(targets.max()) + 1
    if preset is not None:
        spec = get_split_preset(preset)
        classes = preset_classes(spec, names, n_classes)
        n_positive = spec.n_positive if n_positive is None else n_positive
        label_frequency = spec.label_frequency if label_frequency is None else label_frequency
    else:
        tokens = parse_class_list(positive_classes) if isinstance(positive_classes, str) else positive_classes
        classes = resolve_classes(list(tokens or []), names, n_classes=n_classes)
    test_labels = None
    if test_store is not None:
        test_names = test_store.class_names
        if names is not None and test_names is not None and list(test_names) != list(names):
            raise ParameterError("test_store", "has other class names than store")
        where = str(getattr(test_store, "path", "the test store"))
        test_labels = make_test_labels(
            test_store.ids, check_targets(test_store.targets, where=where), classes
        )
    split = make_split(
        store.ids,
        targets,
        classes,
        n_positive=n_positive,
        label_frequency=0.2 if label_frequency is None else label_frequency,
        seed=seed,
        n_label_sets=n_label_sets,
    )
    class_names = [names[c] if names and c < len(names) else str(c) for c in classes]
    return StoreSplit(split, classes, class_names, test_labels, preset, seed)
