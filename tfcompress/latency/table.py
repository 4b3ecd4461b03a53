"""Latency tables: the measured latency of every unit of a model (:mod:`tfcompress.latency.units`) on a grid of
channel counts, for float32 and int8, and the prediction of a whole model's latency from them.

    table = latency.Table.load("resnet20.litert.npz")
    table.predict(pruned_model).ms                          # in microseconds per call: .total_us
    prune_channels(model, "l1", cost_fn=table.cost_fn(model), target_latency=0.6)

A model's latency is predicted as ``intercept + Σ units (entry − overhead)``: each entry is a one-unit model
timed on the device, ``overhead`` what the device needs for a call of an (almost) empty model, and the
intercept what the per-unit sum misses for this architecture (I/O, quantize ops at the ends, cache effects),
calibrated once from a measurement of the whole unpruned model; a model the table has no measurement of gets
the overhead of one call instead. Between grid points, latency is interpolated linearly (``scipy``), after an
optional gaussian smoothing of the grid (``scipy.ndimage``), as the thesis smoothed its tables.

Stored as ``T.npz`` (arrays only, loaded with ``allow_pickle=False``) and ``T.json`` beside it (the device
fingerprint, runtime, threads, precisions, grid, date and every entry's key).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress import files
from tfcompress.export import strip
from tfcompress.graph import ChannelGraph, ChannelMask
from tfcompress.keras_graph import iter_layers, replace_layers
from tfcompress.latency.device import comparable
from tfcompress.latency.units import Axis, Unit, find_units
from tfcompress.pruning.shrink import fold_channel_masks

FORMAT_VERSION = 1
PRECISIONS = ("float32", "int8")
INTERPOLATIONS = ("ceil", "linear")


class TableError(ValueError):
    """A table that cannot answer: a unit it has no entry for, an incomplete grid, another device."""


@dataclasses.dataclass
class Entry:
    """The measured latency of one unit structure over a grid of its axis values.

    Attributes:
        key: the unit's structure key (:attr:`Unit.key`).
        points: the grid of channel counts, one sorted array per axis.
        values: per precision, the median latency in µs at every grid point as measured, the device's call
            overhead included (NaN where not measured yet: another shard's part).
        layer: a layer the entry was measured for (for messages).
        residues: per precision, an (axes × (step − 1)) array: the latency at ``M − r`` channels on one axis
            (``M`` its largest multiple of the step, r = 1 … step − 1) with the other axes full — how a count
            between two multiples of the step differs from the next one up (see :func:`residue_points`).
    """

    key: str
    points: tuple[np.ndarray, ...]
    values: dict[str, np.ndarray]
    layer: str = ""
    residues: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def key_id(self) -> str:
        return hashlib.sha1(self.key.encode()).hexdigest()[:16]

    @property
    def id(self) -> str:
        return f"{self.key_id}-" + "x".join(str(int(p[-1])) for p in self.points)

    def covers(self, values: Sequence[int]) -> bool:
        return all(p[0] <= v <= p[-1] for p, v in zip(self.points, values, strict=True))

    def interpolator(self, precision: str, sigma: float = 0.0, method: str = "ceil", step: int = 1
                     ) -> Callable[[Sequence[int]], float]:
        """A function of the axis values returning µs.

        ``method="ceil"`` rounds a count up to a multiple of ``step`` (the table's grid step) before interpolating:
        CPU kernels pad channels to their SIMD tile (XNNPACK on AVX2: 9…16 output channels cost what 16 do), so
        latency is a staircase that a linear interpolation undercuts by up to 30 %
        (``benchmarks/results/latency_table.md``); on a grid of every multiple of the step this reads the next
        point up, on a widened grid it interpolates linearly at the rounded count. Where the entry has residues,
        a count r below a multiple of the step is scaled by what r below the top multiple costs relative to it
        (float32 XNNPACK on AVX2 runs 4k input channels faster than 4k − 1: the pattern repeats in every step).
        ``"linear"`` interpolates. On grid points (prune with ``channel_multiple`` = the table's step) all are
        exact.

        Raises:
            TableError: the precision was not measured or the grid has holes (an unmerged shard).
        """
        if precision not in self.values:
            raise TableError(f"the table has no {precision} measurements; it has {sorted(self.values)}")
        grid = np.asarray(self.values[precision], float)
        if np.isnan(grid).any():
            raise TableError(f"the {precision} entry for {self.layer} has {int(np.isnan(grid).sum())} unmeasured "
                             "points: merge the other shards of the build (scripts/latency_table.py --merge)")
        if sigma > 0:
            from scipy.ndimage import gaussian_filter

            grid = gaussian_filter(grid, sigma, mode="nearest")
        varying = [i for i, p in enumerate(self.points) if len(p) > 1]
        if not varying:
            value = float(grid.reshape(-1)[0])
            return lambda values: value
        from scipy.interpolate import RegularGridInterpolator

        if method not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {method!r}")
        grid = grid.reshape([len(self.points[i]) for i in varying])  # drop the one-point axes
        axes = [self.points[i].astype(float) for i in varying]
        interpolate = RegularGridInterpolator(axes, grid, bounds_error=False, fill_value=None)

        corrections = self._residue_ratios(precision) if method == "ceil" else {}

        def at(values: Sequence[int]) -> float:
            point = [float(values[i]) for i in varying]
            factor = 1.0
            if method == "ceil":
                point = [min(-(-v // step) * step, axis[-1]) if v <= axis[-1] else v
                         for axis, v in zip(axes, point, strict=True)]
                for k, i in enumerate(varying):
                    ratios = corrections.get(i)
                    below = int(point[k]) - int(values[i])
                    if ratios is not None and 0 < below <= len(ratios) and point[k] % (len(ratios) + 1) == 0:
                        factor *= ratios[below - 1]
            return factor * float(interpolate([point])[0])

        return at

    def _residue_ratios(self, precision: str) -> dict[int, np.ndarray]:
        """Per axis with residues: latency at M − r over latency at M (r = 1 … step − 1)."""
        residues = self.residues.get(precision)
        if residues is None:
            return {}
        step = residues.shape[1] + 1
        ratios = {}
        for axis, top in residue_tops(self.points, step).items():
            if np.isnan(residues[axis]).any():
                raise TableError(f"the {precision} entry for {self.layer} misses residue points: merge the other "
                                 "shards of the build (scripts/latency_table.py --merge)")
            index = tuple(int(np.searchsorted(p, top)) if a == axis else len(p) - 1
                          for a, p in enumerate(self.points))
            ratios[axis] = residues[axis] / self.values[precision][index]
        return ratios


@dataclasses.dataclass
class Prediction:
    """A predicted latency: ``total_us`` = ``intercept_us`` + Σ ``layers``."""

    total_us: float
    intercept_us: float
    layers: list[tuple[str, float]]
    precision: str
    calibrated: bool

    @property
    def ms(self) -> float:
        return self.total_us / 1000

    def to_dict(self) -> dict[str, Any]:
        return {"predicted_ms": self.ms, "total_us": self.total_us, "intercept_us": self.intercept_us,
                "precision": self.precision, "calibrated": self.calibrated,
                "layers": [{"unit": name, "us": us} for name, us in self.layers]}

    def breakdown(self, top: int | None = None) -> str:
        """The units by latency, largest first, one line each."""
        rows = sorted(self.layers, key=lambda row: -row[1])[:top]
        width = max([len(name) for name, _ in rows] + [4])
        lines = [f"{name:<{width}}  {us:9.1f} us  {100 * us / self.total_us:5.1f} %" for name, us in rows]
        lines.append(f"{'(intercept)':<{width}}  {self.intercept_us:9.1f} us")
        return "\n".join(lines)


class Table:
    """Measured unit latencies of one device, for any model whose units it has entries for.

    Attributes:
        entries: by :attr:`Entry.id`.
        meta: the device fingerprint, settings, per-precision call overhead and per-architecture intercepts.
    """

    def __init__(self, entries: Iterable[Entry], meta: Mapping[str, Any]):
        self.entries: dict[str, Entry] = {entry.id: entry for entry in entries}
        self.meta: dict[str, Any] = dict(meta)
        self._by_key: dict[str, list[Entry]] = {}
        for entry in self.entries.values():
            self._by_key.setdefault(entry.key_id, []).append(entry)

    # ------------------------------------------------------------------------------------------ queries

    @property
    def precisions(self) -> list[str]:
        return list(self.meta.get("precisions", []))

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self.meta.get("fingerprint", {}))

    def overhead_us(self, precision: str) -> float:
        return float(self.meta.get("overhead_us", {}).get(precision, 0.0))

    def entry_for(self, unit: Unit, values: Sequence[int] | None = None) -> Entry:
        """The entry measured for ``unit``'s structure whose grid covers its axis values (smallest first).

        Raises:
            TableError: none (the message names the layer and how to measure it).
        """
        values = unit.values() if values is None else values
        candidates = sorted(self._by_key.get(unit.key_id, []), key=lambda e: [p[-1] for p in e.points])
        for entry in candidates:
            if entry.covers(values):
                return entry
        have = f"; it has this structure up to {[int(p[-1]) for p in candidates[-1].points]} channels" \
            if candidates else ""
        raise TableError(f"the table has no entry for layer {unit.name} ({', '.join(unit.layer_names)}) with "
                         f"{list(values)} channels{have}: build one for this model with "
                         "scripts/latency_table.py --model=... --output=... (or add it to this table with --resume)")

    def predict(self, model: keras.Model, precision: str = "float32", intercept_us: float | None = None
                ) -> Prediction:
        """The latency of ``model`` (compression layers are stripped as for export, channels masked by ChannelMask
        layers counted as removed), with a per-unit breakdown.

        Raises:
            TableError: a unit the table has no entry for, or a precision it did not measure.
        """
        masked = any(isinstance(layer, ChannelMask) for layer in iter_layers(model))
        graph = ChannelGraph(model) if masked else None
        plan = self._plan(model, precision, graph)
        counts = {}
        if graph is not None:
            removed = fold_channel_masks(graph, {})
            counts = {plan.group_map[g]: int(keep.sum()) for g, keep in removed.items() if g in plan.group_map}
        layers = [(unit.name, interpolate(unit.values(counts))) for unit, interpolate in plan.parts]
        intercept = plan.intercept if intercept_us is None else float(intercept_us)
        return Prediction(intercept + sum(us for _, us in layers), intercept, layers, precision,
                          calibrated=plan.calibrated or intercept_us is not None)

    def cost_fn(self, model: keras.Model, precision: str = "float32", graph: ChannelGraph | None = None
                ) -> Callable[[Mapping[int, int]], float]:
        """``cost(keep_counts) → predicted µs`` for the channel groups of ``graph`` (default ``ChannelGraph(model)``),
        the signature :func:`tfcompress.pruning.plan_channels` takes; the entries are looked up once, here.

        Raises:
            TableError: a unit the table has no entry for, or a precision it did not measure.
        """
        plan = self._plan(model, precision, graph or ChannelGraph(model))

        def cost(keep_counts: Mapping[int, int]) -> float:
            counts = {plan.group_map[g]: n for g, n in keep_counts.items() if g in plan.group_map}
            return plan.intercept + sum(interpolate(unit.values(counts)) for unit, interpolate in plan.parts)

        return cost

    def _plan(self, model: keras.Model, precision: str, graph: ChannelGraph | None) -> _Plan:
        plain = _deployed_view(model)
        plain_graph = ChannelGraph(plain)
        units = find_units(plain, plain_graph)
        sigma = float(self.meta.get("smooth_sigma", 0.0))
        method = self.meta.get("interpolation", "ceil")
        interpolators: dict[str, Callable] = {}
        parts = []
        overhead = self.overhead_us(precision)
        for unit in units:
            entry = self.entry_for(unit)
            if entry.id not in interpolators:
                interpolators[entry.id] = entry.interpolator(precision, sigma, method, int(self.meta.get("step", 1)))
            parts.append((unit, _minus(interpolators[entry.id], overhead)))
        # The intercept: the whole model as measured minus the sum of its units, at the channel counts measured.
        architecture = self.meta.get("architectures", {}).get(architecture_id(units), {})
        measured, at = architecture.get("measured_us", {}).get(precision), architecture.get("unit_values")
        intercept = overhead
        if measured is not None and at is not None and len(at) == len(parts):
            intercept = measured - sum(interpolate(values) for (_, interpolate), values in zip(parts, at, strict=True))
        group_map = _group_map(graph, plain_graph) if graph is not None else {}
        return _Plan(parts, intercept, measured is not None, group_map)

    # ------------------------------------------------------------------------------------------- device

    def check_device(self, fingerprint: Mapping[str, Any], force: bool = False) -> None:
        """Refuses a table measured on another device, runtime or thread count (unless ``force``).

        Raises:
            TableError: the fingerprints differ (the message lists how).
        """
        differences = comparable(self.fingerprint, dict(fingerprint))
        if differences and not force:
            raise TableError("the table was measured on another device or runtime (" + "; ".join(differences)
                             + "): build a table on this one, or pass force to use it anyway")

    # ------------------------------------------------------------------------------------------ storage

    def save(self, path: str | os.PathLike) -> Path:
        """Writes ``path`` (.npz) and the JSON metadata beside it, each atomically."""
        path = table_path(path)
        arrays, described = {}, []
        for i, entry in enumerate(self.entries.values()):
            for a, points in enumerate(entry.points):
                arrays[f"e{i}_points{a}"] = np.asarray(points, np.int64)
            for precision, values in entry.values.items():
                arrays[f"e{i}_{precision}"] = np.asarray(values, np.float64)
            for precision, residues in entry.residues.items():
                arrays[f"e{i}_{precision}_residues"] = np.asarray(residues, np.float64)
            described.append({"id": entry.id, "key": json.loads(entry.key), "axes": len(entry.points),
                              "precisions": sorted(entry.values), "residues": sorted(entry.residues),
                              "layer": entry.layer})
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        files.write_bytes(path, buffer.getvalue())
        files.write_json(path.with_suffix(".json"), {**self.meta, "format": FORMAT_VERSION, "entries": described})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Table:
        """Reads a table written by :meth:`save`.

        Raises:
            FileNotFoundError: the .npz or its .json is missing.
            TableError: not a tfcompress latency table, or a newer format.
        """
        path = table_path(path)
        meta_path = path.with_suffix(".json")
        for needed in (path, meta_path):
            if not needed.is_file():
                raise FileNotFoundError(f"latency table file {str(needed)!r} does not exist (a table is T.npz + "
                                        "T.json; build one with scripts/latency_table.py)")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise TableError(f"{meta_path} is not JSON: {error}") from error
        if not isinstance(meta, dict) or "entries" not in meta:
            raise TableError(f"{meta_path} is not a tfcompress latency table (no 'entries')")
        if meta.get("format", 0) > FORMAT_VERSION:
            raise TableError(f"{path} has format {meta['format']}; this tfcompress reads up to {FORMAT_VERSION}")
        described = meta.pop("entries")
        entries = []
        with np.load(path, allow_pickle=False) as arrays:
            for i, item in enumerate(described):
                points = tuple(arrays[f"e{i}_points{a}"] for a in range(item["axes"]))
                values = {p: arrays[f"e{i}_{p}"] for p in item["precisions"]}
                residues = {p: arrays[f"e{i}_{p}_residues"] for p in item.get("residues", [])}
                entries.append(Entry(json.dumps(item["key"], sort_keys=True, default=str), points, values,
                                     item.get("layer", ""), residues))
        meta.pop("format", None)
        return cls(entries, meta)

    @classmethod
    def merge(cls, tables: Sequence[Table], force: bool = False) -> Table:
        """One table from several (shards of one build, or tables of several models on one device): measured
        points fill the holes of the others; where two measured the same point, their mean is kept.

        Raises:
            TableError: tables of different devices (unless ``force``), or no table.
        """
        if not tables:
            raise TableError("nothing to merge")
        first = tables[0]
        for table in tables[1:]:
            table.check_device(first.fingerprint, force)
        entries: dict[str, Entry] = {}
        for table in tables:
            for entry in table.entries.values():
                if entry.id not in entries:
                    entries[entry.id] = Entry(entry.key, entry.points, {p: v.copy() for p, v in entry.values.items()},
                                              entry.layer, {p: v.copy() for p, v in entry.residues.items()})
                    continue
                merged = entries[entry.id]
                for precision, values in entry.values.items():
                    merged.values[precision] = _fill(merged.values.get(precision), values)
                for precision, residues in entry.residues.items():
                    merged.residues[precision] = _fill(merged.residues.get(precision), residues)
        meta = dict(first.meta)
        for key in ("overhead_us", "architectures"):
            meta[key] = _merge_dicts([t.meta.get(key, {}) for t in tables])
        meta["precisions"] = sorted({p for t in tables for p in t.precisions})
        meta.pop("shard", None)
        return cls(entries.values(), meta)


@dataclasses.dataclass
class _Plan:
    parts: list[tuple[Unit, Callable[[Sequence[int]], float]]]
    intercept: float
    calibrated: bool
    group_map: dict[int, int]


def _deployed_view(model: keras.Model) -> keras.Model:
    """``model`` as it runs on the device once pruned: compression layers stripped, and ChannelMask layers
    gone (the keep counts given to a cost function say what they remove)."""
    plain = strip(model)
    if not any(isinstance(layer, ChannelMask) for layer in iter_layers(plain)):
        return plain
    return replace_layers(plain, lambda layer: (lambda x, **_: x) if isinstance(layer, ChannelMask) else None,
                          share_weights=True)


def architecture_id(units: Sequence[Unit]) -> str:
    """The same for a model and every channel-pruned version of it (unit keys carry no channel counts)."""
    return hashlib.sha1("|".join(unit.key_id for unit in units).encode()).hexdigest()[:16]


def table_path(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def grid_points(axis: Axis, step: int, max_points: int) -> np.ndarray:
    """Channel counts to measure along an axis: multiples of ``step`` (widened so that there are at most
    ``max_points``), the smallest count and the full size."""
    if axis.size <= axis.smallest:
        return np.asarray([axis.size])
    step = max(step, -(-axis.size // max(1, max_points - 1)))
    points = {axis.smallest, axis.size, *range(step, axis.size, step)}
    return np.asarray(sorted(p for p in points if axis.smallest <= p <= axis.size))


def residue_tops(points: Sequence[np.ndarray], step: int) -> dict[int, int]:
    """Axes whose grid has every multiple of ``step`` up to ``M`` ≥ 2·step (not widened), with their ``M``."""
    tops = {}
    for axis, grid in enumerate(points):
        top = int(grid[-1]) // step * step
        if step > 1 and top >= 2 * step and set(range(step, top + 1, step)) <= set(int(v) for v in grid):
            tops[axis] = top
    return tops


def residue_points(points: Sequence[np.ndarray], step: int) -> dict[tuple[int, int], tuple[int, ...]]:
    """The points measured for :attr:`Entry.residues`: (axis, r) → the axis at ``M − r``, the others full."""
    full = [int(p[-1]) for p in points]
    return {(axis, r): tuple(top - r if a == axis else full[a] for a in range(len(points)))
            for axis, top in residue_tops(points, step).items() for r in range(1, step)}


def _minus(interpolate: Callable[[Sequence[int]], float], overhead: float) -> Callable[[Sequence[int]], float]:
    return lambda values: interpolate(values) - overhead


def _group_map(graph: ChannelGraph, plain: ChannelGraph) -> dict[int, int]:
    """Groups of ``graph`` (the model as pruning sees it, compression layers included) → groups of its stripped
    view, matched through the output layouts of calls with the same name (strip keeps the names)."""
    plain_calls = {call.name: call for call in plain.walk.calls}
    mapping: dict[int, int] = {}
    for call in graph.walk.calls:
        twin = plain_calls.get(call.name)
        if twin is None or len(twin.outputs) != len(call.outputs):
            continue
        for ours, theirs in zip(call.outputs, twin.outputs, strict=True):
            a, b = graph.layout(ours).segments, plain.layout(theirs).segments
            if len(a) == len(b):
                mapping.update({x.group: y.group for x, y in zip(a, b, strict=True)})
    return mapping


def _fill(ours: np.ndarray | None, theirs: np.ndarray) -> np.ndarray:
    if ours is None:
        return theirs.copy()
    both = ~np.isnan(ours) & ~np.isnan(theirs)
    result = np.where(np.isnan(ours), theirs, ours)
    result[both] = (ours[both] + theirs[both]) / 2
    return result


def _merge_dicts(dicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for d in dicts:
        for key, value in d.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = _merge_dicts([merged[key], value])
            else:
                merged.setdefault(key, value)
    return merged
