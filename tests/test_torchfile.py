"""Files written without torch read back with torch.load(weights_only=True) as torch.save's do."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from impulses import torchfile


def payload() -> dict:
    W = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    return {
        "format": "x",
        "W": W,
        "b": np.array([0.5, -1.0, 2.25], dtype=np.float32),
        "transposed": W.T,  # not contiguous: written as its values
        "same": W,  # one storage, one tensor, as torch.save shares them
        "empty": np.zeros((0, 5), dtype=np.float32),
        "ints": np.array([1, 2, 3], dtype=np.int64),
        "half": np.array([0.5, 1e-5], dtype=np.float16),
        "flags": np.array([True, False]),
        "heads": [{"loss": "imbnnpu", "prior": 0.1, "seed": None, "tags": ("a", "b")}],
        "numpy_scalars": [np.float64(3.5), np.int64(4), np.bool_(True)],
        "nested": {"deep": {"x": [1, 2.5, "three", None, False]}},
    }


def test_files_load_with_torch_weights_only_and_equal_torch_saves(tmp_path) -> None:
    ours = tmp_path / "ours.pt"
    torchfile.dump(payload(), ours)
    back = torch.load(ours, weights_only=True)
    expected = payload()
    for key in ("W", "b", "transposed", "same", "empty", "ints", "half", "flags"):
        assert isinstance(back[key], torch.Tensor), key
        assert back[key].dtype == torch.from_numpy(np.ascontiguousarray(expected[key])).dtype, key
        assert np.array_equal(back[key].numpy(), expected[key]), key
    assert back["same"] is back["W"]
    assert back["heads"] == expected["heads"] and back["nested"] == expected["nested"]
    assert back["numpy_scalars"] == [3.5, 4, True] and type(back["numpy_scalars"][1]) is int
    # the same values as a file torch.save wrote
    theirs = tmp_path / "theirs.pt"
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in expected.items() if isinstance(v, np.ndarray)
    }
    torch.save({**expected, **tensors, "numpy_scalars": [3.5, 4, True]}, theirs)
    reference = torch.load(theirs, weights_only=True)
    assert reference.keys() == back.keys()
    for key, value in reference.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, back[key]), key
        else:
            assert value == back[key], key


def test_storages_are_aligned_so_torch_can_map_them(tmp_path) -> None:
    path = tmp_path / "heads.pt"
    torchfile.dump(payload(), path)
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if "/data/" in info.filename:
                raw.seek(info.header_offset + 26)
                name_len, extra_len = np.frombuffer(raw.read(4), dtype="<u2")
                assert (info.header_offset + 30 + name_len + extra_len) % torchfile.ALIGNMENT == 0
    mapped = torch.load(path, weights_only=True, mmap=True)
    assert np.array_equal(mapped["W"].numpy(), payload()["W"])


def test_the_same_payload_gives_the_same_bytes(tmp_path) -> None:
    torchfile.dump(payload(), tmp_path / "a.pt")
    torchfile.dump(payload(), tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


@pytest.mark.parametrize("value", [{1, 2}, 1 + 2j, np.zeros(2, dtype=np.complex64), object()])
def test_values_it_does_not_write_raise_type_error(tmp_path, value) -> None:
    with pytest.raises(TypeError):
        torchfile.dump({"x": value}, tmp_path / "x.pt")
