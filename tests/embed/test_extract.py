"""Frozen-encoder extraction: rows match the model, runs are deterministic, resume, refusals, bad images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from impulses.data.sources import ImageSource, Sample, open_source
from impulses.embed.extract import ConfigTransform, embed, fold_batchnorm
from impulses.embed.store import EmbeddingStore, StoreSpec, partial_path
from impulses.errors import ImpulsesError, StoreError

from .conftest import TRANSFORM, TinyEncoder


def _spec(source: ImageSource, **changes: object) -> StoreSpec:
    fields = {"encoder": "tiny", "source": source.spec, "encoder_sha256": "0" * 64, "transform": TRANSFORM}
    fields.update(changes)
    return StoreSpec(**fields)  # type: ignore[arg-type]


def _expected(source: ImageSource, model: nn.Module) -> np.ndarray:
    """The model applied directly (unfused, float32, one batch) to the transformed images."""
    transform = ConfigTransform(TRANSFORM)
    batch = torch.stack([transform(source[i].image) for i in range(len(source))])
    with torch.no_grad():
        return model(batch).numpy()


@pytest.fixture(scope="module")
def digits40() -> ImageSource:
    return open_source("digits[0:40]")


def test_rows_ids_targets_match_the_model(tmp_path: Path, digits40, tiny_encoder, transform) -> None:
    result = embed(digits40, tiny_encoder, transform, tmp_path / "s.h5", spec=_spec(digits40), batch_size=16)
    assert (result.status, result.rows, result.dim, result.images) == ("written", 40, 6, 40)
    expected = _expected(digits40, TinyEncoder())  # grayscale digits went to the RGB encoder as 3 channels
    with EmbeddingStore.open(tmp_path / "s.h5") as store:
        assert store.ids.tolist() == [f"digits/all/{i}" for i in range(40)]
        assert store.targets.tolist() == [digits40[i].target for i in range(40)]
        assert store.class_names == [str(d) for d in range(10)]
        assert store.dtype == "float16"
        np.testing.assert_allclose(store.read(), expected, rtol=2e-3, atol=2e-3)
        assert store.meta["source"] == "digits[0:40]" and store.meta["transform"] == TRANSFORM


def test_float32_store_is_closer(tmp_path: Path, digits40, tiny_encoder, transform) -> None:
    embed(digits40, tiny_encoder, transform, tmp_path / "s.h5", spec=_spec(digits40), dtype="float32")
    with EmbeddingStore.open(tmp_path / "s.h5") as store:
        assert store.dtype == "float32"
        np.testing.assert_allclose(store.read(), _expected(digits40, TinyEncoder()), rtol=1e-5, atol=1e-5)


def test_identical_rows_across_runs_and_worker_counts(tmp_path: Path, digits40, transform) -> None:
    stores = []
    for name, workers in (("a", 0), ("b", 0), ("c", 2)):
        embed(
            digits40,
            TinyEncoder(),
            transform,
            tmp_path / f"{name}.h5",
            spec=_spec(digits40),
            batch_size=8,
            workers=workers,
        )
        stores.append(EmbeddingStore.open(tmp_path / f"{name}.h5"))
    first = stores[0]
    for other in stores[1:]:
        assert other.ids.tolist() == first.ids.tolist()
        np.testing.assert_array_equal(other.read(dtype=np.float16), first.read(dtype=np.float16))
        other.close()
    first.close()


class _Interrupted(ImageSource):
    """A source that raises KeyboardInterrupt on item ``at`` (a Ctrl-C in the middle of a run)."""

    def __init__(self, base: ImageSource, at: int) -> None:
        self.base, self.at = base, at
        self.spec, self.class_names = base.spec, base.class_names

    def __len__(self) -> int:
        return len(self.base)

    def _get(self, index: int) -> Sample:
        if index == self.at:
            raise KeyboardInterrupt
        return self.base[index]

    def sample_id(self, index: int) -> str:
        return self.base.sample_id(index)


def test_interrupted_run_resumes_to_identical_rows(tmp_path: Path, digits40, transform) -> None:
    spec = _spec(digits40)
    embed(digits40, TinyEncoder(), transform, tmp_path / "ref.h5", spec=spec, batch_size=8)
    out = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        embed(_Interrupted(digits40, 21), TinyEncoder(), transform, out, spec=spec, batch_size=8)
    assert not out.exists() and partial_path(out).exists()
    result = embed(digits40, TinyEncoder(), transform, out, spec=spec, batch_size=8)
    assert result.status == "resumed" and result.images == 40 - 16  # two finished chunks of 8 kept
    with EmbeddingStore.open(out) as got, EmbeddingStore.open(tmp_path / "ref.h5") as ref:
        assert got.ids.tolist() == ref.ids.tolist()
        assert got.targets.tolist() == ref.targets.tolist()
        np.testing.assert_array_equal(got.read(dtype=np.float16), ref.read(dtype=np.float16))


def test_complete_store_is_up_to_date_or_refused(tmp_path: Path, digits40, tiny_encoder, transform) -> None:
    out = tmp_path / "s.h5"
    embed(digits40, tiny_encoder, transform, out, spec=_spec(digits40))
    stamp = os.stat(out).st_mtime_ns
    again = embed(digits40, tiny_encoder, transform, out, spec=_spec(digits40))
    assert again.status == "up-to-date" and again.rows == 40 and os.stat(out).st_mtime_ns == stamp
    with pytest.raises(StoreError, match=r"different run \(different encoder_sha256\).*--overwrite"):
        embed(digits40, tiny_encoder, transform, out, spec=_spec(digits40, encoder_sha256="1" * 64))
    with pytest.raises(StoreError, match="dtype float16, not float32"):
        embed(digits40, tiny_encoder, transform, out, spec=_spec(digits40), dtype="float32")
    replaced = embed(
        digits40, tiny_encoder, transform, out, spec=_spec(digits40, encoder_sha256="1" * 64), overwrite=True
    )
    assert replaced.status == "written"
    with EmbeddingStore.open(out) as store:
        assert store.meta["encoder_sha256"] == "1" * 64


def test_partial_of_another_run_is_refused(tmp_path: Path, digits40, transform) -> None:
    out = tmp_path / "s.h5"
    with pytest.raises(KeyboardInterrupt):
        embed(_Interrupted(digits40, 10), TinyEncoder(), transform, out, spec=_spec(digits40), batch_size=8)
    other = _spec(digits40, transform={**TRANSFORM, "image_size": 12})
    with pytest.raises(StoreError, match=r"\.partial was started by a different run"):
        embed(digits40, TinyEncoder(), transform, out, spec=other, batch_size=8)
    assert embed(digits40, TinyEncoder(), transform, out, spec=other, overwrite=True).status == "written"


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_stops_the_run_naming_it(tmp_path: Path, make_folder, transform, workers: int) -> None:
    root = make_folder({"cat/a.png": "RGB", "cat/broken.png": "corrupt", "dog/c.png": "L"})
    source = open_source(f"imagefolder:{root}")
    with pytest.raises(ImpulsesError, match=r"broken\.png: cannot read image.*--skip-bad"):
        embed(source, TinyEncoder(), transform, tmp_path / "s.h5", spec=_spec(source), workers=workers)


def test_skip_bad_lists_skipped_images(tmp_path: Path, make_folder, transform) -> None:
    root = make_folder(
        {"cat/a.png": "RGB", "cat/broken.png": "corrupt", "dog/c.png": "L", "dog/d.jpg": "RGB"}
    )
    source = open_source(f"imagefolder:{root}")
    result = embed(
        source, TinyEncoder(), transform, tmp_path / "s.h5", spec=_spec(source), skip_bad=True, batch_size=2
    )
    assert result.rows == 3 and [s["id"] for s in result.skipped] == ["cat/broken.png"]
    with EmbeddingStore.open(tmp_path / "s.h5") as store:
        assert store.ids.tolist() == ["cat/a.png", "dog/c.png", "dog/d.jpg"]
        assert store.targets.tolist() == [0, 1, 1] and store.class_names == ["cat", "dog"]
        assert store.meta["items_done"] == 4 and "broken.png" in store.skipped[0]["error"]
        transform_ = ConfigTransform(TRANSFORM)
        good = [source[i].image for i in (0, 2, 3)]
        with torch.no_grad():
            expected = TinyEncoder()(torch.stack([transform_(im) for im in good])).numpy()
        np.testing.assert_allclose(store.read(), expected, rtol=2e-3, atol=2e-3)


class _Scaled(nn.Module):
    def __init__(self, scale: float, shape: tuple[int, ...] = (6,)) -> None:
        super().__init__()
        self.scale, self.shape = scale, shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3)).reshape(-1, *[1] * len(self.shape))
        return mean * torch.ones(self.shape) * self.scale + self.scale


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_Scaled(1e6), "exceed float16's range.*--dtype float32"),
        (_Scaled(float("nan")), r"NaN or Inf for 16 image.*digits/all/0"),
        (_Scaled(1.0, shape=(2, 3)), r"returned shape \(1, 2, 3\) for a batch of 1.*\(batch, features\)"),
    ],
)
def test_unstorable_outputs_are_refused(tmp_path: Path, digits40, transform, model, message: str) -> None:
    with pytest.raises(ImpulsesError, match=message):
        embed(digits40, model, transform, tmp_path / "s.h5", spec=_spec(digits40), batch_size=16)


def test_fold_batchnorm_keeps_outputs(digits40) -> None:
    model = TinyEncoder()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_rows_close_to_cpu(tmp_path: Path, digits40, transform) -> None:
    spec = _spec(digits40)
    embed(digits40, TinyEncoder(), transform, tmp_path / "cpu.h5", spec=spec, device="cpu")
    embed(digits40, TinyEncoder(), transform, tmp_path / "gpu.h5", spec=spec, device="cuda", workers=2)
    with EmbeddingStore.open(tmp_path / "cpu.h5") as cpu, EmbeddingStore.open(tmp_path / "gpu.h5") as gpu:
        assert gpu.ids.tolist() == cpu.ids.tolist()
        np.testing.assert_allclose(gpu.read(), cpu.read(), rtol=3e-2, atol=3e-2)  # bf16 autocast


def test_cpu_slices_of_a_large_batch_match_one_forward(tmp_path: Path, transform) -> None:
    from impulses.embed.extract import CPU_MICRO_BATCH

    source = open_source("digits[0:150]")
    assert 2 * CPU_MICRO_BATCH < 150  # one batch of 150 runs as several slices
    embed(source, TinyEncoder(), transform, tmp_path / "s.h5", spec=_spec(source), batch_size=150)
    with EmbeddingStore.open(tmp_path / "s.h5") as store:
        assert len(store) == 150
        np.testing.assert_allclose(store.read(), _expected(source, TinyEncoder()), rtol=2e-3, atol=2e-3)
