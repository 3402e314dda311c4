"""Run-time facts shared by every stage: this process's place in a torchrun job, the device, progress."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from impulses.errors import ImpulsesError, ParameterError

if TYPE_CHECKING:  # torch is imported lazily: `impulses --help` stays fast
    import torch

console = Console()
err_console = Console(stderr=True)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job: rank 0 of 1 when run alone.

    Attributes:
        rank: Global rank, 0 to ``world_size - 1``.
        world_size: Number of processes in the job.
        local_rank: Rank on this machine (picks the CUDA device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistInfo:
        """Read torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (absent: a single process).

        Raises:
            ImpulsesError: The variables are not integers or the rank lies outside the world.
        """
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise ImpulsesError(
                "RANK/WORLD_SIZE/LOCAL_RANK must be integers (as torchrun sets them)"
            ) from None
        if world < 1 or not 0 <= rank < world:
            raise ImpulsesError(f"RANK={rank} is not within WORLD_SIZE={world}")
        return cls(rank, world, local)

    @property
    def distributed(self) -> bool:
        """True with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes shared outputs and prints summaries."""
        return self.rank == 0


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` picks CUDA when present, else the CPU.

    Raises:
        ParameterError: ``device`` is not a device name or names a device this machine lacks.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ParameterError("device", f"{name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device", f"{name}: CUDA is not available on this machine (use cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ParameterError("device", f"{name}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


@dataclass(frozen=True)
class CpuDevice:
    """The CPU, named without importing torch: what :func:`light_device` gives when torch is not needed.

    It has the ``type`` and ``index`` of ``torch.device("cpu")`` and prints as it; torch calls take
    :func:`as_torch_device` of it.
    """

    type: str = "cpu"
    index: None = None

    def __str__(self) -> str:
        return "cpu"


def _no_cuda_driver() -> bool:
    """True when this machine surely has no CUDA driver, so torch.cuda.is_available() would say False."""
    if sys.platform == "darwin":  # torch has no CUDA build for macOS
        return True
    if not sys.platform.startswith("linux"):
        return False  # Windows: ask torch
    # the NVIDIA driver (or its device files in a container), WSL's GPU bridge (its libcuda talks to
    # /dev/dxg), or AMD's ROCm driver (torch's ROCm builds answer torch.cuda.is_available() too)
    drivers = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")
    return not any(os.path.exists(path) for path in drivers)


def light_device(name: Any = "auto") -> Any:
    """The device for ``name`` as :func:`resolve_device` picks it, without importing torch for the CPU.

    ``"cpu"``, or ``"auto"`` on a machine without a CUDA driver while torch is not yet imported, give
    a :class:`CpuDevice` (importing torch to learn that there is no GPU costs about a second, as long as
    training one head); anything else is :func:`resolve_device`'s ``torch.device`` (a torch.device given
    is returned as is).

    Raises:
        ParameterError: as :func:`resolve_device`.
    """
    if not isinstance(name, str):
        return name
    if name == "cpu" or (name == "auto" and "torch" not in sys.modules and _no_cuda_driver()):
        return CpuDevice()
    return resolve_device(name)


def as_torch_device(device: Any) -> torch.device:
    """``device`` (a torch.device, a :class:`CpuDevice` or a name) as a torch.device."""
    import torch

    return device if isinstance(device, torch.device) else torch.device(str(device))


def is_tensor(value: Any) -> bool:
    """True for a torch tensor (without importing torch: none can exist before it is imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def as_numpy(value: Any, dtype: Any = None) -> np.ndarray:
    """``value`` (a torch tensor on any device, an array, a list) as a numpy array, without a copy where it is one."""
    if is_tensor(value):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _writable(folder: Path) -> bool:
    """True when ``folder`` exists or can be made, and a file can be written in it (as numba checks)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def numba_cache_dir(package_dir: str | os.PathLike[str]) -> str | None:
    """Where numba can cache the kernels compiled from ``package_dir``, chosen before numba is imported.

    numba caches next to the source (``__pycache__``) or in the user cache (``$XDG_CACHE_HOME`` or
    ``~/.cache``); when neither is writable (a read-only install run with ``HOME`` unwritable) a
    function decorated with ``cache=True`` fails to compile ("no locator available"). Then a
    private folder under the temporary directory takes their place.

    Args:
        package_dir: The folder of the module that holds the cached kernels.

    Returns:
        ``None`` when numba's own locations work (or ``NUMBA_CACHE_DIR`` is already set), a folder
        to set as ``NUMBA_CACHE_DIR``, or ``""`` when nothing is writable: compile without a cache.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser())
    if _writable(Path(package_dir) / "__pycache__") or _writable(user_cache / "numba"):
        return None
    fallback = Path(tempfile.gettempdir()) / f"impulses-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"
    return str(fallback) if _writable(fallback) else ""


def make_progress(*extra_columns: object, transient: bool = False, disable: bool = False) -> Progress:
    """A rich progress bar with the columns every long-running command shows (on stderr)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=disable,
    )
