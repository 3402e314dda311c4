"""Scale-out: rank blocks, shard names, and two gloo processes under torchrun giving single-process rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from impulses.embed.shards import check_shard_items, rank_items, shard_path
from impulses.embed.store import EmbeddingStore
from impulses.errors import StoreError


@pytest.mark.parametrize(("n", "batch", "world"), [(200, 32, 2), (10, 3, 4), (5, 8, 3), (1000, 1, 7)])
def test_rank_blocks_tile_the_rows_at_batch_boundaries(n: int, batch: int, world: int) -> None:
    blocks = [rank_items(n, batch, r, world) for r in range(world)]
    assert [i for b in blocks for i in b] == list(range(n))  # contiguous, in rank order, no overlap
    for block in blocks:
        assert block.start % batch == 0 or block.start == n
    n_batches = -(-n // batch)
    sizes = [-(-len(b) // batch) for b in blocks]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n_batches


def test_shard_path_sits_next_to_the_store() -> None:
    assert shard_path("runs/x.h5", 1, 4) == Path("runs/x.rank1-of-4.h5")


def test_a_shard_of_another_block_is_refused(tmp_path: Path) -> None:
    from impulses.embed.store import StoreSpec, StoreWriter

    path = tmp_path / "x.rank0-of-2.h5"
    check_shard_items(path, range(0, 96))  # nothing there yet: fine
    writer = StoreWriter.create(
        path, spec=StoreSpec("e", "s"), dim=2, capacity=96, extra_attrs={"shard_items": [0, 96]}
    )
    writer.close()  # a .partial of block 0:96
    check_shard_items(path, range(0, 96))
    with pytest.raises(
        StoreError, match=r"^overwrite is needed .*holds items 0:96 but this run's shard is 0:128"
    ):
        check_shard_items(path, range(0, 128))


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
EMBED_ARGS = ["--data", "digits[0:200]", "--encoder", "smallcnn", "--batch-size", "32", "--no-progress"]


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_rows(tmp_path: Path, cli) -> None:
    out = tmp_path / "dist.h5"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    run = subprocess.run(
        [*TORCHRUN, "-m", "impulses", "embed", *EMBED_ARGS, "--out", str(out), "--json"],
        capture_output=True,
        text=True,
        env={**env, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout[run.stdout.index("{") :])
    assert summary["processes"] == 2 and summary["rows"] == 200
    shards = [shard_path(out, r, 2) for r in range(2)]
    assert all(s.exists() for s in shards)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers ran: the same kernels, so the same bits
    try:
        assert cli("embed", *EMBED_ARGS, "--out", tmp_path / "single.h5").code == 0
    finally:
        torch.set_num_threads(threads)
    with EmbeddingStore.open(out) as dist, EmbeddingStore.open(tmp_path / "single.h5") as single:
        assert dist.embeddings.is_virtual
        assert [s["rows"] for s in dist.meta["shards"]] == [96, 104]  # 3 and 4 batches of 32
        assert dist.ids.tolist() == single.ids.tolist()
        assert dist.targets.tolist() == single.targets.tolist()
        assert dist.class_names == single.class_names
        assert dist.fingerprint == single.fingerprint
        np.testing.assert_array_equal(dist.read(dtype=np.float16), single.read(dtype=np.float16))

    # rerunning the single-process command on the joined store: the same run, up to date
    again = cli("embed", *EMBED_ARGS, "--out", out)
    assert again.code == 0 and "up to date" in again.stdout

    # a missing shard is an error everywhere, never fill values
    shards[1].rename(tmp_path / "moved.h5")
    with pytest.raises(StoreError, match=r"rank1-of-2\.h5 is missing"):
        EmbeddingStore.open(out)
    info = cli("info", out)
    assert info.code == 2 and "rank1-of-2.h5 is missing" in info.stderr
    rerun = cli("embed", *EMBED_ARGS, "--out", out)
    assert rerun.code == 2 and "is missing" in rerun.stderr and "--overwrite" in rerun.stderr
