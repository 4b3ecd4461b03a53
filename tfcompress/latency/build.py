"""Building a latency table on a device: every unit of the models on a grid of channel counts, one small
``.tflite`` per point and precision, timed ``repeats`` times; long builds resume and split.

Every measurement is appended to a journal (``T.journal.jsonl``, one fsynced JSON line each) the moment it is
taken, so a build killed even with SIGKILL resumes (``resume=True``) without measuring anything twice, and a
build over SSH that loses its connection for longer than the device's retries does too. ``shard=(i, n)``
measures every n-th point only; :meth:`Table.merge` joins the shards, which may run in parallel processes or
on several identical devices.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress import files
from tfcompress import progress as progress_bars
from tfcompress.export import strip, to_tflite
from tfcompress.graph import ChannelGraph
from tfcompress.latency.device import Device, comparable
from tfcompress.latency.devices import open_device
from tfcompress.latency.result import BenchmarkError
from tfcompress.latency.table import (
    PRECISIONS,
    Entry,
    Table,
    TableError,
    architecture_id,
    grid_points,
    residue_points,
    table_path,
)
from tfcompress.latency.units import Unit, find_units
from tfcompress.latency.validation import check_counts

JOURNAL_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Task:
    """One model to time: a grid point of an entry, the device's call overhead, or a whole architecture."""

    kind: str  # "entry", "overhead" or "model"
    target: str  # entry id, "" or architecture id
    precision: str
    point: tuple[int, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.target}|{self.precision}|{','.join(map(str, self.point))}"


def parse_shard(text: str | tuple[int, int]) -> tuple[int, int]:
    """``"i/n"`` (0 ≤ i < n) → (i, n).

    Raises:
        ValueError: anything else.
    """
    if isinstance(text, tuple):
        index, count = text
    else:
        try:
            index, count = (int(part) for part in str(text).split("/"))
        except ValueError:
            raise ValueError(f"shard must be 'i/n' with 0 ≤ i < n (e.g. 0/2), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"shard must be 'i/n' with 0 ≤ i < n (e.g. 0/2), got {index}/{count}")
    return index, count


def journal_path(output: str | os.PathLike) -> Path:
    return table_path(output).with_suffix(".journal.jsonl")


def load_or_build_table(
    model: keras.Model,
    device: Device,
    path: str | os.PathLike,
    precision: str = "float32",
    *,
    threads: int = 1,
    say: Callable[[str], None] = print,
    progress: bool = True,
) -> Table:
    """The table at ``path`` (``.npz`` added when missing), checked to be ``device``'s and to cover every unit of
    ``model`` at ``precision`` before any long work; or, when there is none, one built for ``model`` at
    ``precision`` and saved there. ``say`` gets one line saying which.

    Raises:
        TableError: the table is another device's, or lacks a unit or the precision.
    """
    path = table_path(path)
    if path.is_file():
        table = Table.load(path)
        table.check_device(device.fingerprint(threads))
        table.predict(model, precision)
        say(f"latency table {path} ({device.name})")
        return table
    say(f"latency table {path} does not exist: building it on {device.name}")
    return build_table(model, device, output=path, precisions=(precision,), threads=threads, progress=progress)


def build_table(
    models: Sequence[keras.Model] | keras.Model,
    device: str | Device = "litert",
    *,
    output: str | os.PathLike,
    precisions: Sequence[str] = PRECISIONS,
    step: int = 8,
    max_points: int = 12,
    repeats: int = 3,
    runs: int = 30,
    warmup: int = 5,
    threads: int = 1,
    shard: str | tuple[int, int] = (0, 1),
    resume: bool = False,
    force: bool = False,
    smooth_sigma: float = 0.0,
    residues: bool = True,
    batch_size: int = 16,
    progress: bool = True,
) -> Table:
    """Measures a latency table for ``models`` on ``device`` and writes it to ``output`` (.npz + .json).

    Args:
        models: functional models with fixed input shapes (compression layers are stripped as for export).
        device: a :class:`Device` or a ``--device`` string (:func:`tfcompress.latency.open_device`).
        precisions: "float32" and/or "int8" (full-integer units with int8 inputs and outputs, as inside an
            int8 model).
        step: grid step in channels (use the ``channel_multiple`` pruning will use), widened to keep at most
            ``max_points`` points per axis.
        repeats: times each point is measured (in separate passes); the table keeps their median.
        runs, warmup, threads: per measurement, as in :func:`tfcompress.latency.benchmark`.
        shard: ``"i/n"``: measure only every n-th point, from the i-th (merge the shards with
            :meth:`Table.merge`).
        resume: continue the journal of an interrupted build (else an existing journal is an error).
        force: resume a journal measured on another device fingerprint.
        smooth_sigma: gaussian smoothing of every grid, in grid steps, applied when predicting (0: none).
        residues: also measure, per axis, the step − 1 counts below its top multiple of ``step`` (the pattern
            within a step, :attr:`Entry.residues`): better predictions between grid points for ~40 % more points.
        progress: a bar with ETA where :mod:`tfcompress.progress` draws bars (a terminal, or ``TFC_PROGRESS=1``);
            False: never.

    Raises:
        ValueError: bad arguments, a model the units cannot cover, an existing journal without ``resume``.
        TableError: resuming a journal of another device without ``force``.
        BenchmarkError: the device failed to measure.
    """
    models = [models] if isinstance(models, keras.Model) else list(models)
    if not models:
        raise ValueError("give at least one model to build a latency table for")
    unknown = sorted(set(precisions) - set(PRECISIONS))
    if unknown or not precisions:
        raise ValueError(f"precisions must be among {PRECISIONS}, got {list(precisions)}")
    if step < 1 or max_points < 2 or repeats < 1 or batch_size < 1 or smooth_sigma < 0:
        raise ValueError(f"need step ≥ 1, max_points ≥ 2, repeats ≥ 1, batch_size ≥ 1, smooth_sigma ≥ 0; got "
                         f"{step}, {max_points}, {repeats}, {batch_size}, {smooth_sigma}")
    check_counts(threads, runs, warmup)
    shard = parse_shard(shard)
    output = table_path(files.check_output(table_path(output)))
    journal = journal_path(output)
    if journal.exists() and not resume:
        raise ValueError(f"{journal} exists (the measurements of an earlier build of this table): pass resume to "
                         "reuse them (an interrupted build continues, a finished one adds new models), or delete it")
    device = open_device(device)

    plan = _Plan.of(models, precisions, step, max_points, residues)
    fingerprint = device.fingerprint(threads)
    done = _read_journal(journal, fingerprint, force) if journal.exists() else {}
    if not journal.exists():
        _append(journal, {"journal": JOURNAL_VERSION, "fingerprint": fingerprint, "device": device.name})
    mine = plan.tasks[shard[0]::shard[1]]
    pending = [(task, r) for r in range(repeats) for task in mine if r >= len(done.get(task.id, []))]

    started = time.monotonic()
    with (tempfile.TemporaryDirectory(prefix="tfcompress-table-") as folder,
          progress_bars.bar(len(pending), "latency table", unit="model", enable=progress) as bar):
        converted: dict[str, Path] = {}
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            paths = []
            for task, _ in batch:
                if task.id not in converted:
                    converted[task.id] = plan.convert(task, Path(folder) / f"{len(converted)}.tflite")
                paths.append(converted[task.id])
            results = device.measure(paths, threads=threads, runs=runs, warmup=warmup)
            for (task, repeat), result in zip(batch, results, strict=True):
                us = 1000 * result.latency_ms
                if not np.isfinite(us):
                    raise BenchmarkError(f"{device.name} measured {us} µs for {task.id}")
                _append(journal, {"task": task.id, "repeat": repeat, "us": us})
                done.setdefault(task.id, []).append(us)
            bar.update(len(batch))

    meta = {
        "fingerprint": fingerprint, "device": device.name, "precisions": list(precisions), "threads": threads,
        "runs": runs, "warmup": warmup, "repeats": repeats, "step": step, "max_points": max_points,
        "smooth_sigma": smooth_sigma, "residues": residues, "shard": f"{shard[0]}/{shard[1]}",
        "models": [model.name for model in models], "build_seconds": round(time.monotonic() - started, 1),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    table = plan.table(done, meta)
    table.save(output)
    return table


class _Plan:
    """What a build measures: the entries of every model's units, the overhead, and each whole model."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[Unit, tuple[np.ndarray, ...]]] = {}
        self.architectures: dict[str, keras.Model] = {}
        self.unit_values: dict[str, list[list[int]]] = {}
        self.tasks: list[Task] = []
        self.step = 1

    @classmethod
    def of(cls, models: Iterable[keras.Model], precisions: Sequence[str], step: int, max_points: int,
           residues: bool = True) -> _Plan:
        plan = cls()
        plan.step = step if residues else 1  # step 1: no counts between multiples, nothing to measure
        for model in models:
            plain = strip(model)
            units = find_units(plain, ChannelGraph(plain))
            architecture = architecture_id(units)
            plan.architectures.setdefault(architecture, plain)
            plan.unit_values.setdefault(architecture, [list(unit.values()) for unit in units])
            for unit in units:
                points = tuple(grid_points(axis, step, max_points) for axis in unit.axes)
                entry_id = Entry(unit.key, points, {}).id
                plan.entries.setdefault(entry_id, (unit, points))
        for precision in precisions:
            plan.tasks.append(Task("overhead", "", precision))
            for entry_id, (_, points) in plan.entries.items():
                for point in np.stack(np.meshgrid(*points, indexing="ij"), -1).reshape(-1, len(points)):
                    plan.tasks.append(Task("entry", entry_id, precision, tuple(int(v) for v in point)))
                for point in residue_points(points, plan.step).values():
                    plan.tasks.append(Task("entry", entry_id, precision, point))
            plan.tasks += [Task("model", arch, precision) for arch in plan.architectures]
        return plan

    def convert(self, task: Task, path: Path) -> Path:
        if task.kind == "model":
            model, int8_io = self.architectures[task.target], False  # deployed as exported: float I/O
        elif task.kind == "overhead":
            model, int8_io = _empty_model(), True
        else:
            model, int8_io = self.entries[task.target][0].build(task.point), True  # inside an int8 model
        if task.precision == "float32":
            to_tflite(model, "float32", output=path)
        else:
            to_tflite(model, "int8", representative_data=_random_inputs(model), int8_io=int8_io, output=path)
        return path

    def table(self, measured: dict[str, list[float]], meta: dict[str, Any]) -> Table:
        def median(task: Task) -> float:  # the median of the repeats: one disturbed pass does not move it
            values = measured.get(task.id)
            return float(np.median(values)) if values else float("nan")

        precisions = meta["precisions"]
        entries = []
        for entry_id, (unit, points) in self.entries.items():
            values, residues = {}, {}
            for precision in precisions:
                grid = np.full([len(p) for p in points], np.nan)
                for index in np.ndindex(grid.shape):
                    point = tuple(int(points[a][i]) for a, i in enumerate(index))
                    grid[index] = median(Task("entry", entry_id, precision, point))
                values[precision] = grid
                extra = residue_points(points, self.step)
                if extra:
                    residues[precision] = np.full((len(points), self.step - 1), np.nan)
                    for (axis, r), point in extra.items():
                        residues[precision][axis, r - 1] = median(Task("entry", entry_id, precision, point))
            entries.append(Entry(unit.key, points, values, unit.name, residues))
        overhead = {p: median(Task("overhead", "", p)) for p in precisions}
        architectures = {
            arch: {"name": model.name, "unit_values": self.unit_values[arch],
                   "measured_us": {p: median(Task("model", arch, p)) for p in precisions
                                   if not np.isnan(median(Task("model", arch, p)))}}
            for arch, model in self.architectures.items()
        }
        return Table(entries, {**meta, "overhead_us": {p: v for p, v in overhead.items() if not np.isnan(v)},
                               "architectures": architectures})


def _empty_model() -> keras.Model:
    """The smallest model the converter keeps an op of: what a call costs the device beyond its layers."""
    inputs = keras.Input(batch_shape=(1, 1, 1, 1))
    return keras.Model(inputs, keras.layers.ReLU()(inputs), name="overhead")


def _random_inputs(model: keras.Model, samples: int = 4, seed: int = 0):
    """Calibration data for int8: random values in [0, 1) for every input (latency does not depend on them)."""
    rng = np.random.default_rng(seed)
    shapes = [(1, *t.shape[1:]) for t in model.inputs]
    return lambda: ([rng.random(shape, dtype=np.float32) for shape in shapes] for _ in range(samples))


def _append(journal: Path, record: dict[str, Any]) -> None:
    with open(journal, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(record, default=str) + "\n")
        stream.flush()
        os.fsync(stream.fileno())  # on disk before the next measurement: SIGKILL loses at most this line


def _read_journal(journal: Path, fingerprint: dict[str, Any], force: bool) -> dict[str, list[float]]:
    """Measurements already taken, by task id; checks the journal's device against this one."""
    done: dict[str, list[float]] = {}
    lines = journal.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) - 1:
                continue  # the line being written when the build was killed
            raise ValueError(f"{journal}:{number + 1} is not JSON: the journal is damaged; delete it") from None
        if "journal" in record:
            differences = comparable(record.get("fingerprint", {}), fingerprint)
            if differences and not force:
                raise TableError(f"{journal} was measured on another device ({'; '.join(differences)}): resume on "
                                 "that device, or pass force")
        elif "task" in record:
            done.setdefault(record["task"], []).append(float(record["us"]))
    return done
