"""Running an absl program so that bad input ends in one clear line, not a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable

from absl import app

from tfcompress.data import DatasetNotFoundError
from tfcompress.files import OutputPathError

# Errors that tfcompress raises on purpose, with messages written for the user.
USER_ERRORS = (OutputPathError, DatasetNotFoundError, ValueError, FileNotFoundError)


def run(main: Callable[[list[str]], None]) -> None:
    """``app.run(main)``, turning the user errors above into an absl usage error (message, exit code 1)."""

    @functools.wraps(main)
    def guarded(argv: list[str]) -> None:
        try:
            main(argv)
        except USER_ERRORS as error:
            raise app.UsageError(f"{type(error).__name__}: {error}") from error

    app.run(guarded)
