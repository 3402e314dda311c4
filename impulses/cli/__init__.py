"""The ``impulses`` command line: one module per command, each a thin layer over one library call.

Errors a user can fix (:class:`impulses.errors.ImpulsesError`) and Typer/Click usage errors become
one ``error: ...`` line on stderr and exit code 2, here in :func:`main` and nowhere else. Library
errors name Python parameters; :func:`flag_for` spells them as the flags the user typed. Heavy
imports (torch, timm, polars) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import os
import sys
from typing import Annotated, Any

import typer

from impulses.cli._output import error
from impulses.cli.demo import demo_command
from impulses.cli.embed import embed_command
from impulses.cli.encoders import encoders_command
from impulses.cli.estimate_prior import estimate_prior_command
from impulses.cli.import_features import import_command
from impulses.cli.info import info_command
from impulses.cli.predict import predict_command
from impulses.cli.pretrain import pretrain_command
from impulses.cli.split import split_command
from impulses.cli.train_head import train_head_command
from impulses.errors import ImpulsesError

try:  # typer >= 0.26 carries its own copy of click, whose exceptions derive from TyperException
    from typer import TyperException as UsageProblem
except ImportError:  # older typer raises click's own
    from click import ClickException as UsageProblem

# Python parameters of library calls whose flag is not "--" + the name with dashes. A command whose
# flag for a parameter differs from this (train-head reads ``store`` from --train) says so at the
# call with ``impulses.cli._params.renamed_params``.
FLAGS = {
    "X": "--train",
    "S": "--labels",
    "s": "--labels",
    "y": "--labels",
    "X_test": "--test",
    "y_test": "--test-labels",
    "test_store": "--test",
    "n_folds": "--folds",
    "priors": "--prior",
    "losses": "--loss",
    "distortions": "--distortion",
    "label_sets": "--label-set",
    "names": "--label-set",
    "out_dir": "--out",
    "methods": "--method",
}


def flag_for(param: str) -> str:
    """The command-line flag of a library parameter: the table above, else ``--param-name``."""
    return FLAGS.get(param) or "--" + param.replace("_", "-")


app = typer.Typer(
    name="impulses",
    help="Embedding cache and imbalanced positive-unlabeled learning with self-supervision (ImPULSeS).",
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        from impulses import __version__

        typer.echo(f"impulses {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Pretrain or load an encoder once, cache its embeddings, then train PU heads on them in seconds."""


app.command("info")(info_command)
app.command("embed")(embed_command)
app.command("import")(import_command)
app.command("pretrain")(pretrain_command)
app.command("split")(split_command)
app.command("estimate-prior")(estimate_prior_command)
app.command("train-head")(train_head_command)
app.command("predict")(predict_command)
app.command("encoders")(encoders_command)
app.command("demo")(demo_command)


def _usage_message(err: UsageProblem) -> str:
    """Click's message on one line, with where to look for the command's options."""
    message = " ".join(err.format_message().split())
    ctx = getattr(err, "ctx", None)
    return f"{message} (see: {ctx.command_path} -h)" if ctx is not None else message


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and ``python -m impulses``: run one command, exit with its code."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args or ["--help"], prog_name="impulses", standalone_mode=False)
    except ImpulsesError as err:
        error(err.render(flag_for))
        raise SystemExit(err.exit_code) from None
    except UsageProblem as err:
        error(_usage_message(err))
        raise SystemExit(getattr(err, "exit_code", 2)) from None
    except typer.Abort:
        error("aborted")
        raise SystemExit(130) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)


def run() -> None:
    """The process's entry (console script, ``python -m impulses``): :func:`main`, then a quick exit.

    After a command returns, exit handlers run and output is flushed, then the process ends without
    Python's teardown of its modules: with numba, LLVM, polars and h5py loaded that teardown takes
    0.25 s (a sixth of a one-head train-head run) and frees only memory the OS takes back anyway.
    An uncaught exception ends the process the usual way.
    """
    try:
        main()
        code: Any = 0
    except SystemExit as done:
        code = done.code
    if code is not None and not isinstance(code, int):  # sys.exit("message") prints it, exit status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing left to say
            stream.flush()
    os._exit(code or 0)


def _unwrap(doc: str) -> str:
    """A docstring with each prose paragraph on one line, so the terminal, not the source, wraps it.

    Rich markup mode keeps single line breaks; paragraphs with indented lines (examples) stay as written.
    """
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        p if any(line.startswith(" ") for line in p.splitlines()) else " ".join(p.split("\n"))
        for p in paragraphs
    )


for _command in app.registered_commands:
    if _command.help is None and _command.callback is not None and _command.callback.__doc__:
        _command.help = _unwrap(_command.callback.__doc__)
