"""`impulses embed` and `impulses info STORE`: the command line, and a run killed mid-way then resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from impulses.embed.store import EmbeddingStore, partial_path

ARGS = ["--data", "digits[0:48]", "--encoder", "smallcnn", "--batch-size", "16", "--no-progress"]


def test_embed_then_up_to_date_then_refused(tmp_path: Path, cli) -> None:
    out = tmp_path / "d.h5"
    first = cli("embed", *ARGS, "--out", out, "--json")
    assert first.code == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["status"], summary["rows"], summary["dim"], summary["images_embedded"]) == (
        "written",
        48,
        256,
        48,
    )
    with EmbeddingStore.open(out) as store:
        assert store.meta["encoder"] == "smallcnn" and store.meta["encoder_spec"] == "smallcnn"
        assert store.meta["source"] == "digits[0:48]" and store.meta["transform"]["in_chans"] == 3
        assert store.ids.tolist() == [f"digits/all/{i}" for i in range(48)]

    again = cli("embed", *ARGS, "--out", out)
    assert again.code == 0 and "up to date" in again.stdout

    other = cli("embed", *ARGS, "--image-size", "16", "--out", out)
    assert other.code == 2
    assert (
        other.stderr.startswith("error: ") and "transform" in other.stderr and "--overwrite" in other.stderr
    )
    replaced = cli("embed", *ARGS, "--image-size", "16", "--out", out, "--overwrite", "--dtype", "float32")
    assert replaced.code == 0, replaced.stderr
    with EmbeddingStore.open(out) as store:
        assert store.meta["transform"]["image_size"] == 16 and store.dtype == "float32"


def test_info_shows_metadata_rows_and_class_balance(tmp_path: Path, cli) -> None:
    out = tmp_path / "d.h5"
    assert cli("embed", *ARGS, "--out", out).code == 0
    shown = cli("info", out, "--json")
    assert shown.code == 0
    info = json.loads(shown.stdout)
    from sklearn.datasets import load_digits

    expected = np.bincount(load_digits().target[:48], minlength=10)
    assert info["rows"] == 48 and info["dim"] == 256 and info["encoder"] == "smallcnn"
    assert info["class_balance"] == {str(c): int(n) for c, n in enumerate(expected) if n}
    assert cli("info", out).code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dtype", "float64"], "--dtype must be one of float16, float32"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--image-size", "0"], "--image-size must be a positive"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path: Path, cli, args: list[str], message: str) -> None:
    result = cli("embed", *ARGS, "--out", tmp_path / "d.h5", *args)
    assert result.code == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_unknown_data_and_encoder_are_errors(tmp_path: Path, cli) -> None:
    bad_data = cli("embed", "--data", "mnist", "--encoder", "smallcnn", "--out", tmp_path / "x.h5")
    assert bad_data.code == 2 and "'mnist' is not a known dataset spec" in bad_data.stderr
    missing = cli(
        "embed",
        "--data",
        "fashion-mnist",
        "--data-root",
        tmp_path,
        "--encoder",
        "smallcnn",
        "--out",
        tmp_path / "x.h5",
    )
    assert missing.code == 2 and "--data-root" in missing.stderr


def test_skip_bad_from_the_command_line(tmp_path: Path, cli, make_folder) -> None:
    root = make_folder({"a/x.png": "RGB", "a/y.png": "corrupt", "b/z.png": "RGB"})
    args = ["--data", f"imagefolder:{root}", "--encoder", "smallcnn", "--no-progress", "--workers", "0"]
    stopped = cli("embed", *args, "--out", tmp_path / "f.h5")
    assert (
        stopped.code == 2 and "y.png: cannot read image" in stopped.stderr and "--skip-bad" in stopped.stderr
    )
    skipped = cli("embed", *args, "--skip-bad", "--out", tmp_path / "f.h5")
    assert skipped.code == 0 and "1 unreadable image(s) skipped" in skipped.stdout
    info = json.loads(cli("info", tmp_path / "f.h5", "--json").stdout)
    assert info["rows"] == 2 and info["skipped"][0]["id"] == "a/y.png"
    assert info["class_balance"] == {"0 a": 1, "1 b": 1}


def test_fashion_mnist_through_the_command_line(tmp_path: Path, cli, fashion_root: Path) -> None:
    out = tmp_path / "fm.h5"
    args = ["--data", "fashion-mnist:test[0:20]", "--data-root", fashion_root, "--encoder", "smallcnn"]
    assert cli("embed", *args, "--out", out, "--no-progress").code == 0
    with EmbeddingStore.open(out) as store:
        assert store.ids[0] == "fashion-mnist/test/0" and store.class_names[9] == "Ankle boot"
        assert store.meta["source"] == "fashion-mnist:test[0:20]" and len(store.meta["source_digest"]) == 64


# -- kill and resume -------------------------------------------------------------------------------
SLOW = ["--data", "digits[0:480]", "--encoder", "smallcnn", "--image-size", "32", "--batch-size", "16"]


def _rows_done(partial: Path) -> int:
    """rows_done of a store being written by another process (0 while unreadable)."""
    try:
        with h5py.File(partial, "r", locking=False) as f:
            return int(f.attrs.get("rows_done", 0))
    except (OSError, KeyError, ValueError):
        return 0


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_rows(tmp_path: Path, cli) -> None:
    out = tmp_path / "k.h5"
    partial = partial_path(out)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "impulses", "embed", *SLOW, "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if _rows_done(partial) >= 64:  # four chunks committed: kill it now, mid-run
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    proc.stderr and proc.stderr.close()
    assert code == -signal.SIGKILL, f"the run was not killed mid-way (exit {code}): {stderr[-2000:]}"
    assert not out.exists() and partial.exists()
    kept = _rows_done(partial)
    assert 64 <= kept < 480

    resumed = cli("embed", *SLOW, "--out", out, "--no-progress", "--json")
    assert resumed.code == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert (
        summary["status"] == "resumed" and summary["images_embedded"] == 480 - kept
    )  # no finished chunk redone
    assert cli("embed", *SLOW, "--out", tmp_path / "ref.h5", "--no-progress").code == 0
    with EmbeddingStore.open(out) as got, EmbeddingStore.open(tmp_path / "ref.h5") as ref:
        assert len(got) == len(ref) == 480
        assert got.ids.tolist() == ref.ids.tolist()
        assert got.targets.tolist() == ref.targets.tolist()
        np.testing.assert_array_equal(got.read(dtype=np.float16), ref.read(dtype=np.float16))


# -- encoders: a weights file and an `impulses pretrain` checkpoint -----------------------------------
def _trained_smallcnn(seed: int):
    import torch

    from impulses.encoders import create_encoder

    torch.manual_seed(seed)
    model = create_encoder("smallcnn").eval()
    with torch.no_grad():  # move BatchNorm away from its initial identity, as training would
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _rows_of(model, spec: str, transform: dict) -> np.ndarray:
    import torch

    from impulses.data.sources import open_source
    from impulses.encoders.augment import test_transform

    source, fn = open_source(spec), test_transform(transform)
    with torch.no_grad():
        return model(torch.stack([fn(source[i].image) for i in range(len(source))])).numpy()


def test_weights_file_and_pretrain_checkpoint_are_accepted(tmp_path: Path, cli) -> None:
    import torch

    from impulses.encoders.augment import test_transform_config
    from impulses.encoders.checkpoint import save_checkpoint
    from impulses.files import file_sha256

    data = ["--data", "digits[0:24]", "--no-progress"]
    model = _trained_smallcnn(1)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    assert (
        cli(
            "embed",
            *data,
            "--encoder",
            "smallcnn",
            "--weights",
            tmp_path / "w.pt",
            "--out",
            tmp_path / "w.h5",
        ).code
        == 0
    )
    with EmbeddingStore.open(tmp_path / "w.h5") as store:
        assert store.meta["encoder_sha256"] == file_sha256(tmp_path / "w.pt")
        expected = _rows_of(model, "digits[0:24]", store.meta["transform"])
        np.testing.assert_allclose(store.read(), expected, rtol=2e-3, atol=2e-3)

    other = _trained_smallcnn(2)
    transform = test_transform_config("small-gray", in_chans=3)
    save_checkpoint(
        tmp_path / "run" / "last.pt",
        {
            "encoder": {"name": "smallcnn", "cifar_stem": False, "in_chans": 3, "num_features": 256},
            "preset": "small-gray",
            "transform": transform,
            "encoder_state": other.state_dict(),
            "epoch": 1,
            "config": {},
        },
    )
    result = cli("embed", *data, "--encoder", tmp_path / "run", "--out", tmp_path / "c.h5")
    assert result.code == 0, result.stderr
    with EmbeddingStore.open(tmp_path / "c.h5") as store:
        assert store.meta["encoder"] == "smallcnn" and store.meta["encoder_spec"] == str(tmp_path / "run")
        assert store.meta["encoder_sha256"] == file_sha256(tmp_path / "run" / "last.pt")
        np.testing.assert_allclose(
            store.read(), _rows_of(other, "digits[0:24]", transform), rtol=2e-3, atol=2e-3
        )
