"""Shared test helpers: run the CLI in-process exactly as the console script does."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from impulses.cli import main


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """``cli("train-head", "--train", ...)`` -> CliResult(code, stdout, stderr), via ``impulses.cli.main``."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run
