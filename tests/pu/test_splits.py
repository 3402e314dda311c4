"""PU splits: the presets against the paper's Table I, class resolution, seeding, K label sets, writing."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from impulses.errors import ImpulsesError, ParameterError
from impulses.pu.splits import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    CIFAR100_SUPERCLASSES,
    FASHION_MNIST_CLASSES,
    PRESETS,
    cifar100_coarse_targets,
    make_split,
    make_test_labels,
    n_labeled_for,
    parse_class_list,
    preset_classes,
    resolve_classes,
    split_store,
)

# The CIFAR-100 fine -> coarse table as published with the dataset (ryanchankh/cifar100coarse, widely copied).
REFERENCE_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip


def balanced_targets(n_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """Targets of a class-balanced dataset (like CIFAR or Fashion-MNIST), shuffled."""
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(n_classes), per_class))


def ids_for(n: int) -> np.ndarray:
    return np.array([f"train/{i}" for i in range(n)], dtype=object)


def split_from_frame(frame: pl.DataFrame, column: str = "s") -> dict[str, float]:
    """Counts recomputed from the written table itself (independent of SplitStats)."""
    s, y = frame[column].to_numpy(), frame["y"].to_numpy()
    n_u = int((s == 0).sum())
    return {
        "labeled": int(s.sum()),
        "unlabeled": n_u,
        "positive": int(y.sum()),
        "negative": int((y == 0).sum()),
        "prior": float(((s == 0) & (y == 1)).sum() / n_u),
    }


# --------------------------------------------------------------------------------------------------
# Presets: the paper's Table I numbers
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("preset", "classes", "per_class", "positives", "negatives", "labeled", "unlabeled", "prior"),
    [
        # CIFAR-10: 4 vehicle classes (20,000) downsampled to 3,000; 6 x 5,000 negatives.
        ("cifar10-imbalanced", CIFAR10_CLASSES, 5000, 3000, 30000, 600, 32400, 2400 / 32400),
        # CIFAR-100: 10 vehicle fine classes x 500 = 5,000 positives; 90 x 500 negatives.
        ("cifar100-vehicles", CIFAR100_CLASSES, 500, 5000, 45000, 1000, 49000, 4000 / 49000),
        # Fashion-MNIST: 4 tops classes (24,000) downsampled to 3,600; 6 x 6,000 negatives.
        ("fashion-mnist-imbalanced", FASHION_MNIST_CLASSES, 6000, 3600, 36000, 720, 38880, 2880 / 38880),
    ],
)
def test_presets_reproduce_table_one(
    preset, classes, per_class, positives, negatives, labeled, unlabeled, prior
):
    targets = balanced_targets(len(classes), per_class)
    spec = PRESETS[preset]
    positive = preset_classes(spec, list(classes), len(classes))
    split = make_split(
        ids_for(targets.size),
        targets,
        positive,
        n_positive=spec.n_positive,
        label_frequency=spec.label_frequency,
    )
    counted = split_from_frame(split.labels)
    assert counted == pytest.approx(
        {
            "labeled": labeled,
            "unlabeled": unlabeled,
            "positive": positives,
            "negative": negatives,
            "prior": prior,
        }
    )
    assert split.stats.n_labeled == labeled and split.stats.n_unlabeled == unlabeled
    assert split.stats.prior == pytest.approx(prior)
    assert round(split.stats.prior, 4) == {"cifar100-vehicles": 0.0816}.get(preset, 0.0741)
    assert split.stats.pn_ratio == ("1:9" if preset == "cifar100-vehicles" else "1:10")
    # Every labeled sample is a positive of the preset's classes.
    labeled_ids = split.labels.filter(pl.col("s") == 1)["id"].to_numpy()
    rows = np.array([int(i.split("/")[1]) for i in labeled_ids])
    assert np.isin(targets[rows], positive).all()


def test_preset_positive_classes_match_the_paper():
    assert preset_classes(PRESETS["cifar10-imbalanced"], list(CIFAR10_CLASSES), 10) == [0, 1, 8, 9]
    assert preset_classes(PRESETS["fashion-mnist-imbalanced"], list(FASHION_MNIST_CLASSES), 10) == [
        0,
        2,
        4,
        6,
    ]
    vehicles = preset_classes(PRESETS["cifar100-vehicles"], list(CIFAR100_CLASSES), 100)
    names = {CIFAR100_CLASSES[i] for i in vehicles}
    assert names == {"bicycle", "bus", "motorcycle", "pickup_truck", "train"} | {
        "lawn_mower", "rocket", "streetcar", "tank", "tractor",
    }  # fmt: skip
    # The coarse labels of these fine classes are 18 and 19 in the published table.
    assert sorted({REFERENCE_COARSE[i] for i in vehicles}) == [18, 19]


def test_preset_without_class_names_uses_indices_and_refuses_other_datasets():
    assert preset_classes(PRESETS["cifar10-imbalanced"], None, 10) == [0, 1, 8, 9]
    with pytest.raises(ImpulsesError, match="cifar10-imbalanced is for CIFAR-10"):
        preset_classes(PRESETS["cifar10-imbalanced"], list(FASHION_MNIST_CLASSES), 10)
    with pytest.raises(ImpulsesError, match="targets reach class 99"):
        preset_classes(PRESETS["fashion-mnist-imbalanced"], None, 100)


def test_cifar100_superclasses_match_the_published_coarse_table():
    assert len(CIFAR100_CLASSES) == 100 and len(set(CIFAR100_CLASSES)) == 100
    assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)  # torchvision's fine order is alphabetical
    np.testing.assert_array_equal(cifar100_coarse_targets(np.arange(100)), REFERENCE_COARSE)
    assert all(len(members) == 5 for members in CIFAR100_SUPERCLASSES.values())


# --------------------------------------------------------------------------------------------------
# Positive classes
# --------------------------------------------------------------------------------------------------
def test_resolve_classes_by_index_name_and_superclass():
    names = list(CIFAR10_CLASSES)
    assert resolve_classes(parse_class_list("9, 0,8,1"), names) == [0, 1, 8, 9]
    assert resolve_classes(["Airplane", "SHIP", "truck", "1"], names) == [0, 1, 8, 9]
    fine = resolve_classes(["vehicles 1"], list(CIFAR100_CLASSES))
    assert fine == sorted(
        CIFAR100_CLASSES.index(n) for n in ("bicycle", "bus", "motorcycle", "pickup_truck", "train")
    )
    assert resolve_classes(["t-shirt/top", "ankle_boot"], list(FASHION_MNIST_CLASSES)) == [0, 9]
    assert resolve_classes(["3", "5"], None, n_classes=10) == [3, 5]


@pytest.mark.parametrize(
    ("tokens", "names", "message"),
    [
        (["spaceship"], list(CIFAR10_CLASSES), "unknown class 'spaceship'.*0 airplane"),
        (["10"], list(CIFAR10_CLASSES), "class index 10 is out of range"),
        (["-1"], list(CIFAR10_CLASSES), "class index -1 is out of range"),
        (["cat"], None, "has no class names"),
        (["vehicles 1"], list(CIFAR10_CLASSES), "unknown class 'vehicles 1'"),
    ],
)
def test_resolve_classes_errors_name_the_class(tokens, names, message):
    with pytest.raises(ImpulsesError, match=message):
        resolve_classes(tokens, names, n_classes=10)


def test_parse_class_list_rejects_empty_tokens():
    with pytest.raises(ImpulsesError, match="comma-separated"):
        parse_class_list("0,,1")


# --------------------------------------------------------------------------------------------------
# Seeding, label frequency, K label sets
# --------------------------------------------------------------------------------------------------
def test_label_frequency_is_exact_and_rounds_half_up():
    assert n_labeled_for(3000, 0.2) == 600
    assert n_labeled_for(3, 0.5) == 2  # 1.5 -> 2
    assert n_labeled_for(5, 0.1) == 1  # 0.5 -> 1
    assert n_labeled_for(7, 1.0) == 7
    targets = balanced_targets(4, 25)  # 2 positive classes: 50 positives
    split = make_split(ids_for(100), targets, [0, 1], label_frequency=0.33)
    assert split_from_frame(split.labels)["labeled"] == 17  # 16.5 -> 17


def test_same_seed_same_split_other_seed_other_split():
    targets = balanced_targets(10, 100)
    ids = ids_for(targets.size)
    a = make_split(ids, targets, [0, 1], n_positive=120, seed=3)
    b = make_split(ids, targets, [0, 1], n_positive=120, seed=3)
    c = make_split(ids, targets, [0, 1], n_positive=120, seed=4)
    assert a.labels.equals(b.labels)
    assert not a.labels["id"].equals(c.labels["id"])  # a different downsampling
    assert a.labels["id"].to_list() == sorted(a.labels["id"].to_list(), key=lambda i: int(i.split("/")[1]))


def test_k_label_sets_share_samples_and_differ_in_labels():
    targets = balanced_targets(10, 100)
    ids = ids_for(targets.size)
    one = make_split(ids, targets, [2], label_frequency=0.3, seed=7)
    three = make_split(ids, targets, [2], label_frequency=0.3, seed=7, n_label_sets=3)
    assert one.label_columns == ["s"] and three.label_columns == ["s_0", "s_1", "s_2"]
    # Set 0 does not depend on how many sets were drawn; the samples and y are shared.
    assert one.labels["s"].to_list() == three.labels["s_0"].to_list()
    assert one.labels["id"].equals(three.labels["id"]) and one.labels["y"].equals(three.labels["y"])
    columns = [three.labels[c].to_numpy() for c in three.label_columns]
    for s in columns:
        assert s.sum() == 30 and (three.labels["y"].to_numpy()[s == 1] == 1).all()
    assert not np.array_equal(columns[0], columns[1]) and not np.array_equal(columns[1], columns[2])


def test_unknown_targets_are_left_out_and_counted():
    targets = balanced_targets(5, 20)
    targets[:7] = -1
    split = make_split(ids_for(100), targets, [0], label_frequency=0.5)
    assert split.stats.n_unknown == 7
    assert split.labels.height == 93
    assert not set(split.labels["id"].to_list()) & {f"train/{i}" for i in range(7)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_frequency": 0.0}, r"label_frequency must be in \(0, 1\], got 0.0"),
        ({"label_frequency": 1.5}, r"label_frequency must be in \(0, 1\], got 1.5"),
        ({"label_frequency": 0.001}, "label_frequency 0.001 labels no positive"),
        ({"n_positive": 21}, "n_positive 21 is more than the 20 positives available"),
        ({"n_positive": 0}, "n_positive must be at least 1, got 0"),
        ({"n_label_sets": 0}, "n_label_sets must be at least 1, got 0"),
    ],
)
def test_bad_split_options_are_errors(kwargs, message):
    targets = balanced_targets(5, 20)
    with pytest.raises(ParameterError, match=message) as info:
        make_split(ids_for(100), targets, [0], **kwargs)
    assert info.value.params == (next(iter(kwargs)),)


def test_stores_without_targets_or_negatives_are_errors():
    with pytest.raises(ImpulsesError, match="no class targets"):
        make_split(ids_for(10), np.full(10, -1), [0])
    with pytest.raises(ImpulsesError, match="covers every class"):
        make_split(ids_for(10), np.zeros(10, dtype=int), [0])
    with pytest.raises(ImpulsesError, match="no sample of these classes"):
        make_split(ids_for(10), np.ones(10, dtype=int), [0])


def test_test_labels_mark_every_positive_class_member():
    targets = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -1, 6])
    frame = make_test_labels(ids_for(12), targets, [0, 2, 4, 6])
    assert frame.columns == ["id", "y"]
    assert frame["y"].to_list() == [1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 1]
    assert "train/10" not in frame["id"].to_list()


# --------------------------------------------------------------------------------------------------
# split_store
# --------------------------------------------------------------------------------------------------
class FakeStore:
    """What split_store reads of an embedding store (it is duck-typed)."""

    def __init__(self, targets, class_names=None, prefix="train"):
        self.targets = np.asarray(targets)
        self.ids = np.array([f"{prefix}/{i}" for i in range(len(targets))], dtype=object)
        self.class_names = class_names


def test_split_store_by_classes_and_by_preset():
    names = list(FASHION_MNIST_CLASSES)
    store = FakeStore(balanced_targets(10, 30), names)
    by_name = split_store(store, positive_classes="T-shirt/top, Coat", seed=3, n_label_sets=2,
                          test_store=FakeStore(balanced_targets(10, 5), names, "test"))  # fmt: skip
    direct = make_split(store.ids, store.targets, [0, 4], seed=3, n_label_sets=2)
    assert by_name.classes == [0, 4] and by_name.class_names == ["T-shirt/top", "Coat"]
    assert by_name.split.labels.equals(direct.labels)
    assert by_name.test_labels["y"].sum() == 10
    summary = by_name.summary()
    assert summary["label_sets"] == ["s_0", "s_1"] and summary["test_positive"] == 10
    assert summary["prior"] == pytest.approx(direct.stats.prior)
    preset = split_store(FakeStore(balanced_targets(10, 1000), names), preset="fashion-mnist-imbalanced")
    assert preset.classes == [0, 2, 4, 6] and preset.split.stats.n_positive == 3600
    assert preset.split.stats.label_frequency == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("kwargs", "params", "message"),
    [
        ({}, ("positive_classes", "preset"), "exclude each other"),
        (
            {"positive_classes": "1", "preset": "cifar10-imbalanced"},
            ("positive_classes", "preset"),
            "exactly one",
        ),
        ({"preset": "mnist"}, ("preset",), "'mnist' is not a preset"),
        ({"preset": "cifar10-imbalanced"}, ("preset",), "is for CIFAR-10"),
        ({"positive_classes": "digit 11"}, ("positive_classes",), "unknown class 'digit 11'"),
        (
            {"positive_classes": "1", "test_store": FakeStore([0, 1], ["a", "b"])},
            ("test_store",),
            "other class",
        ),
    ],
)
def test_split_store_errors_name_the_parameter(kwargs, params, message):
    store = FakeStore(balanced_targets(10, 5), list(FASHION_MNIST_CLASSES))
    with pytest.raises(ParameterError, match=message) as info:
        split_store(store, **kwargs)
    assert info.value.params == params
