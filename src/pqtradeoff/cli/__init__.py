"""The `pqtradeoff` command line: thin commands that parse, validate and call the library.

Each command lives in its own module below and registers itself on `app`; heavy modules (torch,
transformers, matplotlib) are imported inside the commands, so `pqtradeoff toy` never pays for torch.
"""

from __future__ import annotations

import logging
import signal
import sys

import typer

from pqtradeoff.errors import PQError

app = typer.Typer(
    name="pqtradeoff",
    help="The probability-quality trade-off in aligned language models and its relation to sampling "
         "adaptors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: rich's boxed tables cut option names at 80 columns
)


def _print_version(value: bool) -> None:
    if value:
        from pqtradeoff import __version__

        typer.echo(f"pqtradeoff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    # Makes `pqtradeoff` a command group whatever the number of commands (typer collapses a single one).
    pass


# Command modules register themselves on `app` when imported.
from pqtradeoff.cli import advise as _advise  # noqa: E402,F401
from pqtradeoff.cli import align as _align  # noqa: E402,F401
from pqtradeoff.cli import analyze as _analyze  # noqa: E402,F401
from pqtradeoff.cli import demo as _demo  # noqa: E402,F401
from pqtradeoff.cli import generate as _generate  # noqa: E402,F401
from pqtradeoff.cli import run as _run  # noqa: E402,F401
from pqtradeoff.cli import score as _score  # noqa: E402,F401
from pqtradeoff.cli import toy as _toy  # noqa: E402,F401


class _StderrHandler(logging.Handler):
    """The package logger's console output on whatever sys.stderr is at the time: `warning: <message>`
    (`error: ...`) for warnings and worse, the bare message for progress (info)."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        typer.echo(f"{level}{record.getMessage()}", err=True)


def _console_logging() -> None:
    logger = logging.getLogger("pqtradeoff")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


class Interrupted(BaseException):
    """Ctrl-C (SIGINT). Not a KeyboardInterrupt, which click turns into its own exit before `main` sees it,
    and not an Exception, which library code may catch."""


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted


def main() -> None:
    """Console-script entry point: bad input becomes `error: <one line>` and exit code 2, never a
    traceback."""
    _console_logging()
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        _main()
        return
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        _main()
    finally:
        signal.signal(signal.SIGINT, previous)


def _main() -> None:
    try:
        app()
    except PQError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except (Interrupted, KeyboardInterrupt):
        # Every file is written aside and renamed into place: what exists is complete, what was being written
        # is gone. Rerunning the same command resumes from the complete shards.
        typer.echo("interrupted: every file written so far is complete and kept (shards, models, figures), "
                   "nothing is half-written; run the same command again to resume", err=True)
        sys.exit(130)
    except RuntimeError as err:
        if type(err).__name__ != "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
            raise
        typer.echo("error: the accelerator ran out of memory: lower --batch-size or --max-batch-tokens, or "
                   "use --dtype bfloat16", err=True)
        sys.exit(2)
