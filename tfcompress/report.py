"""What a compressed model buys, measured the same way everywhere: one row per deployed variant.

The demo and every benchmark describe a variant (a Keras model and its ``.tflite``) by the same columns:
accuracy in Keras and in LiteRT, params, MACs, size raw and gzipped, and median latency per thread count. This
module measures such a row and prints rows as a markdown table, so all result tables read alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from tfcompress import export, files, latency, runtime, training
from tfcompress.profile import profile


def measure_variant(
    name: str,
    keras_model: keras.Model,
    flatbuffer: bytes,
    test: tf.data.Dataset,
    tflite_path: str | os.PathLike,
    *,
    threads: Sequence[int] = (1,),
    runs: int = 50,
    warmup: int = 5,
    runner: str = "litert",
    keras_accuracy: float | None = None,
) -> dict[str, Any]:
    """Writes ``flatbuffer`` to ``tflite_path`` and measures one row.

    Args:
        name: the variant's label in tables.
        keras_model: the model the flatbuffer was exported from (for params, MACs and Keras accuracy).
        test: the batched test split.
        threads: thread counts to time; one ``latency_ms_tN`` column each.
        keras_accuracy: pass it to skip re-evaluating a Keras model shared by several variants.
    """
    files.write_bytes(tflite_path, flatbuffer)
    counts = profile(export.strip(keras_model)).total
    size = export.size_report(flatbuffer)
    row: dict[str, Any] = {
        "variant": name,
        "keras_accuracy": keras_accuracy if keras_accuracy is not None else training.evaluate(keras_model, test)[
            "accuracy"],
        "litert_accuracy": runtime.evaluate_tflite(runtime.TFLiteModel(flatbuffer, num_threads=2), test)["accuracy"],
        "params": counts.params,
        "nonzero_params": counts.nonzero_params,
        "macs": counts.macs,
        "tflite_bytes": size.tflite_bytes,
        "gzip_bytes": size.gzip_bytes,
    }
    for count in threads:
        result = latency.benchmark(tflite_path, runner=runner, threads=count, runs=runs, warmup=warmup)
        row[f"latency_ms_t{count}"] = round(result.latency_ms, 4)
        row["kernels"] = result.details.get("kernels")  # "builtin" when XNNPACK could not run the model
    row["tflite"] = str(Path(tflite_path))
    return row


def add_ratios(rows: list[dict[str, Any]], baseline: str, columns: Sequence[str]) -> None:
    """Adds ``COLUMN_ratio`` = baseline / row (a speed-up or compression factor) for each latency/size column."""
    reference = next(row for row in rows if row["variant"] == baseline)
    for row in rows:
        for column in columns:
            if row.get(column) and reference.get(column):
                row[f"{column}_ratio"] = round(reference[column] / row[column], 2)


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``(key, header)`` columns; accuracies as percentages."""
    lines = ["| " + " | ".join(header for _, header in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_format(key, row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)


def _format(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if "accuracy" in key:
        return f"{100 * value:.2f} %"
    if key.endswith("output_error"):
        return f"{value:.4f}"
    if key.endswith("_ratio"):
        return f"{value:.2f}×"
    if key.startswith("latency"):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
