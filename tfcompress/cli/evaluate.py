"""Evaluates a .keras or .tflite model on the test images of its data (LiteRT for .tflite).

    python scripts/evaluate.py --model=models/lenet5_fashion_mnist.keras
    python scripts/evaluate.py --model=/tmp/lenet5_int8.tflite --json=/tmp/eval.json
    python scripts/evaluate.py --model=dogs.keras --dataset=/data/dogs --scaling=tf

The data is the model's (what its report records) unless ``--dataset`` says otherwise. On unlabelled images the
number is top-1 agreement with the original model (the first of the reports' lineage).
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
    from tfcompress.cli.flags import (
        data_for_tflite,
        data_report,
        dataset_for_model,
        load_model_for_dataset,
        metric_name,
        run_data,
    )

    output = files.check_output(FLAGS.json, inputs=[FLAGS.model], kind="json") if FLAGS.json else None
    path = Path(FLAGS.model)
    split_options = {"holdout_fraction": FLAGS.holdout} if FLAGS.split == "holdout" else {}
    if path.suffix == ".tflite" or (path.is_file() and files.file_kind(path) == "tflite"):
        model = runtime.TFLiteModel(path, num_threads=FLAGS.threads)
        data_for_tflite(FLAGS.model, model.input_shape, model.output_width)
        dataset = dataset_for_model((None, *model.input_shape), FLAGS.split, **split_options)
        metrics = runtime.evaluate_tflite(model, dataset, limit=FLAGS.limit)
        runner = "litert"
    else:
        model = load_model_for_dataset(FLAGS.model)
        run_data("evaluation")
        dataset = dataset_for_model(model.input_shape, FLAGS.split, limit=FLAGS.limit, **split_options)
        metrics = training.evaluate(model, dataset)
        runner = "keras"
    metric = metric_name()
    result = {"model": str(path), "runtime": runner, "split": FLAGS.split, "metric": metric, **metrics,
              **data_report()}
    if output is not None:
        files.write_json(output, result)
    where = run_data().test.description if FLAGS.split == "test" else f"{FLAGS.split} of {run_data().train.description}"
    value = metrics["accuracy"] if "accuracy" in metrics else metrics["output_error"]
    heads = (f" (per output: {', '.join(f'{e:.4f}' for e in metrics['per_output_error'])})"
             if "per_output_error" in metrics else "")
    print(f"{path.name} ({runner}) on {where}: {metric} {value:.4f}{heads} over {metrics['examples']} examples")


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
