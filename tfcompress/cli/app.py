"""Running an absl program so that bad input ends in one clear line, not a traceback or a page of flag help.

Every program runs through :func:`run`: a flag that does not parse or validate, a stray positional argument, an
``app.UsageError`` or one of the :data:`USER_ERRORS` raised by the program prints ``PROGRAM: error: MESSAGE``
on one line of stderr and exits with status 1. ``--help`` still prints the help. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from absl import app, flags

from tfcompress.data import DatasetNotFoundError
from tfcompress.files import OutputPathError

# Errors that tfcompress raises on purpose, with messages written for the user (NonFiniteError and the
# refusals of models and files are ValueErrors).
USER_ERRORS = (OutputPathError, DatasetNotFoundError, ValueError, FileNotFoundError)


def run(main: Callable[[list[str]], None], argv: Sequence[str] | None = None) -> None:
    """``app.run(main)``, with bad input reported as one line (see the module docstring).

    Args:
        main: the program; it gets ``[program name]`` (positional arguments are refused before it runs).
        argv: the command line, program name first (default ``sys.argv``); tests pass their own.
    """
    argv = list(sys.argv if argv is None else argv)
    program = Path(argv[0]).name if argv else "tfcompress"

    @functools.wraps(main)
    def guarded(args: list[str]) -> None:
        if len(args) > 1:  # absl leaves them to main; every tfcompress program takes flags only
            fail(program, f"unexpected arguments {' '.join(args[1:])!r}: flags are written --name=value")
        try:
            main(args)
        except (app.UsageError, *USER_ERRORS) as error:
            fail(program, str(error))

    def parse(args: list[str]) -> list[str]:
        try:
            return flags.FLAGS(args)
        except flags.Error as error:
            fail(program, f"{error} (--help lists the flags)")

    app.run(guarded, argv=argv, flags_parser=parse)


def fail(program: str, message: str) -> NoReturn:
    """Prints ``PROGRAM: error: MESSAGE`` as a single line on stderr and exits with status 1."""
    sys.stderr.write(f"{program}: error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    sys.exit(1)
