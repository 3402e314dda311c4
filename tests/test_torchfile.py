"""Files written without torch read back with torch.load(weights_only=True) as torch.save's do."""

from __future__ import annotations

import pickle
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


def test_load_reads_back_what_dump_wrote(tmp_path) -> None:
    path = tmp_path / "ours.pt"
    torchfile.dump(payload(), path)
    back, expected = torchfile.load(path), payload()
    for key in ("W", "b", "transposed", "same", "empty", "ints", "half", "flags"):
        assert isinstance(back[key], np.ndarray) and back[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(back[key], expected[key])
    assert back["transposed"].shape == (3, 4) and back["heads"] == expected["heads"]
    assert back["numpy_scalars"] == [3.5, 4, True] and back["nested"] == expected["nested"]


def test_load_reads_torch_saves_files(tmp_path) -> None:
    W = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    torch.save(
        {"W": W, "Wt": W.t(), "row": W[1], "b": torch.zeros(4, dtype=torch.float64), "n": [1, "x"]},
        tmp_path / "t.pt",
    )
    back = torchfile.load(tmp_path / "t.pt")
    np.testing.assert_array_equal(back["W"], W.numpy())
    np.testing.assert_array_equal(back["Wt"], W.t().numpy())  # a strided view of a shared storage
    np.testing.assert_array_equal(back["row"], W[1].numpy())  # a storage offset
    assert back["b"].dtype == np.float64 and back["n"] == [1, "x"]


def test_load_refuses_names_beyond_tensors_and_never_calls_them(tmp_path) -> None:
    marker = tmp_path / "marker"
    marker.write_text("still here")

    class Evil:
        def __reduce__(self):
            import os

            return (os.remove, (str(marker),))

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"W": Evil()}, protocol=2))
    with pytest.raises(torchfile.NotReadable, match="remove"):
        torchfile.load(evil)
    assert marker.exists()
    # a torch.nn.Parameter is a name torch.load knows and this reader does not: torch reads it
    torch.save({"p": torch.nn.Parameter(torch.ones(2))}, tmp_path / "param.pt")
    with pytest.raises(torchfile.NotReadable):
        torchfile.load(tmp_path / "param.pt")
    (tmp_path / "text.pt").write_text("not a zip")
    with pytest.raises(torchfile.NotReadable):
        torchfile.load(tmp_path / "text.pt")


def test_load_refuses_a_tensor_outside_its_storage(tmp_path) -> None:
    path = tmp_path / "short.pt"
    torchfile.dump({"W": np.zeros((4, 4), dtype=np.float32)}, path)
    with zipfile.ZipFile(path) as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    records["archive/data/0"] = records["archive/data/0"][:16]  # 4 values where 16 belong
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in records.items():
            archive.writestr(name, content)
    with pytest.raises(torchfile.NotReadable, match="bytes"):
        torchfile.load(path)


def test_load_refuses_a_shape_larger_than_its_storage(tmp_path) -> None:
    path = tmp_path / "tall.pt"
    torchfile.dump({"W": np.zeros((4, 4), dtype=np.float32)}, path)
    with zipfile.ZipFile(path) as archive:
        records = {name: archive.read(name) for name in archive.namelist()}
    shape = b"K\x04K\x04\x86"  # the pickled (4, 4)
    assert records["archive/data.pkl"].count(shape) == 1
    records["archive/data.pkl"] = records["archive/data.pkl"].replace(shape, b"K\x08K\x04\x86")
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in records.items():
            archive.writestr(name, content)
    with pytest.raises(torchfile.NotReadable, match="outside"):
        torchfile.load(path)
