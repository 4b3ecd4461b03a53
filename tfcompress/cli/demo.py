"""The main job end to end on the reference model: evaluate, compress, export, measure in LiteRT.

    python scripts/demo.py            # reference LeNet-5 on Fashion-MNIST; table in runs/demo/summary.md

Variants: the float32 model (before), int8 post-training quantization, L1 channel pruning to half the MACs,
one-shot magnitude pruning to 90 % sparsity, and EC2T ternarization of conv2 and fc1 — each with one short
epoch of training, then int8. Each technique adds its variant to ``variants()``: a label, a function giving
the Keras model, and the export options; every variant is measured the same way (tfcompress.report).
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
    ("params", "params"), ("nonzero_params", "non-zero"), ("macs", "MACs"), ("tflite_bytes", ".tflite bytes"),
    ("gzip_bytes", "gzip bytes"),
    ("gzip_bytes_ratio", "gzip size ×"), ("latency_ms_t1", "latency ms (1 thread)"),
    ("latency_ms_t1_ratio", "speed-up"), ("kernels", "LiteRT kernels"),
]


def main(argv: list[str]) -> None:
    del argv
    import tfcompress as tfc
    from tfcompress import export, files, report
    from tfcompress import progress as progress_bars
    from tfcompress.cli.flags import load_model_for_dataset

    start = time.time()
    out = files.check_output_folder(FLAGS.output_dir)
    for name in ("summary.md", "summary.json"):
        files.check_output(out / name, inputs=[FLAGS.model])
    model = load_model_for_dataset(FLAGS.model)
    options = tfc.data.pipeline_options_for(model.input_shape, FLAGS.dataset)
    test = tfc.data.load(FLAGS.dataset, "test", batch_size=500, data_dir=FLAGS.data_dir, **options)
    calibration = tfc.data.load(FLAGS.dataset, "train", batch_size=100, data_dir=FLAGS.data_dir, seed=0, **options)
    measured = variants(model, options)
    tflite_paths = [out / f"{Path(FLAGS.model).stem}_{step}.tflite" for step in range(1, len(measured) + 1)]
    for path in tflite_paths:
        files.check_output(path, inputs=[FLAGS.model])
    say = progress_bars.around_bars(print)  # the stage lines above the bar, not through it
    rows = []
    with progress_bars.bar(len(measured) + 1, "demo", unit="stage") as bar:
        say(f"1/{len(measured) + 1} evaluating {FLAGS.model} in Keras on {FLAGS.dataset} test")
        keras_accuracy = tfc.training.evaluate(model, test)["accuracy"]
        bar.update(1)
        for step, (label, build, export_options) in enumerate(measured, start=2):
            say(f"{step}/{len(measured) + 1} {label}: build, export, measure in LiteRT")
            bar.note(label)
            variant_model = build()
            flatbuffer = export.to_tflite(variant_model, representative_data=calibration,
                                          num_calibration_samples=FLAGS.num_calibration, **export_options)
            rows.append(report.measure_variant(
                label, variant_model, flatbuffer, test, tflite_paths[step - 2],
                runs=FLAGS.runs, keras_accuracy=keras_accuracy if variant_model is model else None,
            ))
            bar.update(1)
    report.add_ratios(rows, rows[0]["variant"], ["gzip_bytes", "latency_ms_t1"])
    table = report.markdown_table(rows, COLUMNS)
    host = tfc.latency.describe_host()
    summary = (f"# tfcompress demo: {FLAGS.model} on {FLAGS.dataset}\n\n{table}\n\n"
               f"Latency: LiteRT interpreter, median of {FLAGS.runs} runs, batch 1, on {host['cpu']}; XNNPACK "
               "kernels unless it cannot run the model (sparse quantized kernels run on LiteRT's built-in ones). "
               f"Total time {time.time() - start:.0f} s.\n")
    files.write_text(out / "summary.md", summary)
    files.write_json(out / "summary.json", {"model": FLAGS.model, "dataset": FLAGS.dataset, "rows": rows,
                                            "host": host})
    print("\n" + summary)


def variants(model, options: dict) -> list[tuple[str, Callable[[], Any], dict[str, Any]]]:
    """(label, Keras model builder, ``export.to_tflite`` options) of every variant the demo measures."""
    import tfcompress as tfc

    def finetune_train():
        return tfc.data.load(FLAGS.dataset, "train", batch_size=128, augment=True, limit=FLAGS.finetune_limit,
                             data_dir=FLAGS.data_dir, **options)

    def finetuned(compressed):
        train = finetune_train()
        tfc.training.compile_classifier(compressed, tfc.training.sgd(0.01, int(train.cardinality()), "cosine"))
        compressed.fit(train, epochs=1, verbose=0, shuffle=False, callbacks=[tfc.training.StopOnNonFinite()])
        return compressed

    def ec2t_ternary():
        ternary = tfc.quantization.ec2t.ternarize(model, ini_c_divr=0.3, layers=["conv2", "fc1"])
        tfc.quantization.ec2t.train(ternary, finetune_train(), epochs=1, lambda_max_divr=0.15, verbose=0,
                                    callbacks=[tfc.training.StopOnNonFinite()])
        return ternary

    return [
        ("float32 (before)", lambda: model, {"quantization": "float32"}),
        ("int8 PTQ", lambda: model, {"quantization": "int8"}),
        ("L1 channels → 50 % MACs, fine-tuned 1 epoch, int8",
         lambda: finetuned(tfc.pruning.prune_channels(model, "l1", target_macs=0.5).model), {"quantization": "int8"}),
        ("magnitude 90 % sparse, fine-tuned 1 epoch, int8 sparse",
         lambda: finetuned(tfc.pruning.magnitude.prune_magnitude(model, 0.9)),
         {"quantization": "int8", "sparse": True}),
        ("EC2T ternary conv2 + fc1, 1 epoch, int8", ec2t_ternary, {"quantization": "int8"}),
    ]


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
