"""`impulses info` on stores: finished (metadata, rows, class balance, shards) and unfinished ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from impulses.embed.store import EmbeddingStore, StoreSpec, StoreWriter, join_shards
from impulses.errors import ImpulsesError, StoreError
from impulses.info import class_balance, describe_store

SPEC = StoreSpec(encoder="enc", source="src", encoder_sha256="abc", transform={"image_size": 8})


def test_class_balance_counts_by_name_and_unknown() -> None:
    targets = np.array([1, 0, 1, -1, 2, 1])
    assert class_balance(targets, ["cat", "dog", "emu"]) == {"unknown": 1, "0 cat": 1, "1 dog": 3, "2 emu": 1}
    assert class_balance(targets, None) == {"unknown": 1, "0": 1, "1": 3, "2": 1}
    assert class_balance(targets, ["0", "1", "2"]) == {"unknown": 1, "0": 1, "1": 3, "2": 1}  # no "1 1"


def test_describe_finished_store(tmp_path: Path) -> None:
    x = np.ones((4, 3), dtype=np.float32)
    EmbeddingStore.write(
        tmp_path / "s.h5", x, ["a", "b", "c", "d"], targets=[0, 1, 1, -1], class_names=["n", "p"], spec=SPEC
    ).close()
    info = describe_store(tmp_path / "s.h5", check=True)
    assert (info["rows"], info["dim"], info["dtype"]) == (4, 3, "float16")
    assert info["encoder"] == "enc" and info["source"] == "src" and info["transform"] == {"image_size": 8}
    assert info["fingerprint"] == SPEC.fingerprint
    assert info["class_balance"] == {"unknown": 1, "0 n": 1, "1 p": 2}
    assert info["finite"].startswith("yes")


def test_describe_joined_store_lists_shards(tmp_path: Path) -> None:
    paths = []
    for r in range(2):
        writer = StoreWriter.create(tmp_path / f"s.rank{r}-of-2.h5", spec=SPEC, dim=3, capacity=2)
        writer.append(np.zeros((2, 3)), [f"{r}a", f"{r}b"], [r, r])
        writer.finalize().close()
        paths.append(tmp_path / f"s.rank{r}-of-2.h5")
    join_shards(tmp_path / "s.h5", paths).close()
    info = describe_store(tmp_path / "s.h5")
    assert info["rows"] == 4 and info["shards"] == ["s.rank0-of-2.h5 (2 rows)", "s.rank1-of-2.h5 (2 rows)"]
    paths[0].unlink()
    with pytest.raises(StoreError, match="missing"):
        describe_store(tmp_path / "s.h5")


def test_describe_unfinished_store_shows_progress(tmp_path: Path) -> None:
    writer = StoreWriter.create(tmp_path / "s.h5", spec=SPEC, dim=3, capacity=10)
    writer.append(np.zeros((3, 3)), ["a", "b", "c"], [0, 0, 0], items=4)
    writer.close()
    info = describe_store(tmp_path / "s.h5")
    assert info["kind"].startswith("unfinished")
    assert (info["rows_done"], info["items_done"], info["capacity"]) == (3, 4, 10)
    assert info["fingerprint"] == SPEC.fingerprint and info["source"] == "src"
    with pytest.raises(ImpulsesError, match="no such file"):
        describe_store(tmp_path / "missing.h5")


def test_info_check_reports_duplicate_ids_and_nonfinite_rows(tmp_path: Path, cli) -> None:
    import h5py

    path = tmp_path / "s.h5"
    EmbeddingStore.write(path, np.ones((4, 3), dtype=np.float32), ["a", "b", "c", "d"]).close()
    with h5py.File(path, "r+") as f:
        f["embeddings"][2, 0] = np.inf
    result = cli("info", path, "--check")
    assert result.code == 2 and "s.h5" in result.stderr and "'c'" in result.stderr
    with h5py.File(path, "r+") as f:
        f["ids"][3] = "a"
    result = cli("info", path, "--check")
    assert result.code == 2 and "duplicate ids 'a'" in result.stderr
