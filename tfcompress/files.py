"""Writing outputs safely: atomically, never over an input.

Every artefact tfcompress produces (models, JSON sidecars, .tflite files, tables) goes through
:func:`atomic_path`, so an interrupted job leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import keras


class OutputPathError(ValueError):
    """An output path that would destroy an input or cannot be written."""


def check_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Validates an output path before any work starts; returns it resolved.

    Raises:
        OutputPathError: the output is one of the inputs, is a directory, or its folder cannot be made.
    """
    out = Path(output).expanduser().resolve()
    for source in inputs:
        if source is not None and Path(source).expanduser().resolve() == out:
            raise OutputPathError(
                f"output {str(output)!r} is the same file as the input; choose another --output "
                "(tfcompress never overwrites its input)."
            )
    if out.is_dir():
        raise OutputPathError(f"output {str(output)!r} is a directory; give a file path.")
    try:  # a real write, before any long work: permissions alone do not tell (root, read-only mounts)
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as error:
        raise OutputPathError(
            f"cannot write output {str(output)!r}: {error.strerror or error}; choose another --output."
        ) from None
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffix (Keras insists on ``.keras``) and lives in the same
    folder, so the final ``os.replace`` is atomic.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{final.stem}-", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers such as keras.Model.save want to create the file themselves
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_model(model: keras.Model, path: str | os.PathLike, include_optimizer: bool = False) -> Path:
    """Saves a Keras model to ``.keras`` atomically (without optimizer state unless asked).

    Keras 3 ignores ``include_optimizer`` for ``.keras`` files (and ``clone_model`` keeps the compile state),
    while SGD momentum doubles a file's size, so the optimizer is dropped by saving a copy rebuilt from the
    config with the same weights.
    """
    final = Path(path)
    if final.suffix != ".keras":
        raise OutputPathError(f"model output {str(path)!r} must end in .keras")
    if not include_optimizer and getattr(model, "optimizer", None) is not None:
        copy = type(model).from_config(model.get_config())
        copy.set_weights(model.get_weights())
        model = copy
    with atomic_path(final) as tmp:
        model.save(tmp)
    return final


def write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Writes bytes atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes text (UTF-8) atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_png(path: str | os.PathLike, figure: Any, dpi: int = 110) -> Path:
    """Writes a matplotlib ``figure`` as PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return write_bytes(path, buffer.getvalue())


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes JSON atomically, indented, with a trailing newline."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays show up in reports; turn them into plain JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
