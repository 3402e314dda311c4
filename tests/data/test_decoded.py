"""Decode once: the decoded array equals the test transform's geometry, resumes, and refuses stale data."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from impulses.data.decoded import (
    DecodedSource,
    decode_image,
    decode_source,
    open_decoded,
)
from impulses.data.sources import ArraySource, ImageSource, Sample
from impulses.encoders.augment import normalize_images, test_transform, test_transform_config
from impulses.errors import ImpulsesError, ParameterError


def _colour_source(n: int = 12, seed: int = 0, side: tuple[int, int] = (40, 30)) -> ArraySource:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, side[1], side[0], 3), dtype=np.uint8)
    return ArraySource(f"test:{seed}", images, np.arange(n) % 3, id_prefix="test", class_names=None)


class _FailsAt(ImageSource):
    """``base``, except that reading row ``at`` raises (an interrupted decode)."""

    def __init__(self, base: ImageSource, at: int) -> None:
        self.base, self.at = base, at
        self.spec, self.class_names = base.spec, base.class_names

    def __len__(self) -> int:
        return len(self.base)

    def _get(self, index: int) -> Sample:
        if index == self.at:
            raise RuntimeError("interrupted")
        return self.base[index]

    def sample_id(self, index: int) -> str:
        return self.base.sample_id(index)

    @property
    def digest(self) -> str:
        return self.base.digest


def test_decoded_images_are_the_test_transform_before_normalisation(tmp_path: Path) -> None:
    source = _colour_source()
    decoded = decode_source(source, image_size=16, channels=3, path=tmp_path / "d", chunk_rows=5)
    assert decoded.images.shape == (12, 16, 16, 3) and decoded.images.dtype == np.uint8
    assert isinstance(decoded.images, np.memmap)
    np.testing.assert_array_equal(decoded.targets, np.arange(12) % 3)
    config = test_transform_config("cifar", image_size=16)
    transform = test_transform(config)
    images, targets = decoded.batch([3, 0, 7])
    assert targets.tolist() == [0, 0, 1]
    expected = torch.stack([transform(source[i][0]) for i in (3, 0, 7)])
    assert torch.equal(normalize_images(images, config["mean"], config["std"]), expected)
    # in memory: the same bytes
    in_memory = decode_source(source, image_size=16, channels=3)
    np.testing.assert_array_equal(in_memory.images, decoded.images)
    # grayscale: one channel, the same as PIL's conversion + resize
    gray = decode_source(source, image_size=8, channels=1)
    assert gray.images.shape == (12, 8, 8, 1)
    np.testing.assert_array_equal(
        gray.images[2, ..., 0], np.asarray(decode_image(source[2][0], image_size=8, channels=1))
    )


def test_interrupted_decode_resumes_and_stale_folders_are_refused(tmp_path: Path) -> None:
    source = _colour_source()
    path = tmp_path / "d"
    with pytest.raises(RuntimeError, match="interrupted"):
        decode_source(_FailsAt(source, 7), image_size=16, channels=3, path=path, chunk_rows=4)
    partial = tmp_path / "d.partial"
    assert not path.exists() and json.loads((partial / "meta.json").read_text())["rows_done"] == 4
    calls: list[tuple[int, int]] = []
    decoded = decode_source(
        source, image_size=16, channels=3, path=path, chunk_rows=4, on_chunk=lambda d, t: calls.append((d, t))
    )
    assert calls[0] == (4, 12) and calls[-1] == (12, 12)  # continued after the 4 committed rows
    assert not partial.exists()
    np.testing.assert_array_equal(decoded.images, decode_source(source, image_size=16, channels=3).images)
    # reused when current, refused when made from other data or at another size
    assert decode_source(source, image_size=16, channels=3, path=path).fingerprint == decoded.fingerprint
    with pytest.raises(ImpulsesError, match=r"d: decoded from other data or settings"):
        decode_source(_colour_source(seed=1), image_size=16, channels=3, path=path)
    with pytest.raises(ImpulsesError, match=r"decoded from other data or settings"):
        decode_source(source, image_size=8, channels=3, path=path)
    with pytest.raises(RuntimeError):
        decode_source(_FailsAt(source, 5), image_size=16, channels=3, path=tmp_path / "d3", chunk_rows=4)
    with pytest.raises(ImpulsesError, match=r"d3\.partial: an interrupted decode of other data"):
        decode_source(_colour_source(seed=2), image_size=16, channels=3, path=tmp_path / "d3")
    with pytest.raises(ImpulsesError, match="not a decoded image folder"):
        open_decoded(tmp_path)


def test_bad_arguments_name_the_parameter(tmp_path: Path) -> None:
    source = _colour_source()
    with pytest.raises(ParameterError, match=r"^image_size must be at least 1"):
        decode_source(source, image_size=0, channels=3)
    with pytest.raises(ParameterError, match=r"^in_chans must be 1"):
        decode_source(source, image_size=8, channels=2)
    no_digest = [(Image.new("RGB", (4, 4)), 0)]
    with pytest.raises(ParameterError, match=r"^path needs a source with a digest"):
        decode_source(no_digest, image_size=4, channels=3, path=tmp_path / "x")  # type: ignore[arg-type]


def test_decoded_source_serves_the_same_ids_and_pickles_without_its_array(tmp_path: Path) -> None:
    source = _colour_source()
    decoded = decode_source(source, image_size=16, channels=3, path=tmp_path / "d")
    served = DecodedSource(source, decoded)
    assert len(served) == 12 and served.spec == source.spec and served.digest == source.digest
    image, sample_id, target = served[5]
    assert sample_id == source.sample_id(5) and target == source[5][2]
    np.testing.assert_array_equal(np.asarray(image), decoded.images[5])
    config = test_transform_config("cifar", image_size=16)
    assert torch.equal(test_transform(config)(image), test_transform(config)(source[5][0]))
    state = pickle.loads(pickle.dumps(decoded))
    assert state._images is None  # reopened lazily from the folder
    np.testing.assert_array_equal(state.images, decoded.images)
