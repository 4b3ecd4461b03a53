"""The main job end to end on the reference model: evaluate, compress, export, measure in LiteRT.

    python scripts/demo.py            # reference LeNet-5 on Fashion-MNIST; table in runs/demo/summary.md

Variants: the float32 model (before), int8 post-training quantization, and L1 channel pruning to half the
MACs with a short fine-tune, then int8. Each technique adds its variant to ``variants()``: a label, a
function giving the Keras model, and the export mode; every variant is measured the same way
(tfcompress.report).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "models/lenet5_fashion_mnist.keras", "Reference .keras model.")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset the model was trained on.")
flags.DEFINE_string("data_dir", None, "Folder with the dataset files, searched first.")
flags.DEFINE_string("output_dir", "runs/demo", "Where the .tflite files and the summary go.")
flags.DEFINE_integer("runs", 200, "Timed inferences per latency measurement.", lower_bound=1)
flags.DEFINE_integer("num_calibration", 500, "Examples that calibrate int8.", lower_bound=1)
flags.DEFINE_integer("finetune_limit", 20000, "Training images for the pruned model's one-epoch fine-tune.",
                     lower_bound=1)

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
    print(f"1/{len(variants(model, options)) + 1} evaluating {FLAGS.model} in Keras on {FLAGS.dataset} test")
    keras_accuracy = tfc.training.evaluate(model, test)["accuracy"]

    rows = []
    for step, (label, build, quantization) in enumerate(variants(model, options), start=2):
        print(f"{step}/{len(variants(model, options)) + 1} {label}: build, export {quantization}, measure in LiteRT")
        variant_model = build()
        flatbuffer = export.to_tflite(variant_model, quantization, representative_data=calibration,
                                      num_calibration_samples=FLAGS.num_calibration)
        rows.append(report.measure_variant(
            label, variant_model, flatbuffer, test, out / f"{Path(FLAGS.model).stem}_{step - 1}_{quantization}.tflite",
            runs=FLAGS.runs, keras_accuracy=keras_accuracy if variant_model is model else None,
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


def variants(model, options: dict) -> list[tuple[str, Callable[[], Any], str]]:
    """(label, Keras model builder, export mode) of every variant the demo measures."""
    import tfcompress as tfc

    def channel_pruned():
        small, _ = tfc.pruning.prune_channels(model, "l1", target_macs=0.5)
        train = tfc.data.load(FLAGS.dataset, "train", batch_size=128, augment=True, limit=FLAGS.finetune_limit,
                              data_dir=FLAGS.data_dir, **options)
        tfc.training.compile_classifier(small, tfc.training.sgd(0.01, int(train.cardinality()), "cosine"))
        small.fit(train, epochs=1, verbose=0, shuffle=False)
        return small

    return [
        ("float32 (before)", lambda: model, "float32"),
        ("int8 PTQ", lambda: model, "int8"),
        ("L1 channels → 50 % MACs, fine-tuned 1 epoch, int8", channel_pruned, "int8"),
    ]


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
