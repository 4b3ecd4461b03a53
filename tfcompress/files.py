"""Writing outputs safely: atomically, never over an input, never over a file of another kind.

Every artefact tfcompress produces (models, JSON sidecars, .tflite files, tables) goes through
:func:`atomic_path`, so an interrupted job leaves either the old file or the new one, never half of one.
Programs call :func:`check_output` for every output before any work, so that a path that cannot be written
costs nothing; :func:`file_kind` tells what a file really is (for outputs and for error messages about inputs).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import keras


class OutputPathError(ValueError):
    """An output path that would destroy an input or cannot be written."""


# What :func:`file_kind` calls a file, in words for messages.
KIND_NAMES = {
    "empty": "an empty file", "keras": "a Keras model (.keras)", "npz": "a NumPy archive (.npz)",
    "zip": "a zip archive", "damaged_zip": "a damaged (truncated?) zip archive", "tflite": "a TFLite flatbuffer",
    "hdf5": "an HDF5 file", "json": "a JSON file", "text": "a text file", "binary": "binary data",
}
# The kind an output suffix promises; an existing file is replaced only by one of its own kind.
_SUFFIX_KINDS = {".json": "json", ".keras": "keras", ".tflite": "tflite", ".npz": "npz", ".md": "text",
                 ".txt": "text", ".csv": "text", ".jsonl": "text"}
_REPLACEABLE = {"text": {"text", "json"}}  # a JSON file is text too (e.g. summary.md over an old summary)
_JSON_SNIFF_BYTES = 64 << 20  # larger files are called text without parsing them


def file_kind(path: str | os.PathLike) -> str:
    """What the file at ``path`` holds, from its content (not its name): one of :data:`KIND_NAMES`."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "empty"
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "damaged_zip"
        if "config.json" in names and "metadata.json" in names:  # the Keras 3 .keras layout
            return "keras"
        return "npz" if names and all(name.endswith(".npy") for name in names) else "zip"
    if head[4:8] == b"TFL3":  # the FlatBuffer file identifier of a TFLite model (schema.fbs)
        return "tflite"
    if head == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if size <= _JSON_SNIFF_BYTES:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "binary"
        try:
            json.loads(text)
            return "json"
        except ValueError:
            return "text" if "\x00" not in text else "binary"
    return "binary"


def describe_file(path: str | os.PathLike) -> str:
    """``"a Keras model (.keras)"``, ``"an empty file"``, ...: what ``path`` holds, in words."""
    return KIND_NAMES[file_kind(path)]


def check_output(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), kind: str | None = None
) -> Path:
    """Validates an output path before any work starts; returns it resolved. Creates the output's folder (as
    the write will; writers such as a latency table's journal rely on it) and nothing else.

    Args:
        output: the file the program will write.
        inputs: files the program reads; the output may not be one of them.
        kind: what will be written (a key of :data:`KIND_NAMES`); by default the one its suffix promises
            (``.json``, ``.keras``, ``.tflite``, ``.npz``, text). An existing file of another kind is refused:
            ``--json=model.keras`` must not destroy a model.

    Raises:
        OutputPathError: the output is one of the inputs, is a directory, is an existing file of another kind,
            or its folder is a file or cannot be written (permissions, read-only file system).
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
    kind = kind or _SUFFIX_KINDS.get(out.suffix)
    if kind is not None and out.is_file():
        found = file_kind(out)
        if found != "empty" and found != kind and found not in _REPLACEABLE.get(kind, ()):
            raise OutputPathError(
                f"output {str(output)!r} exists and is {KIND_NAMES[found]}, not {KIND_NAMES[kind]}: "
                "tfcompress replaces a file only with one of the same kind; choose another path or delete it."
            )
    _check_writable_folder(out.parent, f"output {str(output)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Validates a folder that a program will create or write files into; returns it resolved. Creates nothing.

    Raises:
        OutputPathError: ``folder`` is a file, sits below a file, or cannot be written.
    """
    out = Path(folder).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"output folder {str(folder)!r} is a file; give a folder.")
    _check_writable_folder(out, f"output folder {str(folder)!r}")
    return out


def _check_writable_folder(folder: Path, what: str) -> None:
    """``folder`` exists and takes a new file, or can be created: its nearest existing ancestor takes one."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"cannot write {what}: {str(existing)!r} is a file, not a folder.")
    try:  # a real write, before any long work: permissions alone do not tell (root, read-only mounts)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise OutputPathError(f"cannot write {what}: {error.strerror or error} ({existing}).") from None


def sidecar_path(output: str | os.PathLike) -> Path:
    """``OUTPUT.json``, the report a program writes beside its main output."""
    output = Path(output)
    return output.with_name(output.name + ".json")


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
    """Writes JSON atomically, indented, with a trailing newline.

    Raises:
        ValueError: ``obj`` holds a NaN or an infinity (JSON has none; in a report it means a run went wrong),
            naming where, e.g. ``history.loss[3]``.
    """
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    where = _first_nonfinite(json.loads(text))  # after default=, so numpy values are checked too
    if where is not None:
        raise ValueError(f"{str(path)!r} not written: {where[0] or 'the value'} is {where[1]} "
                         "(a diverged run or a bad input upstream)")
    return write_text(path, text + "\n")


def _first_nonfinite(value: Any, where: str = "") -> tuple[str, float] | None:
    """(path such as ``history.loss[3]``, value) of the first NaN or infinity in a JSON value, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _first_nonfinite(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found is not None:
            return found
    return None


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays show up in reports; turn them into plain JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
