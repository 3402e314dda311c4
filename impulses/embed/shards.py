"""Scale-out for ``impulses embed``: under torchrun each rank embeds one contiguous block of rows.

``torchrun --nproc_per_node W -m impulses embed ... --out NAME.h5`` runs W copies of the command.
Rank r embeds a block of whole batches into its own shard store ``NAME.rank{r}-of-{W}.h5`` (itself
resumable, like any store), all ranks meet at a barrier, and rank 0 writes ``NAME.h5``, whose
datasets are HDF5 virtual datasets over the shards (:func:`impulses.embed.store.join_shards`).
Blocks are cut at the batch boundaries of a single-process run, so every image is embedded in the
same batch as there, and the joined store reads exactly as the single-process one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from impulses.data.sources import ImageSource
from impulses.embed.extract import EmbedResult, check_existing, embed
from impulses.embed.store import StoreError, StoreSpec, join_shards, partial_path
from impulses.runtime import DistInfo

BARRIER_TIMEOUT = timedelta(hours=48)  # ranks wait for the slowest one; torchrun stops them all if one fails


def shard_path(out: str | os.PathLike[str], rank: int, world_size: int) -> Path:
    """``runs/x.h5`` -> ``runs/x.rank0-of-2.h5``: rank ``rank``'s shard store, next to the joined one."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rank{rank}-of-{world_size}{out.suffix}")


def rank_items(n_items: int, batch_size: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous block of ``range(n_items)``: a share of whole batches of ``batch_size``."""
    n_batches = -(-n_items // batch_size)
    first, last = rank * n_batches // world_size, (rank + 1) * n_batches // world_size
    return range(min(n_items, first * batch_size), min(n_items, last * batch_size))


def check_shard_items(path: Path, block: range) -> None:
    """Refuse a shard store (finished or ``.partial``) that holds another block of items than ``block``.

    The same shard name can hold another block after a rerun with another ``batch_size`` (the blocks
    are cut at batch boundaries); resuming or joining it would mix rows of the two layouts.
    """
    import h5py

    for candidate in (path, partial_path(path)):
        if not candidate.exists():
            continue
        try:
            with h5py.File(candidate, "r") as f:
                held = [int(v) for v in f.attrs.get("shard_items", [])]
        except OSError as err:
            raise StoreError(
                f"is needed to replace {candidate}: not a readable shard store ({err})", param="overwrite"
            ) from None
        if held != [block.start, block.stop]:
            raise StoreError(
                f"is needed to recompute the shards: {candidate} holds items {held[0] if held else '?'}:"
                f"{held[1] if held else '?'} but this run's shard is {block.start}:{block.stop} "
                "(another batch_size or process count?)",
                param="overwrite",
            )


def embed_sharded(
    source: ImageSource,
    model: nn.Module,
    transform: Callable[[Image.Image], torch.Tensor],
    out: str | os.PathLike[str],
    *,
    spec: StoreSpec,
    ranks: DistInfo,
    batch_size: int = 256,
    dtype: str = "float16",
    overwrite: bool = False,
    **kwargs: Any,
) -> EmbedResult:
    """This rank's part of a torchrun job: its shard, the barrier, and (rank 0) the joined store.

    Every rank returns its shard's result; rank 0 returns the joined store's, with the images embedded
    by all ranks and the slowest rank's seconds (the status is rank 0's shard's).
    A joined store already complete for this run is ``up-to-date`` on every rank, with no work done.
    """
    import torch.distributed as dist

    out = Path(out)
    if out.exists() and not overwrite:  # every rank sees the same file: all skip, none waits
        store = check_existing(out, spec, dtype)
        with store:
            return EmbedResult(out, "up-to-date", len(store), store.dim, skipped=store.skipped)
    blocks = [rank_items(len(source), batch_size, r, ranks.world_size) for r in range(ranks.world_size)]
    shards = [shard_path(out, r, ranks.world_size) for r in range(ranks.world_size)]
    mine = blocks[ranks.rank]
    extra = dict(kwargs.pop("extra_attrs", None) or {})
    kwargs["progress"] = kwargs.get("progress", True) and ranks.rank == 0  # one bar, not W interleaved
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    try:
        result = None
        if len(mine):
            if not overwrite:
                check_shard_items(shards[ranks.rank], mine)
            result = embed(
                source,
                model,
                transform,
                shards[ranks.rank],
                spec=spec,
                items=mine,
                batch_size=batch_size,
                dtype=dtype,
                overwrite=overwrite,
                description=f"embed rank {ranks.rank}/{ranks.world_size}",
                extra_attrs={
                    **extra,
                    "shard_rank": ranks.rank,
                    "shard_world_size": ranks.world_size,
                    "shard_items": [mine.start, mine.stop],
                },
                **kwargs,
            )
        # The barrier: every rank's shard is finished once these sums (images) and maxima (seconds) arrive.
        images = torch.tensor([result.images if result else 0], dtype=torch.float64)
        seconds = torch.tensor([result.seconds if result else 0.0], dtype=torch.float64)
        dist.all_reduce(images, op=dist.ReduceOp.SUM)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        if ranks.rank == 0:
            used = [s for s, b in zip(shards, blocks, strict=True) if len(b)]
            for shard, block in zip(shards, blocks, strict=True):
                if len(block):
                    check_shard_items(shard, block)
            store = join_shards(out, used, overwrite=True)
            with store:
                status = result.status if result else "written"
                return EmbedResult(
                    out,
                    status,
                    len(store),
                    store.dim,
                    int(images.item()),
                    float(seconds.item()),
                    store.skipped,
                )
        if result is None:
            return EmbedResult(shards[ranks.rank], "empty", 0, 0)
        return result
    finally:
        if owns_group:
            dist.destroy_process_group()
