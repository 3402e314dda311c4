"""DistInfo from torchrun's variables; resolve_device's errors name the device parameter."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from impulses.errors import ImpulsesError, ParameterError
from impulses.runtime import DistInfo, resolve_device


def test_dist_info_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    alone = DistInfo.from_env()
    assert alone == DistInfo(0, 1, 0) and not alone.distributed and alone.is_main
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = DistInfo.from_env()
    assert info == DistInfo(3, 4, 1) and info.distributed and not info.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ImpulsesError, match="RANK=4"):
        DistInfo.from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ImpulsesError, match="must be integers"):
        DistInfo.from_env()


def test_resolve_device_names_the_parameter() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ParameterError, match=r"^device 'tpu:x' is not a device") as err:
        resolve_device("tpu:x")
    assert err.value.params == ("device",)


def test_numba_cache_dir_falls_back_to_a_private_temp_folder(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from impulses.runtime import numba_cache_dir

    blocker = tmp_path / "a-file"  # nothing can be created below a file, not even by root
    blocker.write_text("")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(blocker))
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert numba_cache_dir(tmp_path / "pkg") is None  # the package folder is writable: numba's own
    chosen = numba_cache_dir(blocker / "pkg")
    assert chosen is not None and Path(chosen).parent == tmp_path / "tmp" and Path(chosen).is_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert numba_cache_dir(blocker / "pkg") is None  # the user cache works: numba's own
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "tmp"))
    assert numba_cache_dir(blocker / "pkg") == ""  # nothing writable: compile without a cache
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert numba_cache_dir(blocker / "pkg") is None  # the user's own choice stands


@pytest.mark.slow
@pytest.mark.parametrize("temp_writable", [True, False])
def test_the_fused_kernel_runs_when_package_and_home_are_unwritable(tmp_path, temp_writable: bool) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    (tmp_path / "tmp").mkdir()
    blocked = [str(Path(__file__).parents[1] / "impulses" / "pu")]
    if not temp_writable:
        blocked.append(str(tmp_path / "tmp"))
    script = f"""
import numpy as np
import impulses.runtime as runtime

writable = runtime._writable
# root can write anywhere: stand in for a read-only install by refusing these folders
runtime._writable = lambda folder: not str(folder).startswith(tuple({blocked!r})) and writable(folder)
from impulses.pu import kernels
from impulses.pu.heads import HeadSpec, train_heads

rng = np.random.default_rng(0)
X = rng.normal(size=(64, 8)).astype(np.float32)
s = (rng.random(64) < 0.3).astype(np.int8)
result = train_heads(X, s, [HeadSpec(prior=0.4)], epochs=2, batch_size=16, kernel="fused")
from pathlib import Path
cached = bool(kernels._CACHE_DIR) and any(Path(kernels._CACHE_DIR).rglob("*.nbi"))
print("cache", repr(kernels._CACHE_DIR), cached, np.isfinite(result.W).all())
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(HOME=str(blocker), XDG_CACHE_HOME=str(blocker / "cache"))
    env["TMPDIR"] = str(tmp_path / "tmp")
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    expected = repr(str(tmp_path / "tmp" / f"impulses-numba-{os.getuid()}")) if temp_writable else "''"
    assert run.stdout.strip().splitlines()[-1] == f"cache {expected} {temp_writable} True"


def test_light_device_names_the_cpu_without_torch_where_that_is_all_it_can_be(monkeypatch) -> None:
    import sys

    import torch

    from impulses import runtime

    assert str(runtime.light_device("cpu")) == "cpu" and runtime.light_device("cpu").type == "cpu"
    assert runtime.as_torch_device(runtime.light_device("cpu")) == torch.device("cpu")
    # "auto" without a CUDA driver, torch not yet imported: the CPU, without importing torch
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(runtime, "_no_cuda_driver", lambda: True)
    assert isinstance(runtime.light_device("auto"), runtime.CpuDevice)
    assert "torch" not in sys.modules
    # with a driver present, torch decides (resolve_device)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setattr(runtime, "_no_cuda_driver", lambda: False)
    device = runtime.light_device("auto")
    assert isinstance(device, torch.device) and device.type == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    with pytest.raises(ParameterError, match="device"):
        runtime.light_device("nonsense")


def test_is_tensor_without_importing_torch(monkeypatch) -> None:
    import sys

    import numpy as np
    import torch

    from impulses.runtime import is_tensor

    assert is_tensor(torch.zeros(1)) and not is_tensor(np.zeros(1))
    monkeypatch.delitem(sys.modules, "torch")
    assert not is_tensor(np.zeros(1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's driver files")
@pytest.mark.parametrize(
    "present", [(), ("/proc/driver/nvidia",), ("/dev/nvidiactl",), ("/dev/dxg",), ("/dev/kfd",)]
)
def test_a_gpu_driver_file_sends_auto_to_torch(monkeypatch, present) -> None:
    from impulses import runtime

    monkeypatch.setattr(runtime.os.path, "exists", lambda path: path in present)
    assert runtime._no_cuda_driver() is (not present)
