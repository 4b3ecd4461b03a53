"""Runs a recipe stage by stage: each stage's model and report row are written to the run's folder as soon as
the stage ends, so a killed run resumes at the first stage not finished, and one summary table and plot are
written at the end.

    result = tfcompress.pipeline.run_recipe(model, recipe, context, folder="runs/r20", device="litert")
    result.rows, result.model, result.tflite

The folder holds ``00_original/``, ``01_prune/``, … (``model.keras`` and ``row.json`` each), ``model.keras`` and
``model.tflite`` (the last stage's, at the recipe's final precision), ``recipe.json`` and ``summary.md``,
``summary.json``, ``summary.png``. A stage whose folder holds a row for the same stage, settings and earlier
stages is not run again; from the first stage that differs, every stage runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress import export, files, latency, micronet, report, runtime, training
from tfcompress.pipeline.recipe import Recipe, Stage
from tfcompress.pipeline.stages import STAGES, Context
from tfcompress.profile import profile
from tfcompress.pruning import weight_masks

ROW_FORMAT = "tfcompress-pipeline-row-2"  # 2: scores and output errors
SUMMARY_COLUMNS = (
    ("step", "step"), ("stage", "stage"), ("precision", "precision"), ("keras_accuracy", "Keras acc."),
    ("litert_accuracy", "LiteRT acc."), ("keras_output_error", "Keras output error"),
    ("litert_output_error", "LiteRT output error"), ("params", "params"), ("nonzero_params", "non-zero"),
    ("macs", "MACs"),
    ("tflite_bytes", "tflite B"), ("gzip_bytes", "gzip B"), ("latency_ms", "latency ms"),
    ("micronet_score", "MicroNet"), ("seconds", "stage s"),
)


@dataclasses.dataclass
class Measurement:
    """How each row is measured: on ``device`` with ``threads`` and ``runs`` timed inferences; LiteRT accuracy
    on the first ``eval_limit`` test images (None: all); int8 calibrated on ``calibration`` images."""

    device: str | latency.Device = "litert"
    threads: int = 1
    runs: int = 50
    eval_limit: int | None = 2000
    calibration: np.ndarray | None = None
    micronet_task: str = "cifar100"


@dataclasses.dataclass
class PipelineResult:
    """The rows (one per stage, the input model's first), the last stage's model and its ``.tflite`` path."""

    rows: list[dict[str, Any]]
    model: keras.Model
    tflite: Path
    folder: Path

    def table(self) -> str:
        return summary_table(self.rows)


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table of :data:`SUMMARY_COLUMNS`, without the columns no row has a value in (a
    classifier's output error, a multi-output model's accuracy)."""
    return report.markdown_table(rows, [(key, header) for key, header in SUMMARY_COLUMNS
                                        if any(row.get(key) is not None for row in rows)])


def measure_row(model: keras.Model, precision: str, context: Context, measurement: Measurement,
                tflite_path: str | Path) -> dict[str, Any]:
    """One report row of ``model`` exported at ``precision`` to ``tflite_path``: Keras and LiteRT accuracy (or,
    when the targets are the original's outputs, output error; ``litert_score`` is the number to maximize either
    way), params, non-zeros, MACs, size raw and gzip, latency measured on the device (and its fingerprint),
    MicroNet score."""
    calibration = {}
    if precision == "int8":
        calibration = {"representative_data": calibration_images(context, measurement), "num_calibration_samples": 256}
    flatbuffer = export.to_tflite(model, precision, output=tflite_path, **calibration)
    plain = export.strip(model)
    counts = profile(plain).total
    size = export.size_report(flatbuffer)
    device = latency.open_device(measurement.device)
    timed, = device.measure([Path(tflite_path)], threads=measurement.threads, runs=measurement.runs, warmup=5)
    lite = runtime.evaluate_tflite(runtime.TFLiteModel(flatbuffer), context.test, limit=measurement.eval_limit)
    judged = training.evaluate(model, context.test)
    return {
        "precision": precision,
        "keras_accuracy": judged.get("accuracy"),
        "litert_accuracy": lite.get("accuracy"),
        "keras_output_error": judged.get("output_error"),
        "litert_output_error": lite.get("output_error"),
        "litert_score": lite["score"],
        "litert_examples": lite["examples"],
        "params": counts.params,
        "nonzero_params": counts.nonzero_params,
        "macs": counts.macs,
        "tflite_bytes": size.tflite_bytes,
        "gzip_bytes": size.gzip_bytes,
        "latency_ms": round(timed.latency_ms, 4),
        "micronet_score": round(micronet.score(plain, measurement.micronet_task).score, 5),
        "host": device.fingerprint(measurement.threads),
    }


def calibration_images(context: Context, measurement: Measurement) -> np.ndarray:
    """The images that calibrate an int8 export: ``measurement.calibration``, else 256 training images (kept)."""
    if measurement.calibration is not None:
        return measurement.calibration
    images = [x for x, _ in context.train.take(4).as_numpy_iterator()]
    measurement.calibration = np.concatenate(images)[:256]
    return measurement.calibration


def run_recipe(model: keras.Model, recipe: Recipe | Sequence[dict[str, Any]], context: Context, folder: str | Path,
               measurement: Measurement | None = None, *, seed: int = 0) -> PipelineResult:
    """Runs ``recipe`` on ``model`` (not changed) and writes every stage's model and row under ``folder``.

    Raises:
        RecipeError: the recipe cannot run (before any work).
        NonFiniteError: a stage produced NaN weights (the stage is named).
    """
    recipe = Recipe.parse(recipe)
    measurement = measurement or Measurement()
    folder = files.check_output_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files.write_json(folder / "recipe.json", {"stages": recipe.to_list()})
    training.check_finite(model, f"model {model.name!r}")
    source = {"model": model.name, "weights_sha256": _weights_digest(model)}  # what the run started from
    data = _data_fingerprint(context)
    key = {"source": source, "data": data, "stage": None, "before": [], "precision": "float32"}
    if seed:  # another seed trains something else (seed 0 keeps the keys of runs from before seeds were keyed)
        key["seed"] = seed
    rows = [_finished_row(folder / "00_original", key)
            or _stage_row(folder / "00_original", None, model, "float32", context, measurement, 0.0, key)]
    history: list[dict[str, Any]] = []
    current, resuming = model, True
    for index, stage in enumerate(recipe.stages):
        step_folder = folder / f"{index + 1:02d}_{stage.stage}"
        precision = recipe.precision_after(index)
        key = {**key, "stage": stage.to_dict(), "before": list(history), "precision": precision}
        done = _finished_row(step_folder, key) if resuming else None
        if done is not None:
            context.say(f"step {index + 1} {stage.label}: done before, loaded from {step_folder}")
            current = keras.models.load_model(step_folder / "model.keras")
            rows.append(done)
        else:
            resuming = False
            context.say(f"step {index + 1} {stage.label} …")
            if current is model:  # finetune, distill, ... train in place: never the caller's model
                current = weight_masks.copy_model(model)
            keras.utils.set_random_seed(seed + index + 1)
            tick = time.monotonic()
            current = STAGES[stage.stage](current, context, **stage.params)
            training.check_finite(current, f"the model after step {index + 1} ({stage.label})")
            rows.append(_stage_row(step_folder, stage, current, precision, context, measurement,
                                   time.monotonic() - tick, key))
        history.append(stage.to_dict())
        context.say(_summary_line(rows[-1]))
    final = recipe.precision_after(len(recipe.stages) - 1)
    files.save_model(current, folder / "model.keras")
    tflite = folder / "model.tflite"
    files.write_bytes(tflite, (folder / f"{len(recipe.stages):02d}_{recipe.stages[-1].stage}" / "model.tflite")
                      .read_bytes())
    write_summary(rows, folder, final)
    return PipelineResult(rows, current, tflite, folder)


def _stage_row(step_folder: Path, stage: Stage | None, model: keras.Model, precision: str, context: Context,
               measurement: Measurement, seconds: float, key: dict[str, Any]) -> dict[str, Any]:
    step_folder.mkdir(parents=True, exist_ok=True)
    row = {"step": step_folder.name, "stage": "original" if stage is None else stage.label,
           **measure_row(model, precision, context, measurement, step_folder / "model.tflite"),
           "seconds": round(seconds, 1)}
    files.save_model(model, step_folder / "model.keras")
    files.write_json(step_folder / "row.json", {"format": ROW_FORMAT, "key": key, "row": row})  # last: done
    return row


def _weights_digest(model: keras.Model) -> str:
    """What identifies the run's input model: a SHA-256 of its weights, in order."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


def _data_fingerprint(context: Context) -> dict[str, Any]:
    """What a resume must match besides the model and the recipe: each split's batches per epoch and element
    shapes (another ``train_limit``, batch size or image size trains and measures something else)."""
    splits = {"train": context.train, "test": context.test, "holdout": context.holdout}
    return {name: None if data is None else [int(data.cardinality()), str(data.element_spec)]
            for name, data in splits.items()}


def _finished_row(step_folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        saved = json.loads((step_folder / "row.json").read_text())
    except (OSError, ValueError):
        return None
    same = saved.get("format") == ROW_FORMAT and saved.get("key") == json.loads(json.dumps(key))
    return saved["row"] if same and (step_folder / "model.keras").is_file() else None


def judged(row: dict[str, Any], where: str = "litert") -> str:
    """A row's quality in words: ``accuracy 0.9120`` or ``output error 0.0213`` (``where``: litert or keras)."""
    if row.get(f"{where}_accuracy") is not None:
        return f"accuracy {row[f'{where}_accuracy']:.4f}"
    return f"output error {row[f'{where}_output_error']:.4f}"


def _summary_line(row: dict[str, Any]) -> str:
    return (f"  {row['stage']}: Keras {judged(row, 'keras')}, LiteRT {judged(row)} "
            f"({row['precision']}), {row['params']:,} params, {row['macs'] / 1e6:.2f} M MACs, "
            f"{row['gzip_bytes'] / 1024:.0f} KB gzip, {row['latency_ms']:.3f} ms")


def write_summary(rows: list[dict[str, Any]], folder: str | Path, precision: str) -> None:
    """``summary.md`` (table + host), ``summary.json`` and ``summary.png`` (accuracy vs latency by stage)."""
    folder = Path(folder)
    host = rows[0]["host"]
    what = "accuracy" if rows[0].get("litert_accuracy") is not None else "output error (worst head)"
    text = (f"# Compression run ({len(rows) - 1} stages, final precision {precision})\n\n"
            f"Host: {host.get('cpu', '?')}, ISA {'/'.join(host.get('isa', []) or ['?'])}, oneDNN "
            f"{ {True: 'on', False: 'off'}.get(host.get('onednn'), '?')} (TensorFlow), {host.get('runtime')} "
            f"{host.get('runtime_version')}, {host.get('threads')} thread(s), device {host.get('device')}. "
            f"LiteRT {what} on the first {rows[0]['litert_examples']:,} test images; Keras {what} on the whole "
            f"test split.\n\n{summary_table(rows)}\n")
    files.write_text(folder / "summary.md", text)
    files.write_json(folder / "summary.json", {"rows": rows, "precision": precision})
    plot_stages(rows, folder / "summary.png")


def plot_stages(rows: list[dict[str, Any]], path: str | Path) -> None:
    """LiteRT accuracy against measured latency, one labelled point per stage joined in order, the Pareto front
    marked."""
    from tfcompress import plots

    host = rows[0]["host"]
    points = [{**row, "name": f"{row['step'][:2]} {row['stage'].split('(')[0]} ({row['precision']})"} for row in rows]
    accuracy = rows[0].get("litert_accuracy") is not None  # else the targets are the original's outputs
    plots.accuracy_vs_latency(
        points, path, y="litert_accuracy" if accuracy else "litert_score",
        title=f"{'accuracy' if accuracy else 'fidelity'} vs latency, stage by stage", connect=True,
        xlabel=f"measured latency, ms ({host.get('device')}, {host.get('threads')} thr.)",
        ylabel="LiteRT top-1 accuracy, %" if accuracy else "LiteRT 1 − output error (worst head), %")
