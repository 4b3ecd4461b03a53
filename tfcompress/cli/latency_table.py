"""Builds a latency table of a model on a device, predicts a model's latency from one, or merges shards.

    # build (float32 + int8), resumable; ~3 min for ResNet-20 on a 2-core x86 host
    python scripts/latency_table.py --model=models/resnet20_fashion_mnist.keras --device=litert \
        --precision=float32,int8 --output=tables/resnet20.litert.npz
    python scripts/latency_table.py ... --resume              # after an interruption, even SIGKILL
    python scripts/latency_table.py ... --shard=0/2 --output=t0.npz & \
        python scripts/latency_table.py ... --shard=1/2 --output=t1.npz
    python scripts/latency_table.py --merge=t0.npz,t1.npz --output=tables/resnet20.litert.npz
    # on a Raspberry Pi over SSH (Python + ai-edge-litert there, or ?runner=binary:/home/pi/benchmark_model)
    python scripts/latency_table.py --model=M.keras --device=ssh://pi@raspberrypi --output=tables/m.pi.npz

    # predict (and measure beside it, on the table's device)
    python scripts/latency_table.py --table=tables/resnet20.litert.npz --predict=/tmp/pruned.keras --measure

Prediction prints ``predicted_ms: X`` (with ``--measure`` also ``measured_ms: Y`` and the error) and the
per-unit breakdown; ``--json`` writes both. A table measured on another device fingerprint is refused for
``--measure`` and ``--resume`` unless ``--force``.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags

from tfcompress.latency.devices import DEVICE_HELP
from tfcompress.latency.table import table_path

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("model", None, "Model(s) (.keras) to build a table for; repeat the flag for several.")
flags.DEFINE_string("device", "litert", DEVICE_HELP)
flags.DEFINE_list("precision", ["float32", "int8"], "float32 and/or int8 (prediction: the first one).")
flags.DEFINE_string("output", None, "The table to write: T.npz + T.json, and T.journal.jsonl (every measurement, "
                    "as taken: what --resume continues from).")
flags.DEFINE_bool("resume", False, "Continue an interrupted build from its journal (nothing is measured twice), "
                  "or add models to a finished one.")
flags.DEFINE_bool("force", False, "Use or resume a table measured on another device fingerprint.")
flags.DEFINE_string("shard", "0/1", "Measure only part i of n of the table ('i/n'); merge the parts with --merge.")
flags.DEFINE_integer("step", 8, "Grid step in channels: use the --channel_multiple you will prune with.",
                     lower_bound=1)
flags.DEFINE_integer("max_points", 12, "At most this many grid points per channel axis (the step widens).",
                     lower_bound=2)
flags.DEFINE_integer("repeats", 3, "Measurements of every grid point (in separate passes, averaged).",
                     lower_bound=1)
flags.DEFINE_integer("runs", 30, "Timed inferences per measurement.", lower_bound=1)
flags.DEFINE_integer("warmup", 5, "Untimed inferences before them.", lower_bound=0)
flags.DEFINE_integer("threads", 1, "CPU threads of the runtime.", lower_bound=1)
flags.DEFINE_float("smooth_sigma", 0.0, "Gaussian smoothing of the grids when predicting, in grid steps.",
                   lower_bound=0.0)
flags.DEFINE_bool("residues", True, "Also measure the counts just below each axis' top multiple of --step (the "
                  "pattern within a step): better predictions between grid points, ~40 % more points.")
flags.DEFINE_string("table", None, "A table (T.npz) to predict with.")
flags.DEFINE_string("predict", None, "A .keras model whose latency to predict from --table.")
flags.DEFINE_bool("measure", False, "With --predict: also measure the model, on the table's device unless "
                  "--device is given.")
flags.DEFINE_list("merge", None, "Tables (shards) to merge into --output.")
flags.DEFINE_string("json", None, "With --predict: also write the prediction (and measurement) here.")


def main(argv: list[str]) -> None:
    del argv
    modes = [name for name, given in (("--predict", FLAGS.predict), ("--merge", FLAGS.merge),
                                      ("--model", FLAGS.model)) if given]
    if len(modes) != 1:
        raise app.UsageError("give one of --model (build a table), --predict (with --table) or --merge; got "
                             + (", ".join(modes) or "none"))
    if FLAGS.predict:
        predict()
    elif FLAGS.merge:
        merge()
    else:
        build()


def build() -> None:
    from tfcompress import files, latency
    from tfcompress.export import load_keras_model

    try:  # everything checked before the first measurement
        if not FLAGS.output:
            raise ValueError("--output is required: the table to write (T.npz)")
        output = files.check_output(table_path(FLAGS.output), FLAGS.model)
        for beside in (output.with_suffix(".json"), latency.build.journal_path(output)):  # what the build writes
            files.check_output(beside, FLAGS.model)
        latency.parse_shard(FLAGS.shard)
        device = latency.open_device(FLAGS.device)
        models = [load_keras_model(path) for path in FLAGS.model]
    except (OSError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    try:
        table = latency.build_table(
            models, device, output=output, precisions=FLAGS.precision, step=FLAGS.step,
            max_points=FLAGS.max_points, repeats=FLAGS.repeats, runs=FLAGS.runs, warmup=FLAGS.warmup,
            threads=FLAGS.threads, shard=FLAGS.shard, resume=FLAGS.resume, force=FLAGS.force,
            smooth_sigma=FLAGS.smooth_sigma, residues=FLAGS.residues)
    except (ValueError, latency.BenchmarkError) as error:
        sys.exit(f"latency table: {error}")
    print(f"table: {output} ({len(table.entries)} entries, {', '.join(table.precisions)}, {device.name}, "
          f"built in {table.meta['build_seconds']} s)")
    for model in models:
        for precision in table.precisions:
            try:
                print(f"{model.name} {precision} predicted_ms: {table.predict(model, precision).ms:.4f}")
            except latency.TableError as error:  # a shard: its part of the grid only
                print(f"{model.name} {precision}: {error}")


def predict() -> None:
    from tfcompress import files, latency
    from tfcompress.export import load_keras_model

    precision = FLAGS.precision[0]
    try:
        if not FLAGS.table:
            raise ValueError("--predict needs --table=T.npz")
        output = files.check_output(FLAGS.json, [FLAGS.predict, FLAGS.table], kind="json") if FLAGS.json else None
        table = latency.Table.load(FLAGS.table)
        model = load_keras_model(FLAGS.predict)
        # measured where the table was, unless --device says otherwise
        where = FLAGS.device if FLAGS["device"].present else table.meta.get("device", FLAGS.device)
        device = latency.open_device(where) if FLAGS.measure else None
        if device is not None:
            table.check_device(device.fingerprint(FLAGS.threads), FLAGS.force)
        prediction = table.predict(model, precision)
    except (OSError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    report = prediction.to_dict()
    print(f"predicted_ms: {prediction.ms:.4f}")
    if device is not None:
        result = latency.measure_model(model, device, precision, threads=FLAGS.threads, runs=max(FLAGS.runs, 50),
                                       warmup=FLAGS.warmup)
        measured = result.latency_ms
        report.update(measured_ms=measured, error=(prediction.ms - measured) / measured, device=device.name)
        print(f"measured_ms: {measured:.4f}  (error {100 * report['error']:+.1f} %, {device.name})")
    print(prediction.breakdown(top=10))
    if output is not None:
        files.write_json(output, report)
        print(json.dumps({k: v for k, v in report.items() if k != "layers"}))


def merge() -> None:
    from tfcompress import files, latency

    try:
        if not FLAGS.output:
            raise ValueError("--merge needs --output=T.npz")
        output = files.check_output(table_path(FLAGS.output), FLAGS.merge)
        files.check_output(output.with_suffix(".json"), FLAGS.merge)
        tables = [latency.Table.load(path) for path in FLAGS.merge]
        merged = latency.Table.merge(tables, force=FLAGS.force)
    except (OSError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    merged.save(output)
    print(f"table: {output} ({len(merged.entries)} entries from {len(tables)} tables)")


def run() -> None:
    from tfcompress.cli import app as cli_app

    cli_app.run(main)


if __name__ == "__main__":
    run()
