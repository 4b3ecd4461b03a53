"""A model and a budget in, a measured ``.tflite`` out; or a recipe of stages run and measured one by one.

    python scripts/compress.py --model=models/resnet20_fashion_mnist.keras --latency_fraction=0.5 \
        --max_accuracy_drop=1.0 --device=litert --output_dir=/tmp/r20_half
    python scripts/compress.py --model=M.keras --latency_ms=2.5 --device=ssh://pi@raspberrypi --output_dir=D
    python scripts/compress.py --model=M.keras --recipe=recipe.json --output_dir=D

The data is the model's: ``--dataset`` (a folder of the user's images, labelled by class sub-folders or not, an
.npz, a dataset name) with the model's ``--scaling``, or what the model's report records. On unlabelled images, or
with ``--min_agreement``, every accuracy is top-1 agreement with the original model and fine-tuning is pure
distillation from it. A model whose targets are its own outputs (several heads; no class labels for a model that is
not a classifier) is judged by the output error of its worst head, limited by ``--max_output_error``, and fine-tuned
by matching the original's outputs on every head.

Budget mode (``--latency_ms`` or ``--latency_fraction`` of the model's measured float32 latency): measures the model
on ``--device`` in float32 and int8 and keeps the faster precision whose accuracy fits; builds (or loads,
``--table``) the device's latency table; prunes to the table's prediction (``--method``), fine-tunes with
distillation from the original, exports, measures on the device, and aims lower while the measurement misses the
budget (``--max_rounds``); with ``--input_size``, the network first runs on fewer pixels. Says plainly when the
budget cannot be met within ``--max_accuracy_drop`` points, with the best pair reached. Recipe mode runs the stages
of ``--recipe`` (see tfcompress.pipeline.recipe).

OUTPUT_DIR gets model.keras and model.tflite (each with a .json report: the original and the data it was judged on),
recipe.json (what reproduces the result: ``--recipe`` it), summary.md, summary.json, summary.png, and one folder per
stage or round; a rerun resumes where a run stopped. Exits with status 3 when the budget is not met (the outputs are
written all the same: the best pair reached).
"""

from __future__ import annotations

from absl import flags

from tfcompress.cli.flags import define_dataset_flags
from tfcompress.latency.devices import DEVICE_HELP

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Input .keras model (logits output).")
flags.DEFINE_string("output_dir", None, "Folder for the result, the report and the stages (resumes a run there).")
flags.DEFINE_string("recipe", None, "Recipe mode: a JSON list of stages.")
flags.DEFINE_float("latency_ms", None, "Budget mode: the latency to reach on --device, in ms.")
flags.DEFINE_float("latency_fraction", None, "Budget mode: the latency to reach as a fraction of the model's "
                   "measured float32 latency on --device, in (0, 1).")
flags.DEFINE_float("max_accuracy_drop", 1.0, "Budget mode: top-1 points the result may lose (LiteRT, against "
                   "the float32 original).", lower_bound=0.0)
flags.DEFINE_float("min_agreement", None, "Budget mode: instead of an accuracy limit, the top-1 agreement with the "
                   "original model the result must keep, in (0, 1] (needs no labels; e.g. 0.97).")
flags.register_validator("min_agreement", lambda v: v is None or 0 < v <= 1, message="--min_agreement: in (0, 1]")
flags.DEFINE_float("max_output_error", None, "Budget mode, for a model judged by its outputs (several heads, no "
                   "labels): the output error of the worst head the result may reach — RMS of the difference to the "
                   "original's outputs over their spread, e.g. 0.05.")
flags.register_validator("max_output_error", lambda v: v is None or 0 < v < 1,
                         message="--max_output_error: in (0, 1), e.g. 0.05")
flags.DEFINE_enum("method", "fisher", ["fisher", "netadapt", "l1", "uniform"], "Budget mode: how to prune to "
                  "the table's prediction (latency-aware Fisher was best in benchmarks/results/netadapt.md; l1 for "
                  "a model judged by its outputs).")
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "int8"], "Budget mode: export precision (auto: the "
                  "faster measured one within the accuracy limit).")
flags.DEFINE_string("input_size", None, "Budget mode: run the network on fewer pixels behind a Resizing layer that "
                    "keeps the model's input (the same weights, fine-tuned after): a size in px, or 'auto' — the "
                    "largest size down to half the input whose unpruned model measures within the budget, else the "
                    "smallest with channels pruned for the rest. Default: the resolution stays.")
flags.register_validator("input_size", lambda v: v is None or v == "auto" or (v.isdigit() and int(v) > 0),
                         message="--input_size: a size in px (e.g. 112) or 'auto'")
flags.DEFINE_string("table", None, "The device's latency table (.npz) for latency targets; budget mode builds "
                    "and saves one in OUTPUT_DIR when not given.")
flags.DEFINE_integer("finetune_epochs", 1, "Budget mode: distillation epochs per round.", lower_bound=1)
flags.DEFINE_float("lr", 0.01, "Budget mode: fine-tune learning rate (SGD, cosine).", lower_bound=0.0)
flags.DEFINE_float("alpha", 0.1, "Budget mode: weight of the labels in the distillation loss.")
flags.DEFINE_float("temperature", 5.0, "Budget mode: distillation temperature.")
flags.DEFINE_integer("max_rounds", 3, "Budget mode: prune–distil–measure rounds at most.", lower_bound=1)
flags.DEFINE_integer("fisher_steps", None, "Budget mode: Fisher pruning's training steps at most.", lower_bound=1)
flags.DEFINE_integer("fisher_prune_every", 10, "Budget mode: Fisher pruning's steps between prunes (thesis: 100).",
                     lower_bound=1)
flags.DEFINE_string("device", "litert", DEVICE_HELP)
flags.DEFINE_integer("threads", 1, "Inference threads on the device.", lower_bound=1)
flags.DEFINE_integer("runs", 50, "Timed inferences per measurement.", lower_bound=1)
flags.DEFINE_integer("eval_limit", 2000, "LiteRT accuracy on the first N test images (0: all).", lower_bound=0)
flags.DEFINE_float("holdout_fraction", 0.1, "Part of the training split kept out of training (NetAdapt and "
                   "evaluation-led decomposition compare candidates on it).")
flags.DEFINE_integer("train_limit", None, "Train on the first N training examples only.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of shuffling, augmentation and every stage.")
define_dataset_flags()
flags.mark_flags_as_required(["model", "output_dir"])
flags.register_multi_flags_validator(
    ["recipe", "latency_ms", "latency_fraction"], lambda f: sum(f[k] is not None for k in f) == 1,
    message="give exactly one of --recipe (recipe mode), --latency_ms or --latency_fraction (budget mode)")
flags.register_validator("latency_fraction", lambda v: v is None or 0 < v < 1,
                         message="--latency_fraction is a fraction of the measured float32 latency, in (0, 1)")
flags.register_validator("latency_ms", lambda v: v is None or v > 0, message="--latency_ms must be > 0")
flags.register_validator("holdout_fraction", lambda v: 0 < v < 1, message="--holdout_fraction: in (0, 1)")


def main(argv: list[str]) -> None:
    del argv
    import tfcompress as tfc
    from tfcompress.cli import flags as data_flags
    from tfcompress.cli.flags import data_report, load_model_for_dataset, run_data

    folder = tfc.files.check_output_folder(FLAGS.output_dir)
    recipe = tfc.pipeline.Recipe.load(FLAGS.recipe) if FLAGS.recipe else None  # a bad recipe fails before work
    tfc.latency.open_device(FLAGS.device)
    model = load_model_for_dataset(FLAGS.model)
    model_data = run_data("compression")
    max_drop, method = FLAGS.max_accuracy_drop, FLAGS.method
    if model_data.metric_name == "output error":
        if FLAGS["max_accuracy_drop"].present or FLAGS.min_agreement is not None:
            raise ValueError("this model is judged by the output error of its heads, not by accuracy: limit it with "
                             "--max_output_error (e.g. 0.05)")
        if FLAGS.max_output_error is None and recipe is None:
            raise ValueError("this model's targets are its own outputs (several heads, or no class labels): give "
                             "--max_output_error, the worst head's error the result may reach (e.g. 0.05)")
        if not FLAGS["method"].present:
            method = "l1"  # fisher and netadapt score channels by a class loss
    elif FLAGS.max_output_error is not None:
        raise ValueError(f"--max_output_error limits a model judged by its outputs; this one is judged by "
                         f"{model_data.metric_name}: give --max_accuracy_drop or --min_agreement")
    if FLAGS.min_agreement is not None:  # judged by agreement with the original, whatever labels there are
        if FLAGS["max_accuracy_drop"].present:
            raise ValueError("give --max_accuracy_drop or --min_agreement, not both")
        model_data = model_data.labelled_by(model, batch_size=FLAGS.batch_size, replace=True)
        data_flags.use_data(model_data)
        max_drop = 100.0 * (1.0 - FLAGS.min_agreement)  # the original agrees with itself: 100 %
    print(f"data: {model_data.train.description} ({len(model_data.train)} images), test "
          f"{model_data.test.description} ({len(model_data.test)}), scaling {model_data.preprocessing.describe()}; "
          f"limit on {model_data.metric_name}")
    # model.keras.json and model.tflite.json: the results record their original and data, so the next program
    # (export, evaluate) finds them; written with the results, not before a refusal
    recorded = {"source": FLAGS.model, "metric": model_data.metric_name, **data_report()}

    def record() -> None:
        for result_file in ("model.keras", "model.tflite"):
            tfc.files.write_json(folder / f"{result_file}.json", recorded)

    context = tfc.pipeline.Context.of_data(model, model_data, batch_size=FLAGS.batch_size,
                                           holdout_fraction=FLAGS.holdout_fraction, train_limit=FLAGS.train_limit,
                                           seed=FLAGS.seed, augment=FLAGS.augment)
    measurement = tfc.pipeline.Measurement(device=FLAGS.device, threads=FLAGS.threads, runs=FLAGS.runs,
                                           eval_limit=FLAGS.eval_limit or None)
    if recipe is not None:
        if FLAGS.table:  # for stages with a latency target
            context.table = tfc.latency.Table.load(FLAGS.table)
        result = tfc.pipeline.run_recipe(model, recipe, context, folder, measurement, seed=FLAGS.seed)
        record()
        print(result.table())
        print(f"→ {result.tflite} ({folder / 'summary.md'})")
        return
    result = tfc.compress(
        model, context, folder=folder, latency_ms=FLAGS.latency_ms, latency_fraction=FLAGS.latency_fraction,
        max_accuracy_drop=max_drop, max_output_error=FLAGS.max_output_error, measurement=measurement, method=method,
        precision=FLAGS.precision, table_path=FLAGS.table, finetune_epochs=FLAGS.finetune_epochs, lr=FLAGS.lr,
        alpha=FLAGS.alpha, temperature=FLAGS.temperature, max_rounds=FLAGS.max_rounds,
        fisher_steps=FLAGS.fisher_steps, fisher_prune_every=FLAGS.fisher_prune_every,
        input_size=FLAGS.input_size if FLAGS.input_size in (None, "auto") else int(FLAGS.input_size),
    )
    record()
    print(tfc.pipeline.run.summary_table(result.rows))
    print(result.message)
    table = f" --table={result.table_path}" if result.table_path else ""
    print(f"→ {result.tflite} ({folder / 'summary.md'}; reproduce with --recipe={folder / 'recipe.json'}{table})")
    if not result.met:
        raise SystemExit(3)


def run() -> None:
    from tfcompress.cli import app

    app.run(main)
