"""The command line's own conventions: help on every command, one-line usage errors, flags in library
errors, and user text printed as typed (never read as rich markup)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from impulses.cli import app, flag_for
from impulses.embed.store import EmbeddingStore
from impulses.errors import ImpulsesError, ParameterError

COMMANDS = [command.name for command in app.registered_commands]


def one_error_line(result) -> str:
    """The single stderr line of a failed command (asserting exit 2 and nothing else there)."""
    assert result.code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr
    return lines[0]


def test_every_command_is_registered() -> None:
    assert COMMANDS == [
        "info", "embed", "import", "pretrain", "split", "estimate-prior", "train-head", "predict", "encoders",
        "demo",
    ]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_on_every_command(cli, command: str, flag: str) -> None:
    result = cli(command, flag)
    assert result.code == 0, result.stderr
    assert f"impulses {command}" in result.stdout and "Examples" in result.stdout


def test_root_help_lists_commands_and_completion(cli) -> None:
    for args in (["-h"], []):  # no arguments at all shows the help too
        result = cli(*args)
        assert result.code == 0, result.stderr
        assert "train-head" in result.stdout and "--install-completion" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train-head", "--foo"], "No such option: --foo"),
        (
            ["train-head", "--train", "a.h5", "--labels", "l.csv", "--out", "o", "--epochs", "abc"],
            "'--epochs'",
        ),
        (["predict", "--store", "s.h5", "--out", "s.csv"], "Missing option '--heads'"),
        (["estimate-prior", "--train", "a.h5", "--labels", "l.csv", "--folds", "1"], "'--folds'"),
        (["train-heads"], "No such command 'train-heads'"),
    ],
)
def test_usage_errors_are_one_line(cli, args: list[str], message: str) -> None:
    line = one_error_line(cli(*args))
    assert message in line and "-h)" in line


def test_flag_for_spells_library_parameters_as_flags() -> None:
    assert flag_for("batch_size") == "--batch-size"
    assert (flag_for("X"), flag_for("X_test"), flag_for("y_test")) == ("--train", "--test", "--test-labels")
    assert (flag_for("n_folds"), flag_for("priors"), flag_for("losses")) == ("--folds", "--prior", "--loss")
    error = ParameterError(("X_test", "y_test"), "go together: give both or neither")
    assert error.render(flag_for) == "--test and --test-labels go together: give both or neither"
    assert ImpulsesError("plain message").render(flag_for) == "plain message"


def test_prior_range_text_is_not_markup(cli, tmp_path: Path) -> None:
    result = cli("train-head", "--train", tmp_path / "a.h5", "--labels", tmp_path / "l.csv",
                 "--out", tmp_path / "o", "--prior-range", "a:b:c")  # fmt: skip
    line = one_error_line(result)
    assert "--prior-range 'a:b:c' must be START:STOP:N" in line


def test_prior_range_out_of_bounds_blames_prior_range(cli, tmp_path: Path) -> None:
    result = cli("train-head", "--train", tmp_path / "a.h5", "--labels", tmp_path / "l.csv",
                 "--out", tmp_path / "o", "--prior-range", "0:1:5")  # fmt: skip
    line = one_error_line(result)
    assert line == "error: --prior-range 0:1:5 gives 0, which is not in (0, 1)"


def test_paths_print_as_typed(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file name with rich markup and an emoji code shows as typed, in errors and in tables."""
    missing = tmp_path / "[bold]:smile:.pt"
    line = one_error_line(cli("predict", "--heads", missing, "--store", tmp_path / "s.h5",
                              "--out", tmp_path / "s.csv"))  # fmt: skip
    assert f"{missing}: no such heads file" in line
    monkeypatch.chdir(tmp_path)
    EmbeddingStore.write("[red]:smile:.h5", np.zeros((2, 3), np.float32), ["a", "b"])
    shown = cli("info", "[red]:smile:.h5")
    assert shown.code == 0, shown.stderr
    assert "[red]:smile:.h5" in shown.stdout and "😄" not in shown.stdout
    assert json.loads(cli("info", "[red]:smile:.h5", "--json").stdout)["rows"] == 2


def test_the_process_entry_flushes_runs_exit_handlers_and_keeps_exit_codes(tmp_path) -> None:
    """run() skips Python's module teardown after a command (0.25 s), nothing else."""
    import subprocess
    import sys

    code = (
        "import atexit, sys\n"
        "from impulses.cli import run\n"
        "atexit.register(lambda: print('exit handler ran'))\n"
        "sys.argv = ['impulses', *sys.argv[1:]]\n"
        "run()\n"
    )
    done = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "train-head" in done.stdout
    assert done.stdout.rstrip().endswith("exit handler ran")
    missing = tmp_path / "missing.h5"
    args = [
        "train-head",
        "--train",
        str(missing),
        "--labels",
        str(tmp_path / "l.parquet"),
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and str(missing) in done.stderr
    assert "exit handler ran" in done.stdout
