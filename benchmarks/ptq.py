"""Post-training quantization of the reference models: float32 / float16 / dynamic / int8, measured in LiteRT.

    python benchmarks/ptq.py      # writes benchmarks/results/ptq.{md,json}; about 5 minutes on 2 cores

For each reference model and export mode: accuracy in Keras and in LiteRT on the full test split, .tflite
size raw and gzipped, median latency (LiteRT interpreter, batch 1) with 1 and 2 threads, a cross-check with
the `litert-benchmark` tool (1 thread), and the ratios to float32 measured in the same run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["models/lenet5_fashion_mnist.keras", "models/resnet20_fashion_mnist.keras"],
                  "Reference .keras models (relative to the repository).")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset of the models.")
flags.DEFINE_integer("runs", 100, "Timed inferences per latency measurement.", lower_bound=5)
flags.DEFINE_integer("num_calibration", 500, "Training examples that calibrate int8.", lower_bound=1)
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where ptq.md and ptq.json go.")

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
COLUMNS = [
    ("variant", "model / mode"), ("keras_accuracy", "Keras acc."), ("litert_accuracy", "LiteRT acc."),
    ("tflite_bytes", ".tflite bytes"), ("gzip_bytes", "gzip bytes"), ("tflite_bytes_ratio", "size ×"),
    ("latency_ms_t1", "ms, 1 thread"), ("latency_ms_t1_ratio", "speed-up 1 thr."),
    ("latency_ms_t2", "ms, 2 threads"), ("latency_ms_t2_ratio", "speed-up 2 thr."),
    ("litert_benchmark_ms_t1", "litert-benchmark ms, 1 thr."),
]


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    import tfcompress as tfc
    from tfcompress import export, files, latency, report

    all_rows, verdicts = [], []
    with tempfile.TemporaryDirectory(prefix="ptq-") as workdir:
        for model_path in FLAGS.models:
            model = export.load_keras_model(REPO / model_path)
            options = tfc.data.pipeline_options_for(model.input_shape, FLAGS.dataset)
            test = tfc.data.load(FLAGS.dataset, "test", batch_size=500, **options)
            calibration = tfc.data.load(FLAGS.dataset, "train", batch_size=100, seed=0, **options)
            keras_accuracy = tfc.training.evaluate(model, test)["accuracy"]
            rows = []
            for quantization in QUANTIZATIONS:
                print(f"{model.name} {quantization}", flush=True)
                flatbuffer = export.to_tflite(model, quantization, representative_data=calibration,
                                              num_calibration_samples=FLAGS.num_calibration)
                path = Path(workdir) / f"{model.name}_{quantization}.tflite"
                row = report.measure_variant(f"{model.name} {quantization}", model, flatbuffer, test, path,
                                             threads=(1, 2), runs=FLAGS.runs, keras_accuracy=keras_accuracy)
                cross_check = latency.benchmark(path, runner="litert_benchmark", threads=1, runs=FLAGS.runs)
                row["litert_benchmark_ms_t1"] = cross_check.latency_ms
                row["litert_benchmark_fallback"] = cross_check.fallback_reason
                row.pop("tflite")
                rows.append(row)
            report.add_ratios(rows, f"{model.name} float32", ["tflite_bytes", "latency_ms_t1", "latency_ms_t2"])
            int8 = rows[-1]
            loss_points = 100 * (int8["keras_accuracy"] - int8["litert_accuracy"])
            verdicts.append(
                f"{model.name}: int8 is {int8['latency_ms_t1_ratio']:.2f}× faster than float32 (1 thread) with "
                f"{loss_points:+.2f} points of accuracy lost"
            )
            all_rows.extend(rows)

    host = latency.describe_host()
    command = "python benchmarks/ptq.py " + f"--runs={FLAGS.runs} --num_calibration={FLAGS.num_calibration}"
    files.write_json(Path(FLAGS.output_dir) / "ptq.json", {
        "benchmark": "ptq", "command": command, "host": host, "tensorflow": tf.__version__,
        "litert": latency.interpreter.litert_version(), "rows": all_rows, "verdicts": verdicts,
    })
    text = "\n".join([
        "# Post-training quantization of the reference models (Fashion-MNIST test, 10,000 images)", "",
        f"Command: `{command}`  ",
        f"Machine: {host['cpu']}, {host['cores']} cores ({host['machine']}), TensorFlow {tf.__version__}, "
        f"ai-edge-litert {latency.interpreter.litert_version()}.  ",
        f"Latency: median of {FLAGS.runs} runs at batch 1 in the LiteRT interpreter (XNNPACK); ratios are to "
        "float32 of the same model, measured in the same run. `litert-benchmark` reports in 0.01 ms steps.", "",
        report.markdown_table(all_rows, COLUMNS), "",
        *[f"- {verdict}" for verdict in verdicts], "",
        "float16 stores weights in half precision but computes in float32 on this CPU; dynamic quantizes weights "
        "only; int8 runs integer kernels throughout.",
    ]) + "\n"
    files.write_text(Path(FLAGS.output_dir) / "ptq.md", text)
    print(text)


if __name__ == "__main__":
    app.run(main)
