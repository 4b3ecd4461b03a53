"""The main job end to end on the reference model: evaluate, export float32 and int8, measure in LiteRT.

    python scripts/demo.py            # reference LeNet-5 on Fashion-MNIST; table in runs/demo/summary.md

Later techniques (pruning, SNIP, EC2T, Tucker) add their variant to ``variants()``: each variant is a Keras
model plus export options, and every variant is measured the same way (tfcompress.report).
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "models/lenet5_fashion_mnist.keras", "Reference .keras model.")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset the model was trained on.")
flags.DEFINE_string("data_dir", None, "Folder with the dataset files, searched first.")
flags.DEFINE_string("output_dir", "runs/demo", "Where the .tflite files and the summary go.")
flags.DEFINE_integer("runs", 200, "Timed inferences per latency measurement.", lower_bound=1)
flags.DEFINE_integer("num_calibration", 500, "Examples that calibrate int8.", lower_bound=1)

COLUMNS = [
    ("variant", "variant"), ("keras_accuracy", "Keras acc."), ("litert_accuracy", "LiteRT acc."),
    ("params", "params"), ("macs", "MACs"), ("tflite_bytes", ".tflite bytes"), ("gzip_bytes", "gzip bytes"),
    ("tflite_bytes_ratio", "size ×"), ("latency_ms_t1", "latency ms (1 thread)"), ("latency_ms_t1_ratio", "speed-up"),
]


def main(argv: list[str]) -> None:
    del argv
    import tfcompress as tfc
    from tfcompress import export, files, report

    start = time.time()
    out = Path(FLAGS.output_dir)
    model = export.load_keras_model(FLAGS.model)
    options = tfc.data.pipeline_options_for(model.input_shape, FLAGS.dataset)
    test = tfc.data.load(FLAGS.dataset, "test", batch_size=500, data_dir=FLAGS.data_dir, **options)
    calibration = tfc.data.load(FLAGS.dataset, "train", batch_size=100, data_dir=FLAGS.data_dir, seed=0, **options)
    print(f"1/3 evaluating {FLAGS.model} in Keras on {FLAGS.dataset} test")
    keras_accuracy = tfc.training.evaluate(model, test)["accuracy"]

    rows = []
    for label, quantization in (("float32 (before)", "float32"), ("int8 PTQ (after)", "int8")):
        print(f"2/3 exporting {label} and 3/3 measuring it in LiteRT ({FLAGS.runs} timed runs)")
        flatbuffer = export.to_tflite(model, quantization, representative_data=calibration,
                                      num_calibration_samples=FLAGS.num_calibration)
        rows.append(report.measure_variant(
            label, model, flatbuffer, test, out / f"{Path(FLAGS.model).stem}_{quantization}.tflite",
            runs=FLAGS.runs, keras_accuracy=keras_accuracy,
        ))
    report.add_ratios(rows, rows[0]["variant"], ["tflite_bytes", "latency_ms_t1"])
    table = report.markdown_table(rows, COLUMNS)
    host = tfc.latency.describe_host()
    summary = (f"# tfcompress demo: {FLAGS.model} on {FLAGS.dataset}\n\n{table}\n\n"
               f"Latency: LiteRT interpreter (XNNPACK), median of {FLAGS.runs} runs, batch 1, on {host['cpu']}. "
               f"Total time {time.time() - start:.0f} s.\n")
    files.write_text(out / "summary.md", summary)
    files.write_json(out / "summary.json", {"model": FLAGS.model, "dataset": FLAGS.dataset, "rows": rows,
                                            "host": host})
    print("\n" + summary)


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
