"""DistInfo from torchrun's variables; resolve_device's errors name the device parameter."""

from __future__ import annotations

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


def test_the_pretraining_loop_reads_the_same_dist_info(monkeypatch: pytest.MonkeyPatch) -> None:
    from impulses.encoders.distributed import env_context

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert env_context() == DistInfo(1, 2, 1) and isinstance(env_context(), DistInfo)


def test_resolve_device_names_the_parameter() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ParameterError, match=r"^device 'tpu:x' is not a device") as err:
        resolve_device("tpu:x")
    assert err.value.params == ("device",)
