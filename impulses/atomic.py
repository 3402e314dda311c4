"""Atomic file writes: a temporary file in the target's folder, then ``os.replace``.

A reader never sees half a file, and an interrupted write leaves the previous version in place.
The file comes out with the mode any new file gets under the process's umask (0644 under umask
022), not the private 0600 of a temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from impulses.errors import ImpulsesError, ParameterError


def _umask() -> int:
    """The process umask: from /proc where Linux shows it, else by setting it and putting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``: write it, and on success it replaces ``path``.

    The folder is created if needed; on any error the temporary file is removed and ``path`` is
    untouched.

    Args:
        path: The file to write.

    Yields:
        The temporary file to write (it exists, empty).

    Raises:
        ImpulsesError: ``path`` is a folder, or its folder cannot be created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise ImpulsesError(f"{path} is a folder; give a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise ImpulsesError(f"{path}: cannot write there ({_reason(err)})") from None
    tmp = Path(tmp_name)
    os.close(fd)
    try:
        yield tmp
        try:
            # the mode is set after writing: some writers (safetensors) replace the file they are given
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except OSError as err:
            raise ImpulsesError(f"{path}: cannot write there ({_reason(err)})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_creatable(target: Path, folder: Path, param: str) -> None:
    """``target`` can be written in ``folder``: the nearest existing folder at or above it is writable.

    Called before any work, so that a run does not end by failing to write its results.

    Raises:
        ParameterError: (naming ``param``) a file stands where a folder is needed, or the folder
            that exists cannot be written.
    """
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ParameterError(param, f"{target} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(param, f"{target} cannot be written: {existing} is not writable")
