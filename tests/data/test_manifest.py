"""Manifest source: paths, ids, labels, order, fingerprint, one-line errors, and embedding like a folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from impulses.data.manifest import ManifestSource, encode_labels
from impulses.data.sources import BadImageError, ImageFolderSource, open_source
from impulses.errors import ImpulsesError


def _write(file: Path, /, **columns: list) -> Path:
    frame = pl.DataFrame(columns)
    if file.suffix == ".csv":
        frame.write_csv(file)
    else:
        frame.write_parquet(file)
    return file


def test_csv_rows_keep_their_order_paths_and_integer_labels(digit_pngs) -> None:
    root, files = digit_pngs
    rows = files[::-1]  # not the folder's sorted order: the manifest's order is the source's
    manifest = _write(root / "list.csv", path=[rel for rel, _ in rows], label=[digit for _, digit in rows])
    src = open_source(f"manifest:{manifest}")
    assert isinstance(src, ManifestSource) and len(src) == len(rows)
    assert src.spec == f"manifest:{manifest.resolve()}"
    assert src.class_names is None
    for i in (0, 7, len(rows) - 1):
        image, sample_id, target = src[i]
        rel, digit = rows[i]
        assert (sample_id, target) == (rel, digit)  # default id: the path as written
        assert src.sample_id(i) == rel
        np.testing.assert_array_equal(np.asarray(image), np.asarray(Image.open(root / rel)))


def test_parquet_ids_absolute_paths_and_string_labels(digit_pngs, tmp_path: Path) -> None:
    root, files = digit_pngs
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (tmp_path / "elsewhere").mkdir()
    manifest = _write(
        tmp_path / "elsewhere" / "m.parquet",
        path=[str(root / rel) for rel, _ in files],
        id=list(range(100, 100 + len(files))),
        target=[names[d] if d != 3 else None for _, d in files],
    )
    src = ManifestSource(manifest)
    present = sorted({names[d] for _, d in files if d != 3})
    assert src.class_names == present
    for i, (_, digit) in enumerate(files):
        assert src.sample_id(i) == str(100 + i)
        assert src.targets[i] == (-1 if digit == 3 else present.index(names[digit]))
    assert src[5].id == "105"


def test_csv_ids_keep_leading_zeros(digit_pngs) -> None:
    root, files = digit_pngs
    manifest = _write(root / "m.csv", path=[rel for rel, _ in files[:3]], id=["007", "008", "009"])
    assert [ManifestSource(manifest).sample_id(i) for i in range(3)] == ["007", "008", "009"]


def test_digest_follows_the_manifest_and_its_files(digit_pngs) -> None:
    root, files = digit_pngs
    paths = [rel for rel, _ in files[:5]]
    manifest = _write(root / "m.csv", path=paths)
    first = ManifestSource(manifest).digest
    assert ManifestSource(manifest).digest == first  # deterministic
    _write(manifest, path=paths, label=[1, 0, 1, 0, 1])
    relabeled = ManifestSource(manifest).digest
    assert relabeled != first  # the manifest's content is covered
    target = root / paths[2]
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert ManifestSource(manifest).digest != relabeled  # a listed file's mtime is covered
    Image.new("L", (9, 9)).save(target)
    assert ManifestSource(manifest).digest != relabeled


def test_unreadable_image_is_a_bad_image_error_naming_the_file(digit_pngs) -> None:
    root, files = digit_pngs
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    manifest = _write(root / "m.csv", path=[files[0][0], "broken.png"])
    src = ManifestSource(manifest)
    assert src[0].id == files[0][0]
    with pytest.raises(BadImageError, match=r"broken\.png"):
        src[1]
    assert src.sample_id(1) == "broken.png"


def test_row_range_spec(digit_pngs) -> None:
    root, files = digit_pngs
    manifest = _write(root / "m.csv", path=[rel for rel, _ in files])
    part = open_source(f"manifest:{manifest}[2:5]")
    assert len(part) == 3 and part.sample_id(0) == files[2][0]


@pytest.mark.parametrize(
    ("name", "columns", "message"),
    [
        ("m.txt", {"path": ["a.png"]}, r"m\.txt: a manifest is a \.csv or \.parquet file"),
        ("m.csv", {"file": ["0/0000.png"]}, r"m\.csv: no 'path' column \(columns: file\)"),
        ("m.csv", {"path": ["0/0000.png", ""]}, r"m\.csv: column 'path' is empty at line 3"),
        (
            "m.csv",
            {"path": ["0/0000.png", "0/nope.png"]},
            r"m\.csv: column 'path' at line 3 names .*nope\.png, which is not an existing file",
        ),
        ("m.parquet", {"path": ["0/0000.png", "0/nope.png"]}, r"m\.parquet: column 'path' at row 1 names"),
        (
            "m.csv",
            {"path": ["0/0000.png", "0/0000.png"]},
            r"column 'path' \(the default ids\) repeats id '0/0000\.png' at line 2 and line 3",
        ),
        (
            "m.csv",
            {"path": ["0/0000.png", "0/0000.png"], "id": ["a", "a"]},
            r"m\.csv: column 'id' repeats id 'a'",
        ),
        ("m.parquet", {"path": ["0/0000.png"], "id": [None]}, r"m\.parquet: column 'id' is empty at row 0"),
        (
            "m.csv",
            {"path": ["0/0000.png"], "label": [1], "target": [1]},
            r"both a 'label' and a 'target' column",
        ),
        ("m.csv", {"path": ["0/0000.png"], "label": [-2]}, r"m\.csv: column 'label': line 2 has label -2"),
        ("m.parquet", {"path": ["0/0000.png"], "label": [0.5]}, r"column 'label' holds fractional numbers"),
    ],
)
def test_bad_manifests_are_one_line_errors(digit_pngs, name: str, columns: dict, message: str) -> None:
    root, _ = digit_pngs
    if name.endswith(".txt"):
        (root / name).write_text("path\na.png\n")
    else:
        _write(root / name, **columns)
    with pytest.raises(ImpulsesError, match=message) as err:
        open_source(f"manifest:{root / name}")
    assert "\n" not in str(err.value)


def test_missing_or_unreadable_manifest(tmp_path: Path) -> None:
    with pytest.raises(ImpulsesError, match=r"nope\.csv: no such file"):
        open_source(f"manifest:{tmp_path / 'nope.csv'}")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ImpulsesError, match=r"junk\.parquet: cannot read the manifest"):
        open_source(f"manifest:{tmp_path / 'junk.parquet'}")
    (tmp_path / "empty.csv").write_text("path\n")
    with pytest.raises(ImpulsesError, match=r"empty\.csv: lists no images"):
        open_source(f"manifest:{tmp_path / 'empty.csv'}")
    with pytest.raises(ImpulsesError, match="needs a file path"):
        open_source("manifest:")


def test_encode_labels_integers_strings_and_missing() -> None:
    def where(i: int) -> str:
        return f"row {i}"

    targets, names = encode_labels([3, None, "0", ""], where, what="t")
    assert targets.tolist() == [3, -1, 0, -1] and names is None
    targets, names = encode_labels(["dog", "cat", None, "dog", "7"], where, what="t")
    assert names == ["7", "cat", "dog"] and targets.tolist() == [2, 1, -1, 2, 0]


def test_embeds_to_the_same_rows_as_the_image_folder(digit_pngs, tmp_path: Path) -> None:
    from impulses.embed.extract import ConfigTransform, embed
    from impulses.embed.store import EmbeddingStore, StoreSpec
    from tests.embed.conftest import TRANSFORM, TinyEncoder

    root, files = digit_pngs
    manifest = _write(
        tmp_path / "m.csv",
        path=[f"digits/{rel}" for rel, _ in files],
        id=[r for r, _ in files],
        label=[d for _, d in files],
    )
    stores = {}
    for name, src in (("folder", ImageFolderSource(root)), ("manifest", open_source(f"manifest:{manifest}"))):
        spec = StoreSpec("tiny", src.spec, "0" * 64, TRANSFORM, src.digest)
        embed(
            src,
            TinyEncoder(),
            ConfigTransform(TRANSFORM),
            tmp_path / f"{name}.h5",
            spec=spec,
            batch_size=16,
            progress=False,
        )
        stores[name] = EmbeddingStore.open(tmp_path / f"{name}.h5")
    folder, listed = stores["folder"], stores["manifest"]
    assert listed.ids.tolist() == folder.ids.tolist() == [rel for rel, _ in files]
    assert listed.targets.tolist() == folder.targets.tolist() == [d for _, d in files]
    np.testing.assert_array_equal(listed.read(dtype=np.float16), folder.read(dtype=np.float16))
    assert listed.meta["source_digest"] == ManifestSource(manifest).digest
