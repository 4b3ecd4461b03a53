"""Exports a .keras model to .tflite with post-training quantization, and reports size and LiteRT parity.

    python scripts/export.py --model=models/resnet20_fashion_mnist.keras --quantization=int8 \
        --output=/tmp/resnet20_int8.tflite
    python scripts/export.py --model=dogs.keras --dataset=/data/dogs --scaling=tf --quantization=int8 \
        --output=/tmp/dogs_int8.tflite

int8 is calibrated on the model's data (``--calibration_data``, else its training images). Writes OUTPUT atomically
and OUTPUT.json (sizes, parity with the Keras model on its test images — on random inputs for a model without data —
the data and flags).
Compression layers (WeightMask from ``scripts/snip.py`` and ``scripts/prune.py``, ternary layers from
``scripts/ternarize.py``) are stripped into plain layers first: zeros in place, ternary kernels with their three
values (after int8's BatchNorm folding and per-channel scales, at most three per output channel).
"""

from __future__ import annotations

from absl import flags

from tfcompress.cli.flags import define_dataset_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Input .keras model.")
flags.DEFINE_enum("quantization", "float32", ["float32", "float16", "dynamic", "int8"], "Post-training quantization.")
flags.DEFINE_integer("num_calibration", 500, "Training examples that calibrate int8 ranges.", lower_bound=1)
flags.DEFINE_bool("int8_io", False, "With int8: int8 model input and output (else float32).")
flags.DEFINE_bool("sparse", False, "Store mostly-zero weights in TFLite's sparse format.")
flags.DEFINE_integer("parity_examples", 2000, "Test examples on which Keras and LiteRT outputs are compared (0: skip).",
                     lower_bound=0)
flags.DEFINE_string("output", None, "Output .tflite path.")
define_dataset_flags()
flags.mark_flags_as_required(["model", "output"])
flags.register_validator("output", lambda v: v is None or v.endswith(".tflite"), message="--output must end in .tflite")


def main(argv: list[str]) -> None:
    del argv
    from tfcompress import export, files, runtime
    from tfcompress.cli import compression
    from tfcompress.cli.flags import data_report, has_data, load_model_for_dataset, run_data

    output = files.check_output(FLAGS.output, inputs=[FLAGS.model])
    sidecar = files.check_output(files.sidecar_path(output), inputs=[FLAGS.model])
    model = load_model_for_dataset(FLAGS.model)  # fixes a dynamic input at the dataset's size: LiteRT needs one
    stripped = compression.compression_layers(model)
    if stripped:
        print(f"stripping into plain layers: {compression.describe(model)}")
    calibration = None
    if FLAGS.quantization == "int8":
        calibration = run_data("int8 calibration").batches("calibration", batch_size=FLAGS.batch_size, shuffle=True,
                                                           seed=0)
    flatbuffer = export.to_tflite(
        model, FLAGS.quantization, representative_data=calibration, num_calibration_samples=FLAGS.num_calibration,
        int8_io=FLAGS.int8_io, sparse=FLAGS.sparse,
    )
    report = {"size": export.size_report(flatbuffer, model).to_dict(), "stripped": stripped}
    where = "random inputs (the model records no data)"
    if FLAGS.parity_examples:
        if has_data():
            test, where = run_data().batches("test", batch_size=FLAGS.batch_size), run_data().test.description
        else:
            test = _random_inputs(model.input_shape[1:], min(FLAGS.parity_examples, 256))
        report["parity"] = runtime.parity(model, flatbuffer, test, limit=FLAGS.parity_examples).to_dict()
        report["parity"]["inputs"] = where
        if not has_data():
            del report["parity"]["keras_accuracy"], report["parity"]["tflite_accuracy"]
    report.update(data_report())
    report["flags"] = {name: FLAGS[name].value for name in (
        "model", "quantization", "num_calibration", "int8_io", "sparse", "dataset", "output")}
    files.write_bytes(output, flatbuffer)
    files.write_json(sidecar, report)
    size = report["size"]
    line = f"{output}: {size['tflite_bytes']:,} bytes ({size['gzip_bytes']:,} gzipped)"
    if "parity" in report:
        p = report["parity"]
        line += (f"; vs Keras on {p['examples']} images of {where}: top-1 agreement {p['top1_agreement']:.4f}, "
                 f"max |Δlogit| {p['max_abs_diff']:.3g} ({p['relative_max_abs_diff']:.2g} of the logit range)")
        if p.get("keras_accuracy") is not None:
            metric = run_data().metric_name
            line += f", {metric} Keras {p['keras_accuracy']:.4f} / LiteRT {p['tflite_accuracy']:.4f}"
    print(line)


def _random_inputs(shape: tuple[int, ...], count: int):
    """Standard-normal inputs with dummy labels: parity (not accuracy) for a model that has no data."""
    import numpy as np
    import tensorflow as tf

    x = np.random.default_rng(0).standard_normal((count, *shape)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, np.zeros(count, np.int64))).batch(64)


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
