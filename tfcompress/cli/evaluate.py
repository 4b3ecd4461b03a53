"""Evaluates a .keras or .tflite model on a dataset's test split (LiteRT for .tflite).

    python scripts/evaluate.py --model=models/lenet5_fashion_mnist.keras --dataset=fashion_mnist
    python scripts/evaluate.py --model=/tmp/lenet5_int8.tflite --dataset=fashion_mnist --json=/tmp/eval.json
"""

from __future__ import annotations

from absl import flags

from tfcompress.cli.flags import define_dataset_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A .keras model or a .tflite flatbuffer.")
flags.DEFINE_enum("split", "test", ["test", "holdout", "train"], "Split to evaluate on.")
flags.DEFINE_float("holdout", 0.1, "Holdout fraction (for --split=holdout).")
flags.register_validator("holdout", lambda v: 0.0 < v < 1.0, message="--holdout must be in (0, 1)")
flags.DEFINE_integer("limit", None, "Evaluate on the first N examples only.", lower_bound=1)
flags.DEFINE_integer("threads", 2, "LiteRT interpreter threads.", lower_bound=1)
flags.DEFINE_string("json", None, "Also write the result to this JSON file.")
define_dataset_flags()
flags.mark_flag_as_required("model")


def main(argv: list[str]) -> None:
    del argv
    from pathlib import Path

    from tfcompress import files, runtime, training
    from tfcompress.cli.flags import dataset_for_model, load_model_for_dataset

    output = files.check_output(FLAGS.json, inputs=[FLAGS.model], kind="json") if FLAGS.json else None
    path = Path(FLAGS.model)
    split_options = {"holdout_fraction": FLAGS.holdout} if FLAGS.split == "holdout" else {}
    if path.suffix == ".tflite" or (path.is_file() and files.file_kind(path) == "tflite"):
        model = runtime.TFLiteModel(path, num_threads=FLAGS.threads)
        dataset = dataset_for_model((None, *model.input_shape), FLAGS.split, **split_options)
        metrics = runtime.evaluate_tflite(model, dataset, limit=FLAGS.limit)
        runner = "litert"
    else:
        model = load_model_for_dataset(FLAGS.model)
        dataset = dataset_for_model(model.input_shape, FLAGS.split, limit=FLAGS.limit, **split_options)
        metrics = training.evaluate(model, dataset)
        runner = "keras"
    result = {"model": str(path), "runtime": runner, "dataset": FLAGS.dataset, "split": FLAGS.split, **metrics}
    if output is not None:
        files.write_json(output, result)
    print(f"{path.name} ({runner}) on {FLAGS.dataset} {FLAGS.split}: accuracy {metrics['accuracy']:.4f} "
          f"over {metrics['examples']} examples")


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
