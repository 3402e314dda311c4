"""Dataset sources: specs, deterministic order, ids, targets, class names, bad images."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from impulses.data.sources import (
    FASHION_MNIST_CLASSES,
    BadImageError,
    ImageFolderSource,
    open_source,
    read_idx,
)
from impulses.errors import ImpulsesError


def test_digits_pixels_ids_targets_match_sklearn() -> None:
    from sklearn.datasets import load_digits

    ref = load_digits()
    src = open_source("digits")
    assert len(src) == 1797 and src.spec == "digits"
    assert src.class_names == [str(d) for d in range(10)]
    for i in (0, 5, 1796):
        image, sample_id, target = src[i]
        assert image.mode == "L" and image.size == (8, 8)
        assert sample_id == f"digits/all/{i}"
        assert target == ref.target[i]
        expected = np.rint(ref.images[i] / 16 * 255).astype(np.uint8)
        np.testing.assert_array_equal(np.asarray(image), expected)


def test_row_range_keeps_ids_and_targets() -> None:
    full = open_source("digits")
    part = open_source("digits[100:110]")
    assert part.spec == "digits[100:110]" and len(part) == 10
    assert [s.id for s in (part[i] for i in range(10))] == [f"digits/all/{i}" for i in range(100, 110)]
    assert part[3].target == full[103].target
    assert part.sample_id(0) == "digits/all/100"
    assert open_source("digits[:5]").spec == "digits[0:5]"
    assert part.digest != full.digest


@pytest.mark.parametrize(
    "spec",
    ["mnist", "digits:train", "fashion-mnist:val", "imagefolder:", "digits[5:5]"],
)
def test_bad_specs_are_user_errors(spec: str) -> None:
    with pytest.raises(ImpulsesError):
        open_source(spec, data_root="/nonexistent")


def test_fashion_mnist_matches_an_independent_reader(fashion_root: Path, tmp_path: Path) -> None:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    src = open_source("fashion-mnist:test", data_root=fashion_root)
    assert src.spec == "fashion-mnist:test" and len(src) == 10_000
    assert src.class_names == list(FASHION_MNIST_CLASSES)
    raw = tmp_path / "raw"
    raw.mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(fashion_root / f"{stem}.gz") as fin, open(raw / stem, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    images = read_image_file(str(raw / "t10k-images-idx3-ubyte")).numpy()
    labels = read_label_file(str(raw / "t10k-labels-idx1-ubyte")).numpy()
    for i in (0, 1, 9999):
        image, sample_id, target = src[i]
        assert sample_id == f"fashion-mnist/test/{i}" and image.size == (28, 28)
        np.testing.assert_array_equal(np.asarray(image), images[i])
        assert target == labels[i]
    assert np.bincount(src.targets).tolist() == [1000] * 10  # the test split is balanced
    # the same files uncompressed give the same source, the spec defaults to the train split
    unzipped = open_source("fashion-mnist:test", data_root=raw)
    assert unzipped.digest == src.digest
    assert open_source("fashion-mnist", data_root=fashion_root).spec == "fashion-mnist:train"


def test_fashion_mnist_missing_files_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ImpulsesError, match=r"^data_root .*t10k-images-idx3-ubyte.*turn on download"):
        open_source("fashion-mnist:test", data_root=tmp_path)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "x-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    with pytest.raises(ImpulsesError, match=r"x-idx3-ubyte.*magic"):
        read_idx(bad)
    short = tmp_path / "y-idx1-ubyte"
    short.write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ImpulsesError, match=r"y-idx1-ubyte.*shape"):
        read_idx(short)


def _fake_cifar(root: Path, name: str) -> np.ndarray:
    """A CIFAR-style pickle folder whose pixel (n, y, x, c) holds (n + 3*c + x) % 256; returns labels."""
    n_per, files = 4, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    key, meta_file, names_key, folder = "labels", "batches.meta", "label_names", "cifar-10-batches-py"
    if name == "cifar100":
        n_per, files, key = 8, ["train", "test"], "fine_labels"
        meta_file, names_key, folder = "meta", "fine_label_names", "cifar-100-python"
    base = root / folder
    base.mkdir(parents=True)
    labels = []
    for b, f in enumerate(files):
        chw = np.zeros((n_per, 3, 32, 32), dtype=np.uint8)
        for n in range(n_per):
            for c in range(3):
                chw[n, c] = (b * n_per + n + 3 * c + np.arange(32)[None, :]) % 256
        lab = [(b * n_per + n) % 10 for n in range(n_per)]
        labels.append(lab)
        with open(base / f, "wb") as fh:
            pickle.dump({"data": chw.reshape(n_per, -1), key: lab}, fh)
    with open(base / meta_file, "wb") as fh:
        pickle.dump({names_key: [f"class{i}" for i in range(10)]}, fh)
    return np.array(labels)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_batches_are_read_in_order_as_rgb(tmp_path: Path, name: str) -> None:
    labels = _fake_cifar(tmp_path, name)
    train = open_source(f"{name}:train", data_root=tmp_path)
    test = open_source(f"{name}:test", data_root=tmp_path)
    n_train = labels[:-1].size
    assert len(train) == n_train and len(test) == labels[-1].size
    assert train.class_names == [f"class{i}" for i in range(10)]
    image, sample_id, target = train[5]
    assert sample_id == f"{name}/train/5" and target == labels.ravel()[5]
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.shape == (32, 32, 3)
    assert pixels[0, 7].tolist() == [(5 + 3 * c + 7) % 256 for c in range(3)]
    assert test[0].id == f"{name}/test/0"


def test_cifar_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImpulsesError, match=r"^data_root .*cifar10:train.*turn on download"):
        open_source("cifar10", data_root=tmp_path)


def test_imagefolder_classes_recursive_sorted(make_folder) -> None:
    root = make_folder(
        {
            "dog/b.png": "RGB",
            "cat/z.jpg": "RGB",
            "cat/sub/a.png": "L",
            "dog/.hidden.png": "RGB",
            "cat/notes.txt": "text",  # not an image extension: ignored
        }
    )
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(b"")
    src = open_source(f"imagefolder:{root}")
    assert src.spec == f"imagefolder:{root.resolve()}"
    assert src.class_names == ["cat", "dog"]
    assert [src.sample_id(i) for i in range(len(src))] == ["cat/sub/a.png", "cat/z.jpg", "dog/b.png"]
    assert [src[i].target for i in range(3)] == [0, 0, 1]
    assert src[0].image.mode == "L" and src[1].image.mode == "RGB"


def test_imagefolder_flat_has_unknown_targets_and_plain_modes(make_folder) -> None:
    root = make_folder({"a.png": "RGBA", "b.gif": "P", "c.bmp": "L"})
    src = open_source(f"imagefolder:{root}")
    assert src.class_names is None
    assert [s.target for s in (src[i] for i in range(3))] == [-1, -1, -1]
    assert [src[i].image.mode for i in range(3)] == ["RGB", "RGB", "L"]
    rgba = np.asarray(Image.open(root / "a.png").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(src[0].image), rgba)


def test_imagefolder_digest_follows_the_file_list(make_folder) -> None:
    root = make_folder({"a.png": "RGB", "b.png": "RGB"})
    before = ImageFolderSource(root).digest
    assert ImageFolderSource(root).digest == before
    (root / "b.png").rename(root / "c.png")
    assert ImageFolderSource(root).digest != before


def test_imagefolder_mixed_or_empty_is_an_error(make_folder, tmp_path: Path) -> None:
    root = make_folder({"cat/a.png": "RGB", "stray.png": "RGB"})
    with pytest.raises(ImpulsesError, match=r"stray\.png"):
        open_source(f"imagefolder:{root}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImpulsesError, match="no image files"):
        open_source(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(ImpulsesError, match="no such folder"):
        open_source(f"imagefolder:{tmp_path / 'missing'}")


def test_corrupt_image_raises_naming_the_file(make_folder) -> None:
    root = make_folder({"good.png": "RGB", "broken.png": "corrupt"})
    src = open_source(f"imagefolder:{root}")
    assert src.sample_id(0) == "broken.png"
    with pytest.raises(BadImageError, match=r"broken\.png") as err:
        src[0]
    assert err.value.path.endswith("broken.png")
    assert src[1].id == "good.png"


def test_truncated_image_is_bad(make_folder) -> None:
    root = make_folder({"t.png": "RGB"})
    data = (root / "t.png").read_bytes()
    (root / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match=r"t\.png"):
        open_source(f"imagefolder:{root}")[0]
