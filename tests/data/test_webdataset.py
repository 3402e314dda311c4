"""WebDataset source: brace-expanded shards, sample keys and ids, labels, random access by offset, errors."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from impulses.data.sources import BadImageError, ImageFolderSource, open_source
from impulses.data.webdataset import WebDatasetSource, expand_shards
from impulses.errors import ImpulsesError


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _shards(root: Path, files: list[tuple[str, int]], folder: Path, n_shards: int = 2) -> list[Path]:
    """The digit PNGs as ``folder/digits-00000{k}.tar``: member ``<digit>/<index>.png`` + ``.cls`` per sample."""
    per = -(-len(files) // n_shards)
    paths = []
    for k in range(n_shards):
        members = []
        for rel, digit in files[k * per : (k + 1) * per]:
            key = rel.removesuffix(".png")
            members += [(f"{key}.png", (root / rel).read_bytes()), (f"{key}.cls", f"{digit}\n".encode())]
        paths.append(_write_tar(folder / f"digits-{k:06d}.tar", members))
    return paths


def test_samples_ids_targets_and_pixels(digit_pngs, tmp_path: Path) -> None:
    root, files = digit_pngs
    _shards(root, files, tmp_path / "shards")
    src = open_source(f"webdataset:{tmp_path}/shards/digits-{{000000..000001}}.tar")
    assert isinstance(src, WebDatasetSource) and len(src) == len(files)
    assert src.spec == f"webdataset:{tmp_path}/shards/digits-{{000000..000001}}.tar"
    assert src.class_names is None
    per = -(-len(files) // 2)
    for i in (len(files) - 1, 0, per, 5):  # any order: random access by offset
        rel, digit = files[i]
        image, sample_id, target = src[i]
        assert sample_id == src.sample_id(i) == f"digits-{i // per:06d}/{rel.removesuffix('.png')}"
        assert target == digit
        np.testing.assert_array_equal(np.asarray(image), np.asarray(Image.open(root / rel)))


def test_pickled_copy_reads_the_same(digit_pngs, tmp_path: Path) -> None:
    root, files = digit_pngs
    _shards(root, files, tmp_path / "s")
    src = WebDatasetSource(str(tmp_path / "s" / "digits-{000000..000001}.tar"))
    src[0]  # opens a shard file: the copy must not carry the handle
    copy = pickle.loads(pickle.dumps(src))
    assert copy._files == {}
    for i in (3, len(files) - 2):
        assert copy[i].id == src[i].id
        np.testing.assert_array_equal(np.asarray(copy[i].image), np.asarray(src[i].image))
    src.close()


def test_relative_pattern_string_labels_and_image_priority(tmp_path: Path, monkeypatch) -> None:
    png = io.BytesIO()
    Image.new("L", (4, 4), 200).save(png, format="PNG")
    jpg = io.BytesIO()
    Image.new("L", (4, 4), 50).save(jpg, format="JPEG")
    _write_tar(
        tmp_path / "train" / "a.tar",
        [
            ("__index__", b"x"),  # webdataset meta member: skipped
            ("s1.png", png.getvalue()),
            ("s1.jpg", jpg.getvalue()),  # jpg wins over png
            ("s1.label", b"dog"),
            ("s2.png", png.getvalue()),
            ("s2.json", b"{}"),
            ("dir/s3.v1.png", png.getvalue()),  # key dir/s3, extension v1.png: not an image key
            ("dir/s3.webp", _webp()),
            ("dir/s3.cls.txt", b"cat"),
        ],
    )
    _write_tar(tmp_path / "val" / "a.tar", [("s1.png", png.getvalue())])
    monkeypatch.chdir(tmp_path)
    src = open_source("webdataset:{train,val}/a.tar")
    assert src.spec == f"webdataset:{tmp_path}/{{train,val}}/a.tar"
    assert [src.sample_id(i) for i in range(len(src))] == [
        "train/a/s1",
        "train/a/s2",
        "train/a/dir/s3",
        "val/a/s1",
    ]
    assert src.class_names == ["cat", "dog"]
    assert src.targets.tolist() == [1, -1, 0, -1]
    assert np.asarray(src[0].image).max() < 100  # the jpg (dark), not the png (bright)
    assert src[2].image.size == (3, 2)


def _webp() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 20, 30)).save(out, format="WEBP")
    return out.getvalue()


def test_digest_follows_the_shards(digit_pngs, tmp_path: Path) -> None:
    root, files = digit_pngs
    paths = _shards(root, files, tmp_path / "s")
    pattern = f"webdataset:{tmp_path}/s/digits-{{000000..000001}}.tar"
    first = open_source(pattern).digest
    assert open_source(pattern).digest == first
    assert open_source(f"webdataset:{paths[0]}").digest != first
    stat = paths[1].stat()
    os.utime(paths[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert open_source(pattern).digest != first


def test_corrupt_image_member_is_a_bad_image_error(tmp_path: Path) -> None:
    _write_tar(tmp_path / "a.tar", [("k.png", b"\x89PNG\r\n\x1a\n junk")])
    src = open_source(f"webdataset:{tmp_path}/a.tar")
    assert src.sample_id(0) == "a/k"
    with pytest.raises(BadImageError, match=r"a\.tar:k\.png: cannot read image"):
        src[0]


def test_shard_truncated_after_indexing_is_a_bad_image_error(digit_pngs, tmp_path: Path) -> None:
    root, files = digit_pngs
    (path,) = _shards(root, files[:3], tmp_path, n_shards=1)
    src = open_source(f"webdataset:{path}")
    path.write_bytes(path.read_bytes()[:1024])
    with pytest.raises(BadImageError, match=r"digits-000000\.tar:"):
        src[2]


def test_range_spec_and_rank_blocks_read_their_samples(digit_pngs, tmp_path: Path) -> None:
    root, files = digit_pngs
    _shards(root, files, tmp_path / "s")
    full = open_source(f"webdataset:{tmp_path}/s/digits-{{000000..000001}}.tar")
    part = open_source(f"webdataset:{tmp_path}/s/digits-{{000000..000001}}.tar[20:30]")
    assert len(part) == 10 and [part.sample_id(i) for i in range(10)] == [
        full.sample_id(i) for i in range(20, 30)
    ]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("k.png", b"x"), ("j.png", b"x"), ("k.cls", b"1")], r"a\.tar: sample key 'k' appears twice"),
        ([("k.json", b"{}")], r"a\.tar: sample 'k' has no image member \(has json"),
        ([("k.png", b"x"), ("k.cls", b"-3")], r"sample 'a/k' \(its cls/label member\) has label -3"),
        ([("README", b"x")], r"a\.tar: holds no samples"),
        ([("k.png", b"x"), ("k.cls", b"\xff\xfe")], r"a\.tar: k\.cls is not UTF-8 text"),
    ],
)
def test_bad_shards_are_one_line_errors(tmp_path: Path, members, message: str) -> None:
    _write_tar(tmp_path / "a.tar", members)
    with pytest.raises(ImpulsesError, match=message) as err:
        open_source(f"webdataset:{tmp_path}/a.tar")
    assert "\n" not in str(err.value)


def test_missing_compressed_and_malformed_patterns(tmp_path: Path) -> None:
    _write_tar(tmp_path / "a.tar", [("k.png", b"x")])
    _write_tar(tmp_path / "b-00.tar", [("k.png", b"x")])
    with pytest.raises(ImpulsesError, match=r"shard .*b-01\.tar does not exist \(and 1 more of 3\)"):
        open_source(f"webdataset:{tmp_path}/b-{{00..02}}.tar")
    with pytest.raises(ImpulsesError, match=r"names .*a\.tar more than once"):
        open_source(f"webdataset:{tmp_path}/{{a,a}}.tar")
    (tmp_path / "c.tar.gz").write_bytes(gzip.compress((tmp_path / "a.tar").read_bytes()))
    with pytest.raises(ImpulsesError, match=r"c\.tar\.gz: not a readable uncompressed tar file"):
        open_source(f"webdataset:{tmp_path}/c.tar.gz")
    with pytest.raises(ImpulsesError, match="needs a shard path"):
        open_source("webdataset:")


def test_expand_shards_keeps_the_pattern_order(tmp_path: Path) -> None:
    for name in ("x-09.tar", "x-10.tar", "x-11.tar"):
        _write_tar(tmp_path / name, [("k.png", b"x")])
    assert [p.name for p in expand_shards(f"{tmp_path}/x-{{11..09}}.tar")] == [
        "x-11.tar",
        "x-10.tar",
        "x-09.tar",
    ]


def test_embeds_to_the_same_rows_as_the_image_folder(digit_pngs, tmp_path: Path) -> None:
    from impulses.embed.extract import ConfigTransform, embed
    from impulses.embed.shards import rank_items
    from impulses.embed.store import EmbeddingStore, StoreSpec
    from tests.embed.conftest import TRANSFORM, TinyEncoder

    root, files = digit_pngs
    _shards(root, files, tmp_path / "s", n_shards=3)
    tars = open_source(f"webdataset:{tmp_path}/s/digits-{{000000..000002}}.tar")
    folder = ImageFolderSource(root)

    def run(src, out: str, items: range | None = None) -> EmbeddingStore:
        spec = StoreSpec("tiny", src.spec, "0" * 64, TRANSFORM, src.digest)
        embed(
            src,
            TinyEncoder(),
            ConfigTransform(TRANSFORM),
            tmp_path / out,
            spec=spec,
            items=items,
            batch_size=16,
            workers=0,
            progress=False,
        )
        return EmbeddingStore.open(tmp_path / out)

    ref, got = run(folder, "folder.h5"), run(tars, "tars.h5")
    assert [i.split("/", 1)[1] + ".png" for i in got.ids] == ref.ids.tolist()
    assert got.targets.tolist() == ref.targets.tolist() == [d for _, d in files]
    np.testing.assert_array_equal(got.read(dtype=np.float16), ref.read(dtype=np.float16))
    # two ranks' blocks (as under torchrun) read exactly their samples
    blocks = [run(tars, f"rank{r}.h5", rank_items(len(tars), 16, r, 2)) for r in range(2)]
    assert np.concatenate([b.ids for b in blocks]).tolist() == got.ids.tolist()
    np.testing.assert_array_equal(
        np.concatenate([b.read(dtype=np.float16) for b in blocks]), got.read(dtype=np.float16)
    )
