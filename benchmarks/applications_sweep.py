"""Channel-pruning coverage of the keras.applications families: every model at a small input loses 30 % of the
channels of every prunable group (local L1), and the masked and shrunk models, the MAC count and plan, and the
shrunk model and its float32 LiteRT export must agree — in one run.

    python benchmarks/applications_sweep.py     # writes benchmarks/results/applications_sweep.{md,json}
    python benchmarks/applications_sweep.py --models=MobileNetV3Small,EfficientNetB0 --output_dir=/tmp/sweep

Models are built with ``weights=None`` (nothing is downloaded) at ``--size``×``--size`` (or the family's
minimum: 71 for Xception, 75 for the Inceptions) with ``--classes`` logits. Random-init BatchNorm statistics
make outputs degenerate, so BatchNorm is first recalibrated on ``--calibration_batches`` random batches. Each
model's status is ``ok``; ``refused`` when tfcompress declines it by name (a layer without a channel rule, a
conversion error) with the reason; ``failed`` when a check does not hold (parity above ``--tolerance`` /
``--export_tolerance``, MACs not as planned); ``unavailable`` when the installed Keras has no such model.
Parities are max |difference| divided by the range of the reference logits.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path
from typing import Any

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
FAMILIES = ["MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "ResNet50", "ResNet50V2",
            "DenseNet121", "EfficientNetB0", "EfficientNetV2B0", "NASNetMobile", "Xception", "InceptionV3",
            "InceptionResNetV2", "VGG16", "ConvNeXtTiny", "RegNetX002"]
flags.DEFINE_list("models", FAMILIES, "keras.applications models to sweep (names of their constructors).")
flags.DEFINE_integer("size", 32, "Input height and width (raised to a family's minimum).", lower_bound=32)
flags.DEFINE_integer("classes", 10, "Logits of the classifier head.", lower_bound=2)
flags.DEFINE_float("target_channels", 0.7, "Fraction of every prunable group's channels kept.")
flags.DEFINE_enum("scope", "local", ["local", "global"], "Pruning scope.")
flags.DEFINE_string("importance", "l1", "Channel importance (tfcompress.pruning.importance).")
flags.DEFINE_integer("batch_size", 8, "Images per random batch.", lower_bound=1)
flags.DEFINE_integer("calibration_batches", 4, "Random batches that recalibrate BatchNorm statistics.", lower_bound=0)
flags.DEFINE_integer("parity_examples", 4, "Random images compared between models.", lower_bound=1)
flags.DEFINE_float("tolerance", 1e-5, "Largest relative masked-vs-shrunk difference accepted.")
flags.DEFINE_float("export_tolerance", 1e-4, "Largest relative Keras-vs-LiteRT difference accepted (float32).")
flags.DEFINE_bool("export", True, "Export the shrunk model to float32 TFLite and compare in LiteRT.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where the .md and .json go.")

# Keras refuses smaller inputs for these (its documented minimum input sizes).
MIN_SIZE = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}
COLUMNS = [
    ("model", "model"), ("status", "status"), ("input", "input"), ("layers", "layers"), ("groups", "groups"),
    ("prunable_groups", "prunable"), ("macs_before", "MACs before"), ("macs_after", "MACs after"),
    ("pruning_effect", "pruned ↔ original"), ("shrink_parity", "masked ↔ shrunk"),
    ("export_parity", "Keras ↔ LiteRT"), ("seconds", "s"),
]


def relative_difference(reference: Any, other: Any) -> float:
    """max |reference − other| over the range of ``reference`` (the scale-free number tolerances apply to)."""
    import numpy as np

    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    return float(np.max(np.abs(reference - other)) / max(float(np.ptp(reference)), 1e-30))


def realistic_weights(model: Any, batches: list[Any]) -> None:
    """Weights whose outputs a parity check can see: BatchNorm statistics of the data (random-init ones make
    outputs degenerate), and ConvNeXt's LayerScale at 1 instead of 1e-6 (which hides every residual branch)."""
    import numpy as np

    from tfcompress import training
    from tfcompress.keras_graph import iter_layers

    for layer in iter_layers(model):
        if type(layer).__name__ == "LayerScale":
            layer.gamma.assign(np.ones(layer.gamma.shape, "float32"))
    training.recalibrate_batch_norm(model, batches)


def kept_reasons(graph: Any, limit: int = 3) -> list[str]:
    """The first reasons of kept groups other than the model's inputs and outputs (what stops pruning)."""
    reasons: list[str] = []
    for group in graph.groups.values():
        for reason in group.reasons[:1]:
            if reason not in ("model input", "model output") and reason not in reasons:
                reasons.append(reason)
    return reasons[:limit]


def sweep_model(name: str) -> dict[str, Any]:
    """Builds, prunes, checks and exports one keras.applications model; returns its row."""
    import keras
    import numpy as np

    from tfcompress import export, runtime
    from tfcompress.graph import ChannelGraph
    from tfcompress.graph.channel_graph import UnsupportedLayerError
    from tfcompress.profile import profile
    from tfcompress.pruning import get_importance, insert_channel_masks, plan_channels, shrink

    row: dict[str, Any] = {"model": name, "status": "ok", "reason": ""}
    constructor = getattr(keras.applications, name, None)
    if constructor is None:
        row.update(status="unavailable", reason=f"keras.applications of Keras {keras.__version__} has no {name}")
        return row
    started = time.perf_counter()
    size = max(FLAGS.size, MIN_SIZE.get(name, 0))
    model = constructor(weights=None, input_shape=(size, size, 3), classes=FLAGS.classes, classifier_activation=None)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(FLAGS.batch_size, size, size, 3)).astype("float32")
               for _ in range(FLAGS.calibration_batches)]
    realistic_weights(model, batches)
    x = rng.normal(size=(FLAGS.parity_examples, size, size, 3)).astype("float32")
    row.update(input=f"{size}×{size}", layers=len(model.layers), params_before=model.count_params())
    timings = row.setdefault("timings_s", {"build": round(time.perf_counter() - started, 2)})
    failures = []

    def lap(key: str, since: float) -> float:
        now = time.perf_counter()
        timings[key] = round(now - since, 2)
        return now

    try:
        mark = time.perf_counter()
        graph = ChannelGraph(model)
        row.update(calls=len(graph.walk.calls), groups=len(graph.groups), prunable_groups=len(graph.prunable_groups),
                   prunable_channels=sum(g.size for g in graph.prunable_groups), kept_because=kept_reasons(graph))
        macs = profile(model).total.macs
        row["macs_before"] = macs
        if graph.cost() != macs:
            failures.append(f"channel-graph MACs {graph.cost():,} ≠ profile {macs:,}")
        plan = plan_channels(graph, get_importance(FLAGS.importance).scores(graph),
                             target_channels=FLAGS.target_channels, scope=FLAGS.scope)
        mark = lap("graph_and_plan", mark)
        masked = insert_channel_masks(model, plan.masks, graph=graph)
        small = shrink(model, plan.masks, graph=graph)
        mark = lap("mask_and_shrink", mark)
    except UnsupportedLayerError as error:
        row.update(status="refused", reason=str(error), seconds=round(time.perf_counter() - started, 1))
        return row

    reference = np.asarray(masked(x, training=False))
    shrunk_logits = np.asarray(small(x, training=False))
    # How much pruning changed the outputs: a parity far below this one is not vacuous.
    row["pruning_effect"] = relative_difference(np.asarray(model(x, training=False)), reference)
    row.update(logit_range=float(np.ptp(reference)), shrink_parity=relative_difference(reference, shrunk_logits),
               pruned_groups=len(plan.masks), macs_planned=plan.macs_after, params_after=small.count_params())
    row["macs_after"] = profile(small).total.macs
    if row["shrink_parity"] > FLAGS.tolerance:
        failures.append(f"masked vs shrunk differ by {row['shrink_parity']:.2e} of the logit range")
    if row["macs_after"] != plan.macs_after:
        failures.append(f"shrunk model has {row['macs_after']:,} MACs, the plan {plan.macs_after:,}")
    if row["params_after"] != plan.params_after:
        failures.append(f"shrunk model has {row['params_after']:,} parameters, the plan {plan.params_after:,}")
    mark = lap("parity_and_profile", mark)

    if FLAGS.export:
        try:
            flatbuffer = export.to_tflite(small)
        except export.ConversionError as error:
            failures.append(f"export refused: {error}")
        else:
            lite = runtime.TFLiteModel(flatbuffer)
            row.update(tflite_bytes=len(flatbuffer), litert_kernels=lite.kernels,
                       export_parity=relative_difference(shrunk_logits, lite.predict(x)))
            if row["export_parity"] > FLAGS.export_tolerance:
                failures.append(f"Keras vs LiteRT differ by {row['export_parity']:.2e} of the logit range")
        lap("export_and_litert", mark)
    if failures:
        row.update(status="failed", reason="; ".join(failures))
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key.endswith(("parity", "effect")):
        return f"{value:.1e}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(rows: list[dict[str, Any]], header: list[str]) -> str:
    lines = [*header, "", "| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(key, row.get(key)) for key, _ in COLUMNS) + " |" for row in rows]
    notes = [f"- **{row['model']}** ({row['status']}): {row['reason']}" for row in rows if row["reason"]]
    kept = [f"- **{row['model']}**: " + "; ".join(row["kept_because"]) for row in rows if row.get("kept_because")]
    if notes:
        lines += ["", "## Refused, failed or unavailable", "", *notes]
    if kept:
        lines += ["", "## Why some groups are kept (first reasons, besides the model's input and output)", "", *kept]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    import importlib.metadata

    import keras
    import tensorflow as tf

    from tfcompress import files, latency

    started = time.time()
    rows = []
    for name in FLAGS.models:
        row = sweep_model(name)
        rows.append(row)
        print(f"{name}: {row['status']} {row.get('seconds', '')} s  shrink {row.get('shrink_parity')}  "
              f"export {row.get('export_parity')}  {row['reason'][:200]}", flush=True)
        keras.backend.clear_session()  # a fresh graph per model keeps memory flat over 15 models
        gc.collect()

    host = latency.describe_host()
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__,
                "ai_edge_litert": importlib.metadata.version("ai-edge-litert")}
    command = " ".join(["python benchmarks/applications_sweep.py", *sys.argv[1:]])
    settings = {key: FLAGS[key].value for key in ("size", "classes", "target_channels", "scope", "importance",
                                                  "batch_size", "calibration_batches", "parity_examples",
                                                  "tolerance", "export_tolerance", "export")}
    seconds = round(time.time() - started)
    files.write_json(Path(FLAGS.output_dir) / "applications_sweep.json", {
        "benchmark": "applications_sweep", "command": command, "host": host, "versions": versions,
        "settings": settings, "rows": rows, "seconds": seconds,
    })
    counts = {status: sum(row["status"] == status for row in rows) for status in ("ok", "refused", "failed",
                                                                                   "unavailable")}
    header = [
        "# Channel pruning of keras.applications: coverage sweep", "",
        f"Command: `{command}`  ",
        f"Machine: {host['cpu']}, {host['cores']} cores ({host['machine']}); TensorFlow {versions['tensorflow']}, "
        f"Keras {versions['keras']}, ai-edge-litert {versions['ai_edge_litert']}. Run time {seconds / 60:.1f} min.  ",
        f"Each model: `weights=None`, {FLAGS.classes} logits, BatchNorm recalibrated on {FLAGS.calibration_batches} "
        f"random batches of {FLAGS.batch_size} (ConvNeXt's LayerScale set to 1 from 1e-6, which hides its "
        f"residual branches); {FLAGS.importance} importance, {FLAGS.scope} scope, "
        f"{1 - FLAGS.target_channels:.0%} of every prunable group removed. *pruned ↔ original*: how much pruning "
        "changed the outputs (what the parities are small against); *masked ↔ shrunk*: the model with "
        "channel masks vs the physically pruned one; *Keras ↔ LiteRT*: the pruned model vs its float32 export; "
        f"both max |Δ| / logit range on {FLAGS.parity_examples} random images (bounds {FLAGS.tolerance:g} and "
        f"{FLAGS.export_tolerance:g}). MACs after = the profile of the pruned model, checked equal to the plan.  ",
        "Status: " + ", ".join(f"{count} {status}" for status, count in counts.items() if count) + ".",
    ]
    text = markdown(rows, header)
    files.write_text(Path(FLAGS.output_dir) / "applications_sweep.md", text)
    print(text)


if __name__ == "__main__":
    app.run(main)
