"""Frozen-encoder extraction: rows match the model, runs are deterministic, resume, refusals, bad images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from impulses.data.sources import ImageSource, Sample, open_source
from impulses.embed.extract import ConfigTransform, embed, embed_dataset, fold_batchnorm
from impulses.embed.store import EmbeddingStore, StoreSpec, partial_path
from impulses.errors import ImpulsesError, ParameterError, StoreError

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
    with pytest.raises(
        StoreError,
        match=r"^overwrite is needed to replace .*s\.h5: it was made by a different run \(different encoder_sha256\)",
    ):
        embed(digits40, tiny_encoder, transform, out, spec=_spec(digits40, encoder_sha256="1" * 64))
    with pytest.raises(StoreError, match="holds dtype float16, this run asks for float32"):
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
    with pytest.raises(
        ImpulsesError,
        match=r"^skip_bad is off, so an unreadable image stops the run: .*broken\.png: cannot read image",
    ):
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
        (_Scaled(1e6), "^dtype float16 cannot hold embedding values up to .*; use float32"),
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


# -- embed_dataset: the whole `impulses embed` in one call ------------------------------------------
def test_embed_dataset_writes_the_sources_rows_and_is_up_to_date_on_rerun(tmp_path: Path) -> None:
    from impulses.encoders import load_encoder

    out = tmp_path / "digits.h5"
    result = embed_dataset("digits[0:300]", "smallcnn", out, batch_size=64, progress=False)
    assert result.is_main and (result.status, result.rows, result.processes) == ("written", 300, 1)
    summary = result.summary()
    assert (
        summary["store"] == str(out) and summary["dtype"] == "float16" and summary["images_embedded"] == 300
    )
    assert summary["dim"] == result.dim and summary["skipped"] == 0
    source = open_source("digits[0:300]")
    loaded = load_encoder("smallcnn")
    with EmbeddingStore.open(out) as store:
        assert store.ids.tolist() == [source.sample_id(i) for i in range(300)]
        assert store.targets.tolist() == [source[i].target for i in range(300)]
        assert store.meta["weights"] == "random" and store.meta["encoder_spec"] == "smallcnn"
        transform = ConfigTransform(loaded.transform)
        picks = [0, 151, 299]
        with torch.no_grad():
            direct = loaded.model(torch.stack([transform(source[i].image) for i in picks])).numpy()
        np.testing.assert_allclose(store.read(picks), direct, rtol=2e-3, atol=2e-3)
    again = embed_dataset("digits[0:300]", "smallcnn", out, batch_size=64, progress=False)
    assert (again.status, again.rows, again.images) == ("up-to-date", 300, 0)


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"dtype": "float64"}, "dtype"),
        ({"image_size": 0}, "image_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"workers": -1}, "workers"),
        ({"device": "tpu:x"}, "device"),
        ({"encoder": "resnet18x"}, "encoder"),
        ({"data": "mnist"}, "data"),
    ],
)
def test_embed_dataset_names_the_parameter_before_any_work(tmp_path: Path, options: dict, param: str) -> None:
    args = {"data": "digits[0:8]", "encoder": "smallcnn", "out": tmp_path / "x.h5", **options}
    with pytest.raises(ParameterError) as err:
        embed_dataset(progress=False, **args)
    assert err.value.params == (param,) and str(err.value).startswith(param + " ")
    assert "--" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("batch_size", [4, 1])  # differing sizes in one batch, or across batches
def test_mixed_image_sizes_need_an_image_size(tmp_path: Path, batch_size: int) -> None:
    from tests.conftest import write_image

    root = tmp_path / "images"
    for i, size in enumerate([(10, 12), (10, 12), (16, 9), (10, 12)]):
        write_image(root / f"{i}.png", i, size=size)
    with pytest.raises(
        ParameterError, match=r"^image_size is not set and the images differ in size \("
    ) as err:
        embed_dataset(
            f"imagefolder:{root}",
            "smallcnn",
            tmp_path / "m.h5",
            batch_size=batch_size,
            workers=0,
            progress=False,
        )
    assert "\n" not in str(err.value) and "2.png is 9x16" in str(err.value)
    result = embed_dataset(
        f"imagefolder:{root}", "smallcnn", tmp_path / "ok.h5", image_size=12, workers=0, progress=False
    )
    assert result.rows == 4


def test_a_timm_model_needs_pretrained_weights_or_random_init(tmp_path: Path) -> None:
    out = tmp_path / "vit.h5"
    vit = "vit_tiny_patch16_224"
    with pytest.raises(
        ParameterError, match=rf"^random_init and pretrained are both off: {vit} is a timm model"
    ):
        embed_dataset("digits[0:4]", vit, out, progress=False)
    assert not out.exists()
    # a ViT's patch grid fixes its input size: a size it rejects is one line naming image_size
    with pytest.raises(
        ParameterError, match=rf"^image_size gives 32x32 pixel inputs, which {vit} does not"
    ) as err:
        embed_dataset("digits[0:4]", vit, out, random_init=True, image_size=32, progress=False)
    assert "\n" not in str(err.value)
    assert not out.exists()
    result = embed_dataset("digits[0:4]", vit, out, random_init=True, progress=False)
    assert (result.rows, result.dim) == (4, 192)
    with EmbeddingStore.open(out) as store:
        assert store.meta["weights"] == "random" and store.meta["transform"]["image_size"] == 224
