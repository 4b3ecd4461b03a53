"""A latency budget in one call: *this model, at most X ms on that device, at most D points lost*.

    result = tfcompress.pipeline.compress(model, context, latency_fraction=0.5, max_accuracy_drop=1.0,
                                          folder="runs/r20_half", measurement=Measurement(device="litert"))
    result.tflite, result.met, result.message

1. The model is measured on the device in float32 and int8 (latency, and LiteRT accuracy of each).
2. The precision is chosen by measurement, not belief: int8 when its accuracy loss fits the budget and it runs
   at most :data:`INT8_MARGIN` of float32's time side by side, else float32 (int8 is slower than float32 on
   some hosts, and a tie within the noise is not worth its accuracy; ``precision=`` overrides).
3. The device's latency table at that precision is loaded (``table_path``, if it was measured on this device)
   or built and saved there. When the table says pruning cannot reach the budget at that precision (its floor,
   every group at one channel, corrected by this model's measured time, is above it — int8 kernels with a large
   fixed cost per operator), float32 is tried next.
4. The table is corrected by what this model measures on this device before any training: architectures
   pruned (l1, or uniform for ``method="uniform"``) to the table's view of the target, untrained, are exported
   and measured side by side with the original until one lands within the noise of the target (at most
   :data:`MAX_PROBES`; seconds each, where a trained round takes minutes). Measured time as a function of the
   predicted time, piecewise linear through every architecture measured (:class:`_Curve`), replaces the table's
   own scale: tables of mobile models over-predict small variants by a near-constant offset that no single
   ratio describes.
5. A round prunes the *original* model to the corrected table's view of the target (``method``: latency-aware
   Fisher by default, the best of ``benchmarks/results/netadapt.md``; netadapt, l1 or uniform), fine-tunes it
   with distillation from the original, exports it and **measures it on the device**; its point joins the
   curve. Every aim keeps a margin of the measurement's noise (how much the interleaved passes disagree). When
   a round misses the time, the next aims at an architecture the corrected table says is faster by the miss
   plus the noise — strictly faster than the one measured, so no round repeats an architecture; when it meets
   the time but loses too much accuracy, the next aims slower only while the corrected table says a slower one
   still fits and it lies between architectures already measured (``max_rounds``).
6. The result is the last round's model when it meets both limits; otherwise the round with the best
   latency among those within the accuracy limit (or the most accurate), and ``message`` says what was not met,
   which limit held it back and what would meet it.

Every round is a recipe run by :func:`tfcompress.pipeline.run_recipe` in ``folder/round_N`` (resumable stage by
stage); the probes go to ``folder/probes``; ``folder`` also gets ``model.keras``, ``model.tflite``, ``recipe.json``
(the recipe that reproduces the result from the input model), ``budget.json`` (with every probe) and
``summary.md/.json/.png`` (every round, side by side).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress import export, files, latency, resolution
from tfcompress.graph import ChannelGraph
from tfcompress.pipeline.recipe import Recipe
from tfcompress.pipeline.run import Measurement, calibration_images, judged, run_recipe, write_summary
from tfcompress.pipeline.stages import Context
from tfcompress.pruning import channels

BUDGET_METHODS = ("fisher", "netadapt", "l1", "uniform")
#: int8 is chosen when it takes at most this fraction of float32's time (measured side by side; runs of one
#: model differ by a few percent)
INT8_MARGIN = 0.95
#: the least and the most relative noise an aim allows for: interleaved passes on one host agree within ~1 %
#: at best; past 10 % the measurement, not the aim, is what needs fixing (more runs, a quiet device)
MIN_NOISE, MAX_NOISE = 0.01, 0.10
#: untrained architectures measured at most before the first round (each: prune, export, measure — seconds)
MAX_PROBES = 4


@dataclasses.dataclass
class BudgetResult:
    """The chosen model and ``.tflite``, the recipe reproducing it, every measured row, and whether the budget
    was met (``met``; ``message`` says how, or what was missed)."""

    model: keras.Model
    tflite: Path
    recipe: Recipe
    rows: list[dict[str, Any]]
    target_ms: float
    precision: str
    met: bool
    message: str
    table_path: Path | None = None
    probes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    input_sizes: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    input_size: int | None = None


def compress(
    model: keras.Model,
    context: Context,
    *,
    folder: str | Path,
    latency_ms: float | None = None,
    latency_fraction: float | None = None,
    max_accuracy_drop: float = 1.0,
    max_output_error: float | None = None,
    measurement: Measurement | None = None,
    method: str = "fisher",
    precision: str = "auto",
    table_path: str | Path | None = None,
    finetune_epochs: int = 1,
    lr: float = 0.01,
    alpha: float = 0.1,
    temperature: float = 5.0,
    max_rounds: int = 3,
    fisher_steps: int | None = None,
    fisher_prune_every: int = 10,
    input_size: int | str | None = None,
) -> BudgetResult:
    """Compresses ``model`` to a measured latency budget within an accuracy limit (see the module docstring).

    Args:
        latency_ms / latency_fraction: the budget, in ms on the device or as a fraction of the model's measured
            float32 latency (one of them).
        max_accuracy_drop: the accuracy the result may lose, in points (1.0 = one point of top-1 %), measured in
            LiteRT against the float32 original on the same test images.
        max_output_error: instead, for a model whose targets are its own outputs (several heads, or images
            without labels for a model that is not a classifier): the output error of the worst head the result
            may reach in LiteRT (RMS of the difference over the original's spread: 0.05 is 5 % of it).
        method: how to prune to the table's prediction: fisher (latency-aware), netadapt, l1 or uniform; l1 or
            uniform when the targets are the original's outputs (the others score channels by a class loss).
        precision: "auto" (chosen by measurement), "float32" or "int8".
        table_path: where the device's latency table is read from, or written to when it does not exist;
            ``{precision}`` in it is replaced by the chosen precision (default
            ``folder/latency_table_{precision}.npz``).
        finetune_epochs, lr, alpha, temperature: the distillation fine-tune of every round.
        fisher_steps: Fisher pruning's training steps at most (default: as many as it needs).
        fisher_prune_every: Fisher pruning's steps between two prunes (the thesis's 100 is slow on a small
            machine; 10–20 lost nothing in benchmarks/results/netadapt.md).
        input_size: run the network on fewer pixels behind a ``Resizing`` layer that keeps the model's input
            (:mod:`tfcompress.resolution`): a size in px, or "auto" — the largest size on a ladder down to half the
            input (:func:`_size_ladder`) whose unpruned model measures within the budget, else the smallest, with
            channels pruned for the rest. None (default): the resolution stays.

    Raises:
        ValueError: bad arguments (before any work).
    """
    if (latency_ms is None) == (latency_fraction is None):
        raise ValueError("give exactly one budget: latency_ms (on the device) or latency_fraction (of the model's "
                         "measured float32 latency)")
    budget = latency_ms if latency_ms is not None else latency_fraction
    if not budget or budget <= 0 or (latency_fraction is not None and latency_fraction >= 1):
        raise ValueError(f"the latency budget must be > 0 ms, or a fraction in (0, 1); got {budget}")
    if method not in BUDGET_METHODS:
        raise ValueError(f"method must be one of {', '.join(BUDGET_METHODS)}, got {method!r}")
    if precision not in ("auto", "float32", "int8"):
        raise ValueError(f"precision must be auto, float32 or int8, got {precision!r}")
    if max_accuracy_drop < 0 or max_rounds < 1 or finetune_epochs < 1:
        raise ValueError(f"need max_accuracy_drop ≥ 0, max_rounds ≥ 1, finetune_epochs ≥ 1; got "
                         f"{max_accuracy_drop}, {max_rounds}, {finetune_epochs}")
    limit = _Limit.of(context, max_accuracy_drop, max_output_error, method)
    max_accuracy_drop = limit.points
    if input_size is not None:
        if input_size != "auto" and not (isinstance(input_size, int) and input_size > 0):
            raise ValueError(f"input_size is a size in px or 'auto', got {input_size!r}")
        height, width = resolution.image_size(model)
        if height != width:
            raise ValueError(f"input_size resizes square inputs; {model.name!r} takes {height}×{width} px")
        if input_size == "auto" and not _size_ladder(height):
            raise ValueError(f"input_size='auto' needs an input of at least 16 px; {model.name!r} takes {height} px")
        if input_size != "auto":  # refused now (too large, a network tied to its size), not after the base runs
            resolution.rescale_input(model, input_size)
    measurement = measurement or Measurement()
    folder = files.check_output_folder(folder)
    table_path = Path(table_path) if table_path is not None else None

    # 1–2. the model as it is, in both precisions; the precision by measurement
    base = run_recipe(model, [{"stage": "quantize", "precision": "int8"}], context, folder / "base", measurement)
    by_precision = {"float32": base.rows[0], "int8": base.rows[1]}
    exported = {"float32": base.folder / "00_original" / "model.tflite",
                "int8": base.folder / "01_quantize" / "model.tflite"}
    # latencies compared as ratios measured side by side (interleaved passes), never across separate runs
    side_by_side, noise = _measured_once(base.folder, {"base": True}, list(exported.values()), measurement)
    for precision_name, ms in zip(by_precision, side_by_side, strict=True):
        by_precision[precision_name]["latency_ms"] = round(ms, 4)
    reference = by_precision["float32"]
    target_ms = latency_ms if latency_ms is not None else latency_fraction * reference["latency_ms"]
    drop = {p: limit.lost(row, reference) for p, row in by_precision.items()}
    candidates = [precision] if precision != "auto" else _precision_order(
        {p: row["latency_ms"] for p, row in by_precision.items()}, drop, max_accuracy_drop)
    precision = candidates[0]
    context.say(f"budget {target_ms:.3f} ms on {reference['host'].get('device')}: float32 "
                f"{by_precision['float32']['latency_ms']:.3f} ms, int8 {by_precision['int8']['latency_ms']:.3f} ms "
                f"(LiteRT {limit.describe(drop['int8'])}) → {precision}")
    rows = [dict(reference, stage="original"), dict(by_precision["int8"], stage="original int8")]
    start_ms = by_precision[precision]["latency_ms"]
    if start_ms <= target_ms and drop[precision] <= max_accuracy_drop:
        recipe = Recipe.parse([{"stage": "quantize", "precision": precision}])
        return _finish(folder, base.model, exported[precision], recipe, rows, target_ms, precision, True,
                       f"the model already meets the budget in {precision}: {start_ms:.3f} ms")

    # 3. the input resolution, when asked: the network on fewer pixels, measured side by side with the original
    network, resize, sizes = model, [], []
    if input_size is not None:
        size, start_ms, sizes, noise = _input_size(model, input_size, precision, context, folder / "resolution",
                                                   exported["float32"], reference["latency_ms"], target_ms,
                                                   measurement)
        network, resize = resolution.rescale_input(model, size), [{"stage": "resize_input", "size": size}]
        candidates = [precision]  # measured at this precision only

    # 4. the device's latency table at that precision; the next precision when pruning cannot reach the budget in
    # this one (int8 ResNet-20 on a VNNI host: the table's floor, every group at one channel, is 0.97× the model).
    # None needed when fewer pixels alone meet the time: the rounds then only fine-tune.
    table_template = str(table_path if table_path is not None else folder / "latency_table_{precision}.npz")
    if resize:
        table_template = str(Path(table_template).with_suffix("")) + f"_at_{resize[0]['size']}px.npz"
    unpruned_ms = {precision: start_ms}
    if input_size is None:
        unpruned_ms = {name: row["latency_ms"] for name, row in by_precision.items()}

    def reach(precision_name: str) -> tuple[latency.Table, Path, float]:
        path = Path(table_template.format(precision=precision_name))
        table = latency.load_or_build_table(network, latency.open_device(measurement.device), path,
                                            precision_name, threads=measurement.threads, say=context.say,
                                            progress=context.progress is not None)
        floor = _floor_fraction(network, table, precision_name)
        return table, path, floor * unpruned_ms[precision_name]

    probes: list[dict[str, Any]] = []
    if start_ms <= target_ms:
        table, table_path, aims, aim = None, None, _Aims(target_ms, start_ms, 1.0, measured_full_ms=start_ms), 1.0
        aims.stop_reason = ("the unpruned network already meets the time: one round fine-tunes it, none prunes "
                            "channels")
    else:
        precision, (table, table_path, floor_ms) = _reachable_precision(candidates, reach, target_ms, context.say)
        start_ms = unpruned_ms[precision]
        predicted_full = table.predict(network, precision).total_us / 1000
        context = dataclasses.replace(context, table=table)

        # 5. the table corrected by untrained architectures measured side by side with the original
        aims = _Aims(target_ms, predicted_full, floor_ms / start_ms, measured_full_ms=start_ms)
        probes, noise = _probe(network, context, table, precision, method, aims, noise, folder / "probes",
                               exported["float32"], reference["latency_ms"], measurement)
        # the first round at the probe that landed, if one did (l1 and uniform then train the architecture measured)
        aim = probes[-1]["aim"] if probes and probes[-1]["landed"] else aims.first(noise)

    # 6. rounds: prune the original to the corrected table's view of the target, distil, measure, correct, aim again
    best: tuple[dict[str, Any], Any, Recipe] | None = None
    for number in range(1, max_rounds + 1):
        prune = []
        if aim < 1.0:
            prune = [{"stage": "prune", "method": method, "target_latency": round(float(aim), 4),
                      "precision": precision}]
            if method == "fisher":
                prune[0]["prune_every"] = fisher_prune_every
                if fisher_steps is not None:
                    prune[0]["steps"] = fisher_steps
        stages = [*resize, *prune, {"stage": "distill", "epochs": finetune_epochs, "lr": lr, "alpha": alpha,
                                    "temperature": temperature}]
        if precision == "int8":
            stages.append({"stage": "quantize", "precision": "int8"})
        recipe = Recipe.parse(stages)
        run = run_recipe(model, recipe, context, folder / f"round_{number}", measurement)
        changes = " + ".join(step["stage"] for step in run.rows[1:len(resize) + len(prune) + 1])
        row = dict(run.rows[-1], stage=f"round {number}: {changes + ' + ' if changes else ''}distill"
                   + (" + int8" if precision == "int8" else ""))
        row["round_drop_points"] = round(limit.lost(row, reference), 3)
        row["seconds"] = round(sum(step["seconds"] for step in run.rows[1:]), 1)
        (original_ms, round_ms), noise = _measured_once(run.folder, recipe.to_list(),
                                                        [exported["float32"], run.tflite], measurement)
        row["ratio_to_float32"] = round(round_ms / original_ms, 4)  # side by side with the original
        row["latency_ms"] = round(row["ratio_to_float32"] * reference["latency_ms"], 4)  # on the base's scale
        row["predicted_ms"] = (None if table is None else
                               round(table.predict(run.model, precision).total_us / 1000, 4))
        row["architecture"] = _architecture(run.model)
        rows.append(row)
        context.say(f"round {number}: aimed at {aim:.3f}× ({aim * aims.predicted_full_ms:.3f} ms predicted), got "
                    f"{row['predicted_ms'] or start_ms:.3f} ms predicted, measured {row['latency_ms']:.3f} ms ± "
                    f"{100 * noise:.1f} % (budget {target_ms:.3f}), LiteRT {judged(row)} "
                    f"({limit.describe(row['round_drop_points'])})")
        if best is None or _better(row, best[0], max_accuracy_drop):
            best = (row, run, recipe)
        fast, accurate = row["latency_ms"] <= target_ms, row["round_drop_points"] <= max_accuracy_drop
        if fast and accurate:
            break
        if not fast and not accurate:
            aims.stop_reason = "too slow and too inaccurate at once: pruning further cannot mend both"
            break
        if table is None:  # the one round of a network that needs no pruning
            break
        aim = aims.next(row["predicted_ms"], row["latency_ms"], fast, noise)
        if aim is None:
            break
    else:
        aims.stop_reason = f"max_rounds={max_rounds} spent"

    row, run, recipe = best
    fast = row["latency_ms"] <= target_ms
    accurate = row["round_drop_points"] <= max_accuracy_drop
    if fast and accurate:
        message = (f"met: {row['latency_ms']:.3f} ms ≤ {target_ms:.3f} ms, {limit.describe(row['round_drop_points'])} "
                   f"(limit {limit.describe(max_accuracy_drop)})")
    else:
        missed = [f"latency {row['latency_ms']:.3f} ms > {target_ms:.3f} ms" if not fast else "",
                  f"{limit.describe(row['round_drop_points'])} beyond the limit of "
                  f"{limit.describe(max_accuracy_drop)}" if not accurate else ""]
        message = (f"NOT met in {len(rows) - 2} round(s): {'; '.join(m for m in missed if m)}. Best reached: "
                   f"{row['latency_ms']:.3f} ms at {limit.describe(row['round_drop_points'])} ({row['stage']}). "
                   f"Stopped: {aims.stop_reason}. {_advice(row, target_ms, limit, precision, input_size)}")
    return _finish(folder, run.model, run.tflite, recipe, rows, target_ms, precision, fast and accurate, message,
                   table_path, probes, sizes)


def _probe(model: keras.Model, context: Context, table: latency.Table, precision: str, method: str, aims: _Aims,
           noise: float, folder: Path, original: Path, original_ms: float, measurement: Measurement
           ) -> tuple[list[dict[str, Any]], float]:
    """Untrained architectures at the aim, each exported and measured side by side with the ``original`` file,
    until one lands within the noise of the target (``landed``), the aim repeats an architecture or
    :data:`MAX_PROBES` are spent; every point teaches ``aims`` the measured time of the table's prediction.
    Returns the probes (one dict each) and the last measurement's noise."""
    probes: list[dict[str, Any]] = []
    seen: set[str] = set()
    importance = "uniform" if method == "uniform" else "l1"  # instant; latency does not depend on the weights
    cost = table.cost_fn(model, precision)
    for number in range(1, MAX_PROBES + 1):
        aim = round(float(aims.first(noise)), 4)
        pruned = channels.prune_channels(model, importance, cost_fn=cost, target_latency=aim).model
        architecture = _architecture(pruned)
        if architecture in seen:
            break
        seen.add(architecture)
        path = folder / f"probe_{number}.tflite"
        _export_untrained(pruned, precision, path, context, measurement)
        (measured,), noise = _beside_original(folder / f"probe_{number}", {"aim": aim, "method": importance},
                                              original, original_ms, [path], measurement)
        predicted = table.predict(pruned, precision).total_us / 1000
        aims.learn(predicted, measured)
        landed = abs(measured - aims.target_ms * (1 - noise)) <= noise * aims.target_ms
        probes.append({"aim": aim, "predicted_ms": round(predicted, 4), "latency_ms": round(measured, 4),
                       "architecture": architecture, "landed": landed})
        context.say(f"probe {number} ({importance}, untrained): aimed at {aim:.3f}× of the table, predicted "
                    f"{predicted:.3f} ms, measured {measured:.3f} ms ± {100 * noise:.1f} % (budget "
                    f"{aims.target_ms:.3f} ms){': landed' if landed else ''}")
        if landed:
            break
    return probes, noise


def _export_untrained(model: keras.Model, precision: str, path: Path, context: Context,
                      measurement: Measurement) -> None:
    """``model`` exported at ``precision`` to be timed, not judged: int8 calibrated on 8 images (latency does not
    depend on the ranges)."""
    calibration = ({"representative_data": calibration_images(context, measurement), "num_calibration_samples": 8}
                   if precision == "int8" else {})
    export.to_tflite(model, precision, output=path, **calibration)


def _beside_original(folder: Path, key: Any, original: Path, original_ms: float, paths: list[Path],
                     measurement: Measurement) -> tuple[list[float], float]:
    """The latency of every file of ``paths`` measured side by side with the ``original`` file
    (:func:`_measured_once`), on the scale of the original's ``original_ms``, and the measurement's noise."""
    (reference_ms, *measured), noise = _measured_once(folder, key, [original, *paths], measurement)
    return [ms / reference_ms * original_ms for ms in measured], noise


def _measured_once(folder: Path, key: Any, paths: list[Path], measurement: Measurement
                   ) -> tuple[list[float], float]:
    """``Device.side_by_side`` of ``paths`` and the measurement's relative noise (:func:`_noise`), saved in
    ``folder/side_by_side.json`` and read back on a rerun with the same ``key``: the next round's aim follows from
    them, so a resumed run must see the numbers the first one saw."""
    saved_path = folder / "side_by_side.json"
    try:
        saved = json.loads(saved_path.read_text())
        if saved["key"] == json.loads(json.dumps(key)):
            by_pass = [[float(ms) for ms in one_pass] for one_pass in saved["passes"]]
            return _medians(by_pass), _noise(by_pass)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    by_pass = latency.open_device(measurement.device).side_by_side_passes(paths, threads=measurement.threads,
                                                                         runs=measurement.runs)
    files.write_json(saved_path, {"key": key, "passes": by_pass, "ms": _medians(by_pass)})
    return _medians(by_pass), _noise(by_pass)


def _medians(by_pass: list[list[float]]) -> list[float]:
    return [float(np.median(column)) for column in zip(*by_pass, strict=True)]


def _noise(by_pass: list[list[float]]) -> float:
    """How much the interleaved passes disagree on the last model's time relative to the first's: half the range
    of the per-pass ratios over their median, within [:data:`MIN_NOISE`, :data:`MAX_NOISE`]."""
    ratios = [one_pass[-1] / one_pass[0] for one_pass in by_pass if one_pass[0] > 0]
    if len(ratios) < 2:
        return MIN_NOISE
    spread = (max(ratios) - min(ratios)) / 2 / float(np.median(ratios))
    return float(min(MAX_NOISE, max(MIN_NOISE, spread)))


class _Curve:
    """The measured time of a predicted time, for one model on one device: piecewise linear through every
    architecture measured (made non-decreasing: a faster prediction never expects a slower time), proportional
    (through the origin) beyond the fastest and the slowest point; one point is a plain ratio. MobileNetV2's
    float32 table at 96 px over-predicts small variants by a near-constant offset (an almost empty variant
    predicted 0.193 ms, measured 0.106; the full model 0.386 / 0.378): a ratio taken at either end misses the
    middle by a third."""

    def __init__(self, predicted_ms: float, measured_ms: float):
        self.points: list[tuple[float, float]] = []
        self.add(predicted_ms, measured_ms)

    def add(self, predicted_ms: float, measured_ms: float) -> None:
        self.points.append((float(predicted_ms), float(measured_ms)))

    def _monotone(self) -> tuple[np.ndarray, np.ndarray]:
        ordered = sorted(self.points)
        predicted = np.array([p for p, _ in ordered])
        return predicted, np.maximum.accumulate([m for _, m in ordered])

    def predicted_for(self, measured_ms: float) -> float:
        """The predicted time expected to measure ``measured_ms``; among equal expectations, the fastest."""
        predicted, measured = self._monotone()
        if measured_ms <= measured[0]:
            return measured_ms * predicted[0] / measured[0]
        if measured_ms >= measured[-1]:
            return measured_ms * predicted[-1] / measured[-1]
        upper = int(np.searchsorted(measured, measured_ms))  # measured[upper - 1] < measured_ms <= measured[upper]
        share = (measured_ms - measured[upper - 1]) / (measured[upper] - measured[upper - 1])
        return float(predicted[upper - 1] + share * (predicted[upper] - predicted[upper - 1]))


class _Aims:
    """Where the next round aims, as a fraction of the table's prediction of the unpruned model.

    The expected time of a prediction comes from a :class:`_Curve` through every architecture measured: the
    unpruned model (``measured_full_ms``), the probes, the rounds. Architectures already measured bound the
    search: below the fastest one found too slow, above the slowest one found fast enough but too inaccurate; an
    aim that cannot fall strictly between them would repeat one, and the rounds stop (``stop_reason`` says why)."""

    def __init__(self, target_ms: float, predicted_full_ms: float, floor: float, measured_full_ms: float):
        self.target_ms, self.predicted_full_ms, self.floor = target_ms, predicted_full_ms, floor
        self.curve = _Curve(predicted_full_ms, measured_full_ms)
        self.too_slow_ms = predicted_full_ms  # predicted time of the fastest architecture measured too slow
        self.inaccurate_ms = 0.0  # predicted time of the slowest measured fast enough but too inaccurate
        self.stop_reason = ""

    def first(self, noise: float) -> float:
        return max(self.floor, min(1.0, self._expected_fit(noise) / self.predicted_full_ms))

    def _expected_fit(self, noise: float) -> float:
        """The predicted time expected to measure the target less the noise."""
        return self.curve.predicted_for(self.target_ms * (1 - noise))

    def learn(self, predicted_ms: float, measured_ms: float) -> None:
        """An untrained architecture's point: corrects the curve, bounds nothing (no accuracy was measured)."""
        self.curve.add(predicted_ms, measured_ms)

    def next(self, predicted_ms: float, measured_ms: float, fast: bool, noise: float) -> float | None:
        """The next aim after a round whose architecture the table predicted at ``predicted_ms`` and the device
        measured at ``measured_ms`` (``fast``: within the target); None when no architecture is left to try."""
        self.curve.add(predicted_ms, measured_ms)
        if fast:
            self.inaccurate_ms = max(self.inaccurate_ms, predicted_ms)
        else:
            self.too_slow_ms = min(self.too_slow_ms, predicted_ms)
        aim_ms = min(self._expected_fit(noise), self.too_slow_ms * (1 - noise))
        if fast and aim_ms <= self.inaccurate_ms * (1 + noise):
            self.stop_reason = (f"no slower architecture is predicted to fit ({measured_ms:.3f} ms measured, "
                                f"{100 * noise:.1f} % noise): the time has no room to give back for accuracy")
            return None
        if not fast and aim_ms <= self.inaccurate_ms:
            self.stop_reason = ("the architectures fast enough were too inaccurate and the fastest one too slow "
                                "is next to them: no architecture in between is left")
            return None
        aim = aim_ms / self.predicted_full_ms
        if aim < self.floor:
            if not fast and self.too_slow_ms <= self.floor * self.predicted_full_ms * 1.001:
                self.stop_reason = ("the table's floor (every group at one channel) was measured and is too slow: "
                                    "pruning at this precision goes no further")
                return None
            aim = self.floor
        return min(aim, 1.0)


def _precision_order(latency_ms: dict[str, float], drop: dict[str, float], max_drop: float) -> list[str]:
    """The precisions to try, best first: int8 when its accuracy fits and it runs at most :data:`INT8_MARGIN` of
    float32's time side by side, then float32; float32 alone otherwise."""
    faster = latency_ms["int8"] <= INT8_MARGIN * latency_ms["float32"]
    return ["int8", "float32"] if faster and drop["int8"] <= max_drop else ["float32"]


def _reachable_precision(candidates: list[str], reach: Any, target_ms: float, say: Any
                         ) -> tuple[str, tuple[Any, ...]]:
    """The first of ``candidates`` whose pruning can reach ``target_ms``: ``reach(precision)`` returns (table,
    path, floor_ms), the table's floor corrected by this model's measured time; when none can, the one with the
    lowest floor. Tables are built only as far as needed."""
    reached: dict[str, tuple[Any, ...]] = {}
    for precision in candidates:
        reached[precision] = reach(precision)
        floor_ms = reached[precision][-1]
        if floor_ms <= target_ms:
            return precision, reached[precision]
        if precision != candidates[-1]:
            say(f"{precision}: the table's floor (every group at one channel) is {floor_ms:.3f} ms for this model, "
                f"above the budget {target_ms:.3f} ms: pruning cannot reach it in {precision}; trying "
                f"{candidates[candidates.index(precision) + 1]}")
    precision = min(reached, key=lambda name: reached[name][-1])
    return precision, reached[precision]


def _architecture(model: keras.Model) -> str:
    """A short digest of the shapes of a model's weights: equal for the same pruned architecture."""
    shapes = json.dumps([list(weight.shape) for weight in model.weights])
    return hashlib.sha256(shapes.encode()).hexdigest()[:12]


def _advice(row: dict[str, Any], target_ms: float, limit: _Limit, precision: str, input_size: Any) -> str:
    """What would meet the budget, from the best round."""
    other = "float32" if precision == "int8" else "int8"
    pixels = ", or fewer pixels (input_size='auto')" if input_size is None else ""
    if row["latency_ms"] > target_ms:
        return (f"To meet it: a budget of {row['latency_ms']:.3f} ms, more rounds (max_rounds), precision "
                f"{other} if it is faster on this device{pixels}")
    return (f"To meet it: {limit.option(row['round_drop_points'])}, more fine-tune epochs, a looser latency "
            f"budget{pixels}")


@dataclasses.dataclass(frozen=True)
class _Limit:
    """How much the result may lose: ``points`` of LiteRT score against the float32 original — top-1 accuracy
    (or agreement) in points, or, when the targets are the original's outputs (``outputs``), 100 × the output
    error of the worst head (the original's own is ~0 in float32 LiteRT)."""

    points: float
    outputs: bool

    @classmethod
    def of(cls, context: Context, max_accuracy_drop: float, max_output_error: float | None, method: str) -> _Limit:
        """The limit of a run on ``context``'s targets, or a one-line error for a limit that does not fit them."""
        outputs = isinstance(context.test.element_spec[1], tuple)
        if not outputs:
            if max_output_error is not None:
                raise ValueError("max_output_error limits a model judged by its outputs; this one is judged by "
                                 "top-1 accuracy or agreement: give max_accuracy_drop")
            return cls(max_accuracy_drop, False)
        if max_output_error is None or not 0 < max_output_error < 1:
            raise ValueError("this model's targets are its own outputs (several heads, or no class labels): give "
                             f"max_output_error in (0, 1), e.g. 0.05; got {max_output_error}")
        if method not in ("l1", "uniform"):
            raise ValueError(f"method {method!r} scores channels by a classifier's loss; a model judged by its "
                             "outputs is pruned by l1 or uniform")
        return cls(100 * max_output_error, True)

    def lost(self, row: dict[str, Any], reference: dict[str, Any]) -> float:
        return 100 * (reference["litert_score"] - row["litert_score"])

    def describe(self, points: float) -> str:
        """A loss in the user's words: ``-0.42 points`` or ``output error +0.0213``."""
        return f"output error {points / 100:+.4f}" if self.outputs else f"{-points:+.2f} points"

    def option(self, points: float) -> str:
        """The argument that would accept a loss of ``points``."""
        return f"max_output_error {points / 100:.4f}" if self.outputs else f"max_accuracy_drop {points:.2f}"


def _floor_fraction(model: keras.Model, table: latency.Table, precision: str) -> float:
    """The smallest fraction of the model's predicted latency channel pruning can reach by the table (every
    group at one channel), with a 1 % margin."""
    graph = ChannelGraph(model)
    cost = table.cost_fn(model, precision, graph)
    full = {group.id: group.size for group in graph.prunable_groups}
    return min(1.0, 1.01 * cost(dict.fromkeys(full, 1)) / cost(full))


def _better(row: dict[str, Any], best: dict[str, Any], max_drop: float) -> bool:
    """Within the accuracy limit, the faster wins; a result within the limit beats one outside; outside, the more
    accurate wins."""
    ok, best_ok = row["round_drop_points"] <= max_drop, best["round_drop_points"] <= max_drop
    if ok != best_ok:
        return ok
    return row["latency_ms"] < best["latency_ms"] if ok else row["round_drop_points"] < best["round_drop_points"]


def _finish(folder: Path, model: keras.Model, tflite: Path, recipe: Recipe, rows: list[dict[str, Any]],
            target_ms: float, precision: str, met: bool, message: str, table_path: Path | None = None,
            probes: list[dict[str, Any]] | None = None, sizes: list[dict[str, Any]] | None = None) -> BudgetResult:
    input_size = _input_size_of(recipe)
    files.save_model(model, folder / "model.keras")
    files.write_bytes(folder / "model.tflite", Path(tflite).read_bytes())
    files.write_json(folder / "recipe.json", {"stages": recipe.to_list()})
    files.write_json(folder / "budget.json", {"target_ms": target_ms, "precision": precision, "met": met,
                                              "message": message, "recipe": recipe.to_list(),
                                              "table": None if table_path is None else str(table_path),
                                              "probes": probes or [], "input_sizes": sizes or [],
                                              "input_size": input_size})
    for number, row in enumerate(rows):
        row["step"] = f"{number:02d}"
    write_summary(rows, folder, precision)
    return BudgetResult(model, folder / "model.tflite", recipe, rows, target_ms, precision, met, message, table_path,
                        probes or [], sizes or [], input_size)


def _input_size_of(recipe: Recipe) -> int | None:
    return next((stage.params["size"] for stage in recipe.stages if stage.stage == "resize_input"), None)


def _size_ladder(size: int) -> list[int]:
    """The input sizes ``input_size="auto"`` measures, largest first: multiples of 16 px (8 below 64 px) smaller
    than ``size``, down to half of it."""
    step = 16 if size >= 64 else 8
    return [s for s in range((size - 1) // step * step, size // 2 - 1, -step) if s >= max(step, size / 2)]


def _input_size(model: keras.Model, input_size: int | str, precision: str, context: Context, folder: Path,
                original: Path, original_ms: float, target_ms: float, measurement: Measurement
                ) -> tuple[int, float, list[dict[str, Any]], float]:
    """The size the network runs at, its unpruned latency at ``precision`` (measured side by side with the
    ``original`` file), every size measured, and the measurement's noise. ``"auto"``: the largest size of
    :func:`_size_ladder` within ``target_ms``, else the smallest."""
    sizes = _size_ladder(resolution.image_size(model)[0]) if input_size == "auto" else [int(input_size)]
    paths = []
    for candidate in sizes:
        paths.append(folder / f"{candidate}px.tflite")
        if not paths[-1].is_file():
            _export_untrained(resolution.rescale_input(model, candidate), precision, paths[-1], context, measurement)
    measured, noise = _beside_original(folder, {"sizes": sizes, "precision": precision}, original, original_ms,
                                       paths, measurement)
    found = [{"size": s, "latency_ms": round(ms, 4)} for s, ms in zip(sizes, measured, strict=True)]
    fitting = [entry for entry in found if entry["latency_ms"] <= target_ms]
    chosen = max(fitting, key=lambda entry: entry["size"]) if fitting else found[-1]
    measured_sizes = ", ".join(f"{entry['size']} px {entry['latency_ms']:.3f} ms" for entry in found)
    context.say(f"input size: {measured_sizes} (budget "
                f"{target_ms:.3f} ms, {precision}) → {chosen['size']} px"
                + ("" if fitting else ", channels pruned for the rest"))
    return chosen["size"], chosen["latency_ms"], found, noise
