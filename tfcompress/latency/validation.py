"""Checks on what a benchmark is given, done before anything runs, with errors that name the problem."""

from __future__ import annotations

import os
from pathlib import Path

from tfcompress.runtime import TFLITE_IDENTIFIER

BINARY_ENV_VAR = "TFCOMPRESS_BENCHMARK_MODEL"


def check_tflite(path: str | os.PathLike) -> Path:
    """Returns ``path`` if it is a readable ``.tflite`` FlatBuffer.

    Only the header is checked; a truncated file with a valid header is reported by the runtime itself.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a directory, or not a TFLite FlatBuffer (identifier at bytes 4..8 is not ``TFL3``).
    """
    model = Path(path).expanduser()
    if not model.exists():
        raise FileNotFoundError(f"TFLite model {str(path)!r} does not exist")
    if model.is_dir():
        raise ValueError(f"TFLite model {str(path)!r} is a directory; give the .tflite file")
    with model.open("rb") as stream:
        header = stream.read(8)
    if header[4:8] != TFLITE_IDENTIFIER:
        hint = ""
        if header.startswith(b"PK"):
            hint = " It is a zip archive (a .keras model?): convert it to .tflite first."
        elif len(header) < 8:
            hint = f" It is only {len(header)} bytes long."
        raise ValueError(
            f"{str(path)!r} is not a TFLite model: bytes 4..8 are {header[4:8]!r}, a .tflite FlatBuffer has "
            f"{TFLITE_IDENTIFIER!r} there.{hint}"
        )
    return model


def resolve_binary(binary: str | os.PathLike | None = None) -> Path:
    """The ``benchmark_model`` executable to run: ``binary``, else ``$TFCOMPRESS_BENCHMARK_MODEL``.

    Raises:
        ValueError: neither is set, or the path is a directory.
        FileNotFoundError: the path does not exist.
        PermissionError: the file is not executable by this user.
    """
    if binary is None or str(binary) == "":
        binary = os.environ.get(BINARY_ENV_VAR) or None
        if binary is None:
            raise ValueError(
                "the 'binary' runner needs the path of a TFLite benchmark_model executable: pass binary=... "
                f"(--benchmark_binary on the command line) or set {BINARY_ENV_VAR}"
            )
    path = Path(binary).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"benchmark_model binary {str(binary)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"benchmark_model binary {str(binary)!r} is a directory, not an executable")
    if not os.access(path, os.X_OK):
        raise PermissionError(
            f"benchmark_model binary {str(binary)!r} is not executable: run `chmod +x {binary}`"
        )
    # Absolute, because a bare name ("benchmark_model") would otherwise be looked up on PATH when run.
    return path.absolute()


def check_counts(threads: int, runs: int, warmup: int) -> None:
    """Raises ValueError naming the argument if ``threads`` or ``runs`` < 1 or ``warmup`` < 0."""
    for name, value, lowest in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ValueError(f"{name} must be an integer ≥ {lowest}, got {value!r}")
