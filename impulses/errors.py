"""Exceptions for problems a user can fix; the CLI shows them as one line with exit code 2.

Library code names the Python parameter at fault (``ParameterError("batch_size", "must be at
least 1, got 0")`` reads ``batch_size must be at least 1, got 0``); the CLI renders the same error
with its flag (``--batch-size must be at least 1, got 0``) through one mapping in
``impulses.cli``. Errors about values are ``ValueError`` subclasses, so scikit-learn and plain
Python callers can catch them as they catch any bad value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class ImpulsesError(Exception):
    """Bad input or an unusable file: the message names the file, column, id or parameter at fault.

    Args:
        message: What is wrong and, where it helps, what to do. When ``param`` is given, the
            message continues the parameter's name (``"must be at least 1, got 0"``).
        param: The parameter (or parameters, joined by "and") the message is about, as the
            Python caller spells it; the CLI replaces each with its flag.
    """

    exit_code = 2

    def __init__(self, message: str, *, param: str | Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.params: tuple[str, ...] = (param,) if isinstance(param, str) else tuple(param or ())

    def render(self, name: Callable[[str], str] = str) -> str:
        """The message with each parameter spelled by ``name`` (the CLI passes its flag lookup)."""
        if not self.params:
            return self.message
        return f"{' and '.join(name(p) for p in self.params)} {self.message}"

    def __str__(self) -> str:
        return self.render()


class ParameterError(ImpulsesError, ValueError):
    """A parameter with a value the function cannot use (out of range, unknown name, bad combination)."""

    def __init__(self, param: str | Sequence[str], message: str) -> None:
        super().__init__(message, param=param)


class StoreError(ImpulsesError, ValueError):
    """An embedding store that is missing, malformed, incomplete or does not match a run."""


class LabelSetError(ImpulsesError, ValueError):
    """A label set with unknown or duplicate ids, values outside {0, 1} or no labeled positive."""
