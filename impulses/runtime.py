"""Run-time choices shared by every stage: which device to use and how to show progress."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from impulses.errors import ImpulsesError

if TYPE_CHECKING:  # torch is imported lazily: `impulses --help` stays fast
    import torch

console = Console()
err_console = Console(stderr=True)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an unavailable device is a user error, not a crash."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ImpulsesError(f"--device {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ImpulsesError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ImpulsesError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


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
