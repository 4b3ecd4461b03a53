"""The plots the benchmarks and programs draw, in one place: accuracy against latency or size with the Pareto
front marked, channels per group before and after pruning, a latency table's grids, predicted against measured
latency, and training curves.

    plots.accuracy_vs_latency(rows, "compress.png", label="label", group="kind")
    plots.channels_per_group(plan["groups"], "model.keras.png")

Every function takes plain rows (dicts, as the JSON reports hold them) and a path, writes one PNG atomically
(:func:`tfcompress.files.write_png`) and returns the path. matplotlib is imported when a plot is drawn, not with
this module: it is a ``[dev]`` extra, not a dependency of the library; the Agg backend draws without a display.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tfcompress import files

Row = Mapping[str, Any]
# Marker per series (group) in order of first appearance; colours follow matplotlib's cycle C0, C1, ...
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
FRONT_COLOR = "tab:red"


def require_matplotlib() -> None:
    """Raises a one-line ImportError when matplotlib is missing: programs call it before any long work."""
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install matplotlib (or the dev extra: "
                          "pip install -e '.[dev]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    figure.tight_layout()
    try:
        return files.write_png(path, figure)
    finally:
        plt.close(figure)  # benchmarks draw many figures in one process


def _number(row: Row, key: str) -> float | None:
    value = row.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


# ------------------------------------------------------------------------------ accuracy against cost


def pareto_front(rows: Sequence[Row], x: str, y: str) -> list[Row]:
    """The rows no other row beats: none has ``x`` as low or lower *and* ``y`` as high or higher with one of them
    strictly better (lower latency or size, higher accuracy). Rows tied on both stay (neither beats the other);
    rows without a finite number in ``x`` or ``y`` are left out. Returned by increasing ``x`` (then decreasing
    ``y``), in input order among ties.
    """
    points = [(row, _number(row, x), _number(row, y)) for row in rows]
    points = [(row, px, py) for row, px, py in points if px is not None and py is not None]

    def beaten(px: float, py: float) -> bool:
        return any(qx <= px and qy >= py and (qx < px or qy > py) for _, qx, qy in points)

    front = [(row, px, py) for row, px, py in points if not beaten(px, py)]
    front.sort(key=lambda item: (item[1], -item[2]))  # stable: input order among ties
    return [row for row, _, _ in front]


def _tradeoff_axes(ax: Any, rows: Sequence[Row], *, x: str, y: str, label: str | None, group: str | None,
                   x_scale: float, y_scale: float, xlabel: str, ylabel: str,
                   vlines: Mapping[str, float] | None, connect: bool = False, log_x: bool = False) -> None:
    """One scatter of ``y`` against ``x``: a marker per ``group``, a label per point, the Pareto front as a step
    line (at a given cost, the best accuracy any point at that cost or less reaches) and ringed points."""
    if connect:  # the order of the rows is a path (a recipe's stages): show it
        placed = [row for row in rows if _number(row, x) is not None and _number(row, y) is not None]
        ax.plot([x_scale * row[x] for row in placed], [y_scale * row[y] for row in placed], "-", color="gray",
                lw=0.8, alpha=0.7, zorder=1)
    series: dict[Any, list[Row]] = {}
    for row in rows:
        if _number(row, x) is not None and _number(row, y) is not None:
            series.setdefault(row.get(group) if group else None, []).append(row)
    placed = [x_scale * row[x] for members in series.values() for row in members]
    # labels of points in the right half go to their left, so that they stay inside the axes
    middle = (min(placed) + max(placed)) / 2 if placed else 0.0
    if log_x and placed and min(placed) > 0:
        middle = math.sqrt(min(placed) * max(placed))
    for i, (name, members) in enumerate(series.items()):
        ax.scatter([x_scale * row[x] for row in members], [y_scale * row[y] for row in members],
                   marker=MARKERS[i % len(MARKERS)], color=f"C{i % 10}", s=36, zorder=3,
                   label=None if name is None else str(name))
        for row in members:
            if label and row.get(label) is not None:
                left = x_scale * row[x] > middle
                ax.annotate(str(row[label]), (x_scale * row[x], y_scale * row[y]), textcoords="offset points",
                            xytext=(-6 if left else 6, 4), ha="right" if left else "left", fontsize=7)
    front = pareto_front(rows, x, y)
    if front:
        xs, ys = [x_scale * row[x] for row in front], [y_scale * row[y] for row in front]
        ax.step(xs, ys, where="post", color=FRONT_COLOR, lw=1.2, alpha=0.8, zorder=2)
        ax.scatter(xs, ys, s=130, facecolors="none", edgecolors=FRONT_COLOR, lw=1.4, zorder=4,
                   label="Pareto front")
    for name, value in (vlines or {}).items():
        ax.axvline(x_scale * value, color="k", ls=":", lw=0.8, label=name)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def accuracy_vs_latency(
    rows: Sequence[Row],
    path: str | os.PathLike,
    *,
    x: str = "latency_ms",
    y: str = "accuracy",
    label: str | None = "name",
    group: str | None = None,
    title: str = "accuracy vs latency",
    xlabel: str = "latency, ms",
    ylabel: str = "top-1 accuracy, %",
    x_scale: float = 1.0,
    y_scale: float = 100.0,
    vlines: Mapping[str, float] | None = None,
    connect: bool = False,
) -> Path:
    """Accuracy (``y``, a fraction shown ×``y_scale``) against latency (``x``): a labelled point per row, a marker
    per value of ``group``, the Pareto front (lower latency, higher accuracy) as a step line and ringed points.

    Args:
        rows: dicts holding ``x``, ``y`` and (for the point's text) ``label``; rows without numbers are skipped.
        vlines: name → ``x`` value of vertical lines (a latency target), in the rows' unit.
        connect: join the points in row order (the stages of a recipe).
    """
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(7.5, 4.8))
    _tradeoff_axes(ax, rows, x=x, y=y, label=label, group=group, x_scale=x_scale, y_scale=y_scale, xlabel=xlabel,
                   ylabel=ylabel, vlines=vlines, connect=connect)
    ax.set_title(title, fontsize=10)
    return _save(figure, path)


def accuracy_vs_size(
    rows: Sequence[Row],
    path: str | os.PathLike,
    *,
    x: str = "gzip_bytes",
    y: str = "accuracy",
    label: str | None = "name",
    group: str | None = None,
    title: str = "accuracy vs size",
    xlabel: str = "gzip size, KB",
    ylabel: str = "top-1 accuracy, %",
    x_scale: float = 1 / 1024,
    y_scale: float = 100.0,
    log_x: bool = False,
) -> Path:
    """Accuracy against a size (by default the gzipped ``.tflite`` in bytes, shown in KB), with the Pareto front
    (smaller, more accurate) marked as in :func:`accuracy_vs_latency`; ``log_x`` for sizes that span orders of
    magnitude (float32 against ternary)."""
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(7.5, 4.8))
    _tradeoff_axes(ax, rows, x=x, y=y, label=label, group=group, x_scale=x_scale, y_scale=y_scale, xlabel=xlabel,
                   ylabel=ylabel, vlines=None, log_x=log_x)
    ax.set_title(title, fontsize=10)
    return _save(figure, path)


def accuracy_vs_latency_and_size(
    rows: Sequence[Row],
    path: str | os.PathLike,
    *,
    latency: str = "latency_ms",
    size: str = "gzip_bytes",
    y: str = "accuracy",
    label: str | None = "name",
    group: str | None = None,
    title: str = "accuracy vs latency and size",
    latency_label: str = "latency, ms",
    size_label: str = "gzip size, KB",
    ylabel: str = "top-1 accuracy, %",
) -> Path:
    """:func:`accuracy_vs_latency` and :func:`accuracy_vs_size` side by side in one PNG, each with its own
    Pareto front (a variant can be on one and not the other)."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    common = {"y": y, "label": label, "group": group, "y_scale": 100.0, "ylabel": ylabel, "vlines": None}
    _tradeoff_axes(left, rows, x=latency, x_scale=1.0, xlabel=latency_label, **common)
    _tradeoff_axes(right, rows, x=size, x_scale=1 / 1024, xlabel=size_label, **common)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


# ------------------------------------------------------------------------------ channels


def channels_per_group(groups: Sequence[Row], path: str | os.PathLike, *, title: str = "channels per group"
                       ) -> Path:
    """Bars of every channel group's count before and after pruning (a pruning plan's or ``prune.py``'s
    ``OUTPUT.json`` ``groups``: ``name``, ``channels_before``, ``channels_after``).

    Raises:
        ValueError: no groups, or a group without ``channels_before`` / ``channels_after``.
    """
    if not groups:
        raise ValueError("channels_per_group: no groups to draw")
    missing = [group.get("name", i) for i, group in enumerate(groups)
               if "channels_before" not in group or "channels_after" not in group]
    if missing:
        raise ValueError(f"channels_per_group: groups {missing} lack channels_before/channels_after "
                         "(expected a pruning plan's groups)")
    plt = _pyplot()
    n = len(groups)
    figure, ax = plt.subplots(figsize=(min(30.0, max(6.0, 0.32 * n + 2)), 4.5))  # wide enough for the names
    positions = list(range(n))
    before = [group["channels_before"] for group in groups]
    after = [group["channels_after"] for group in groups]
    ax.bar(positions, before, width=0.8, color="lightgray", edgecolor="gray", label="before")
    ax.bar(positions, after, width=0.5, color="C0", label="after")
    ax.set_xticks(positions)
    ax.set_xticklabels([str(group.get("name", i)) for i, group in enumerate(groups)], rotation=90,
                       fontsize=7 if n <= 40 else 5)
    ax.set_ylabel("channels")
    kept = sum(after) / max(1, sum(before))
    ax.set_title(f"{title} ({sum(before):,} → {sum(after):,} channels, {kept:.0%} kept)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, path)


# ------------------------------------------------------------------------------ latency tables


def latency_table_heatmap(table: Any, path: str | os.PathLike, *, precision: str = "float32",
                          max_entries: int = 6) -> Path:
    """The measured grids of a latency table (:class:`tfcompress.latency.Table`, or the path of its ``T.npz``):
    one panel per entry, the ``max_entries`` slowest first; a two-axis grid as a heatmap of µs over the channel
    counts, a one-axis grid as a line (more axes: the first two, the others at their largest count).

    Raises:
        ValueError: the table has no ``precision`` grid with more than one point.
    """
    if isinstance(table, (str, os.PathLike)):
        from tfcompress.latency import Table

        table = Table.load(table)
    import numpy as np

    entries = []
    for entry in table.entries.values():
        if precision not in entry.values or not any(len(p) > 1 for p in entry.points):
            continue
        values = np.asarray(entry.values[precision], float).reshape([len(p) for p in entry.points])
        if np.isnan(values).all():
            continue
        entries.append((float(np.nanmax(values)), entry.id, entry, values))
    if not entries:
        raise ValueError(f"the table has no {precision} grid with more than one point to draw")
    entries.sort(key=lambda item: (-item[0], item[1]))  # slowest first; the id breaks ties
    entries = entries[:max_entries]
    plt = _pyplot()
    columns = min(3, len(entries))
    rows = math.ceil(len(entries) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.9 * rows), squeeze=False)
    for ax in axes.flat[len(entries):]:
        ax.set_visible(False)
    for ax, (_, _, entry, values) in zip(axes.flat, entries, strict=False):
        varying = [i for i, p in enumerate(entry.points) if len(p) > 1]
        # other axes at their largest count: the slice the unpruned model sits in
        index = tuple(slice(None) if i in varying[:2] else len(p) - 1 for i, p in enumerate(entry.points))
        grid = values[index]
        if len(varying) == 1:
            ax.plot(entry.points[varying[0]], grid, "-o", ms=3)
            ax.set_xlabel(f"channels (axis {varying[0] + 1})")
            ax.set_ylabel("µs")
            ax.grid(alpha=0.3)
        else:
            rows_axis, cols_axis = entry.points[varying[0]], entry.points[varying[1]]
            image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
            _ticks(ax.set_yticks, ax.set_yticklabels, rows_axis)
            _ticks(ax.set_xticks, ax.set_xticklabels, cols_axis)
            ax.set_ylabel(f"channels (axis {varying[0] + 1})")
            ax.set_xlabel(f"channels (axis {varying[1] + 1})")
            figure.colorbar(image, ax=ax, label="µs")
        ax.set_title(f"{entry.layer or entry.key_id} ({precision})", fontsize=8)
    device = table.fingerprint.get("device") if hasattr(table, "fingerprint") else None
    figure.suptitle(f"latency table{f' of {device}' if device else ''}: the {len(entries)} slowest entries",
                    fontsize=10)
    return _save(figure, path)


def _ticks(set_ticks: Any, set_labels: Any, points: Sequence[int], most: int = 8) -> None:
    step = max(1, math.ceil(len(points) / most))
    positions = list(range(0, len(points), step))
    set_ticks(positions)
    set_labels([str(int(points[i])) for i in positions], fontsize=7)


def predicted_vs_measured(
    panels: Mapping[str, Sequence[Row]],
    path: str | os.PathLike,
    *,
    measured: str = "measured_us",
    predicted: str = "predicted_us",
    series: str = "series",
    scale: float = 1e-3,
    unit: str = "ms",
    tolerance: float = 0.1,
) -> Path:
    """Predicted against measured latency, one panel per title in ``panels``: a marker per ``series`` (a row may
    set its own ``marker``), the diagonal, and lines at ±``tolerance`` (relative error).

    Args:
        panels: title → rows holding ``measured``, ``predicted`` and ``series``.
        scale: multiplies both values (µs → ms by default) to give ``unit``.
    """
    if not panels:
        raise ValueError("predicted_vs_measured: no panels to draw")
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (title, rows) in zip(axes[0], panels.items(), strict=True):
        by_series: dict[Any, list[Row]] = {}
        for row in rows:
            by_series.setdefault(row.get(series), []).append(row)
        for name, members in by_series.items():
            ax.scatter([scale * row[measured] for row in members], [scale * row[predicted] for row in members],
                       marker=members[0].get("marker", "o"), s=18, label=None if name is None else str(name))
        low, high = ax.get_xlim()
        ax.plot([low, high], [low, high], "k--", lw=0.8)
        for factor in (1 + tolerance, 1 - tolerance):
            ax.plot([low, high], [factor * low, factor * high], "k:", lw=0.6)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"measured {unit}")
        ax.set_ylabel(f"predicted {unit}")
        ax.legend(fontsize=8)
    return _save(figure, path)


# ------------------------------------------------------------------------------ training


def training_curves(
    history: Mapping[str, Any],
    path: str | os.PathLike,
    keys: Sequence[str] | None = None,
    *,
    title: str = "training",
    marks: Mapping[str, float] | None = None,
) -> Path:
    """One panel per key of per-epoch values (``ternary_sparsity``, ``val_accuracy``, ...), against the epoch.

    Args:
        history: a Keras history (key → one value per epoch), or run name → such a history to overlay runs.
        keys: the keys to draw, in order (default: every key with a list of numbers, sorted).
        marks: name → epoch of vertical lines (e.g. where EC2T's retrain phase starts), 1-based.

    Raises:
        ValueError: no key to draw.
    """
    single = all(isinstance(value, (list, tuple)) for value in history.values())
    runs: Mapping[str, Mapping[str, Any]] = {"": history} if single else history
    found = sorted({key for run in runs.values() for key, values in run.items()
                    if isinstance(values, (list, tuple)) and values
                    and all(isinstance(v, (int, float)) for v in values)})
    keys = list(keys) if keys is not None else found
    keys = [key for key in keys if key in found]
    if not keys:
        raise ValueError(f"training_curves: nothing to draw; per-epoch keys found: {found or 'none'}")
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys) + 1, 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for name, run in runs.items():
            values = run.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, "-o", ms=3, label=name or None)
        for name, epoch in (marks or {}).items():
            ax.axvline(epoch, color="k", ls=":", lw=0.8, label=name)
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
        if not single or marks:
            ax.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)
