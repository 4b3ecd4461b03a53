"""EC2T vs TTQ vs float32 on the reference ResNet-20 (Fashion-MNIST 32×32), in one run.

    python benchmarks/ec2t.py            # bounded run (~20 min on 2 shared cores): training subset, few epochs
    python benchmarks/ec2t.py --full     # the reference schedule: whole training set, 20 + 15 epochs

Starting from the trained float32 model, each method ternarizes every convolution except the stem and the 1×1
projection shortcuts (the classifier stays full precision), as the references do: TTQ (threshold 0.05·max|W|)
with its official recipe (momentum SGD 0.1, L2 2e-4, stepped; scales from 1.0) and with the former one (EC2T's
Adam, scales from the mean); EC2T with the reference optimizer (Adam, 1e-4 for the model and shadow weights,
1e-5 for the centroids via ``ternary.CentroidAdam``) at two ``lambda_max_divr`` values (quantization epochs, then
retraining from the best-holdout quantization epoch with the assignment frozen), and the first again with the
reference code's w_n gradient sign (``wn_gradient="reference"``: the published numbers used it; ours is the
exact gradient). The holdout is ``--holdout_fraction`` of the training split. Reported on
the full test split: accuracy, sparsity of the ternary layers, their bits per weight (code entropy + centroids),
the model kernels' entropy-coded and the float32 ``.tflite``'s gzip size as ratios to float32, the MicroNet
score (CIFAR-100 reference, ternary counting), and the median training step time relative to plain training
(the float model trained with the same optimizer, batches and callbacks-free loop).

Paper anchor (CIFAR-10, 200+ epochs): ResNet-20 91.67 % → EC2T 91.01 % at 63.9 % sparsity.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string("model", "models/resnet20_fashion_mnist.keras", "Trained float32 .keras model (repo-relative).")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset of the model.")
flags.DEFINE_integer("train_limit", 25600, "Train on the first N training examples (0 = all).", lower_bound=0)
flags.DEFINE_integer("epochs", 2, "Quantization epochs (EC2T) / training epochs (TTQ gets epochs + retrain_epochs).",
                     lower_bound=1)
flags.DEFINE_integer("retrain_epochs", 1, "EC2T retrain epochs with the assignment frozen.", lower_bound=0)
flags.DEFINE_list("lambda_max_divrs", ["0.15", "0.25"], "The two EC2T lambda_max_divr settings.")
flags.DEFINE_float("ini_c_divr", 0.3, "EC2T initial centroid scale.", lower_bound=0.0)
flags.DEFINE_float("ttq_threshold", 0.05, "TTQ threshold (fraction of max|W|).")
flags.DEFINE_float("holdout_fraction", 0.1, "Training split held out to pick EC2T's best quantization epoch.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
flags.DEFINE_integer("timing_steps", 30, "Plain-training steps timed for the step-time baseline.", lower_bound=5)
flags.DEFINE_bool("full", False, "Reference schedule: all training data, 20 quantization + 15 retrain epochs.")
flags.DEFINE_bool("render_only", False, "Only rewrite ec2t.md from the measured rows in ec2t.json.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where ec2t.md and ec2t.json go.")

COLUMNS = [
    ("variant", "variant"), ("accuracy", "test acc."), ("delta_points", "Δ points"),
    ("sparsity_percent", "sparsity % (ternary layers)"), ("bits_per_weight", "bits/weight (ternary layers)"),
    ("entropy_coded_ratio", "entropy-coded kernels ×"), ("gzip_ratio", "gzip .tflite ×"),
    ("micronet_score", "MicroNet score"), ("step_ms", "step ms (median)"), ("step_time_ratio", "step time ×"),
    ("train_seconds", "train s"),
]


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.render_only:
        write_results(json.loads((Path(FLAGS.output_dir) / "ec2t.json").read_text()))
        return
    import keras
    import tensorflow as tf

    import tfcompress as tfc
    from tfcompress import export, latency, training
    from tfcompress.quantization import ec2t, scoring, ternary, ttq

    started = time.time()
    if FLAGS.full:
        FLAGS.train_limit, FLAGS.epochs, FLAGS.retrain_epochs = 0, 20, 15
    lambdas = [float(v) for v in FLAGS.lambda_max_divrs]
    float_model = export.load_keras_model(REPO / FLAGS.model)
    options = tfc.data.pipeline_options_for(float_model.input_shape, FLAGS.dataset)
    train = tfc.data.load(FLAGS.dataset, "train", batch_size=FLAGS.batch_size, augment=True, seed=0,
                          limit=FLAGS.train_limit or None, holdout_fraction=FLAGS.holdout_fraction, **options)
    holdout = tfc.data.load(FLAGS.dataset, "holdout", batch_size=500, holdout_fraction=FLAGS.holdout_fraction,
                            **options)
    test = tfc.data.load(FLAGS.dataset, "test", batch_size=500, **options)
    steps_per_epoch = int(train.cardinality())

    class StepTimer(keras.callbacks.Callback):
        """Wall time of each step, hooks of the other callbacks (the EC2T/TTQ update) included."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

        def median_ms(self) -> float:
            return 1000 * statistics.median(self.seconds[3:] or self.seconds)  # skip tracing steps

    def describe(name: str, model: keras.Model, timer: StepTimer | None, seconds: float | None) -> dict:
        print(f"evaluating {name}", flush=True)
        plain = export.strip(model)
        accuracy = training.evaluate(plain, test)["accuracy"]
        codes = scoring.code_report(model)
        size = export.size_report(export.to_tflite(plain))
        score = scoring.micronet_score(plain)
        return {
            "variant": name, "accuracy": accuracy,
            "sparsity": round(codes["ternary_sparsity"], 4) if codes["layers"] else None,
            "bits_per_weight": round(codes["ternary_bits_per_weight"], 3) if codes["layers"] else 32,
            "entropy_coded_bits": codes["model_entropy_coded_bits"], "float32_bits": codes["model_float32_bits"],
            "tflite_bytes": size.tflite_bytes, "gzip_bytes": size.gzip_bytes,
            "micronet_score": round(score.score, 5), "micronet_params": score.total.params,
            "micronet_ops": score.total.ops,
            "step_ms": round(timer.median_ms(), 1) if timer else None,
            "train_seconds": round(seconds, 1) if seconds is not None else None,
        }

    # Plain training of the float model with the same optimizer and batches: the step-time baseline, timed at
    # the start and again at the end of the run (the machine is shared); the faster median is used.
    plain_copy = keras.models.clone_model(float_model)
    plain_copy.set_weights(float_model.get_weights())
    training.compile_classifier(plain_copy, ternary.CentroidAdam(1e-4, 1e-5))
    plain_timers = [StepTimer(), StepTimer()]

    def time_plain(timer: StepTimer) -> None:
        print("timing plain training", flush=True)
        plain_copy.fit(train.take(FLAGS.timing_steps), epochs=1, verbose=0, callbacks=[timer])

    time_plain(plain_timers[0])
    rows = []
    total_epochs = FLAGS.epochs + FLAGS.retrain_epochs
    for recipe, scale_init, label in (("official", "ones", "official recipe"),
                                      ("ec2t", "mean", "former: EC2T's Adam, mean scales")):
        keras.utils.set_random_seed(0)
        model = ttq.ternarize(float_model, FLAGS.ttq_threshold, scale_init=scale_init)
        timer, start = StepTimer(), time.time()
        print(f"TTQ ({label}): {total_epochs} epochs × {steps_per_epoch} steps", flush=True)
        ttq.train(model, train, total_epochs, threshold=FLAGS.ttq_threshold, recipe=recipe, callbacks=[timer],
                  verbose=2)
        rows.append(describe(f"TTQ t={FLAGS.ttq_threshold:g} ({label})", model, timer, time.time() - start))
    ec2t_runs = [(lambda_max_divr, "exact") for lambda_max_divr in lambdas] + [(lambdas[0], "reference")]
    for lambda_max_divr, wn_gradient in ec2t_runs:
        keras.utils.set_random_seed(0)
        model = ec2t.ternarize(float_model, FLAGS.ini_c_divr, wn_gradient=wn_gradient)
        timer, start = StepTimer(), time.time()
        print(f"EC2T λ={lambda_max_divr} (w_n gradient {wn_gradient}): {FLAGS.epochs}+{FLAGS.retrain_epochs} "
              f"epochs × {steps_per_epoch} steps", flush=True)
        history = ec2t.train(model, train, FLAGS.epochs, FLAGS.retrain_epochs, lambda_max_divr=lambda_max_divr,
                             validation_data=holdout, callbacks=[timer], verbose=2)
        sign = " (reference w_n sign)" if wn_gradient == "reference" else ""
        row = describe(f"EC2T ini={FLAGS.ini_c_divr:g} λ={lambda_max_divr:g}{sign}", model, timer,
                       time.time() - start)
        row["best_quantization_epoch"] = history.get("best_quantization_epoch")
        rows.append(row)
    time_plain(plain_timers[1])
    rows.insert(0, describe("float32 (reference)", float_model, min(plain_timers, key=StepTimer.median_ms), None))

    baseline = rows[0]
    for row in rows:
        row["delta_points"] = round(100 * (row["accuracy"] - baseline["accuracy"]), 2)
        row["entropy_coded_ratio"] = round(row["float32_bits"] / row["entropy_coded_bits"], 2)
        row["gzip_ratio"] = round(baseline["gzip_bytes"] / row["gzip_bytes"], 2)
        row["step_time_ratio"] = round(row["step_ms"] / baseline["step_ms"], 2) if row["step_ms"] else None

    minutes = (time.time() - started) / 60
    command = "python benchmarks/ec2t.py " + ("--full" if FLAGS.full else " ".join(
        f"--{name}={FLAGS[name].value}" for name in ("train_limit", "epochs", "retrain_epochs", "ini_c_divr")
    ) + f" --lambda_max_divrs={','.join(FLAGS.lambda_max_divrs)}")
    schedule = (f"{FLAGS.train_limit or 'all 60,000'} training images (augmented), batch {FLAGS.batch_size}, "
                f"{steps_per_epoch} steps/epoch; TTQ {total_epochs} epochs; EC2T {FLAGS.epochs} quantization + "
                f"{FLAGS.retrain_epochs} retrain epochs")
    write_results({
        "benchmark": "ec2t", "command": command, "model": FLAGS.model, "schedule": schedule,
        "host": latency.describe_host(), "tensorflow": tf.__version__, "run_minutes": round(minutes, 1),
        "rows": rows,
    })


def write_results(result: dict) -> None:
    """Writes ec2t.json and ec2t.md (verdicts and display columns derived from the measured rows)."""
    from tfcompress import files, report

    for row in result["rows"]:
        if "accuracy_delta_points" in row:  # the key of the first runs, renamed: tables show accuracy as %
            row["delta_points"] = row.pop("accuracy_delta_points")
        row["sparsity_percent"] = round(100 * row["sparsity"], 2) if row.get("sparsity") is not None else None
    result["verdicts"] = _verdicts(result["rows"])
    host = result["host"]
    files.write_json(Path(FLAGS.output_dir) / "ec2t.json", result)
    text = "\n".join([
        "# EC2T vs TTQ vs float32: ResNet-20 on Fashion-MNIST 32×32 (test split, 10,000 images)", "",
        f"Command: `{result['command']}` ({result['run_minutes']:.0f} min)  ",
        f"Machine: {host['cpu']}, {host['cores']} cores ({host['machine']}), TensorFlow {result['tensorflow']}; "
        "shared with other jobs, so step times are medians of the same run.  ",
        f"Schedule: {result['schedule']}. Optimizer: EC2T and the former TTQ, Adam 1e-4 (model and shadow "
        "weights), 1e-5 (centroids); TTQ's official recipe, momentum SGD from 0.1 with L2 2e-4, ÷10 at 82/164, "
        "123/164 and 150/164 of its epochs.  ",
        "Ternarized: every convolution except the stem and the 1×1 projection shortcuts (as the references; before "
        "the fidelity changes of issue 15 the shortcuts were ternary, which the ≥ 25× entropy-coded target of "
        "issue 6 counted on); they and the classifier stay float32. Sparsity and bits/weight "
        "are over the ternary layers (bits = code entropy + two float32 centroids per layer); the entropy-coded "
        "ratio is float32 kernel bits / (ternary layers entropy-coded + other kernels at 32 bits); gzip ratio: "
        "gzipped float32 `.tflite` of the float model / of the stripped model. MicroNet score: CIFAR-100 "
        "reference (WRN-28-10), ternary layers counted as in efficientCNNs (cheapest storage format, 2 mults per "
        "output, tree adder). Step time: median wall time of a training step (the EC2T/TTQ assignment update "
        "included) over the run, relative to plain training of the float model with the same optimizer.", "",
        report.markdown_table(result["rows"], COLUMNS), "",
        "Targets (issue 6):", *[f"- {v}" for v in result["verdicts"]], "",
        "Paper anchor (CIFAR-10, full schedule): ResNet-20 91.67 % → EC2T 91.01 % at 63.9 % sparsity; TTQ 91.13 % "
        "at 30–50 % sparsity.",
    ]) + "\n"
    files.write_text(Path(FLAGS.output_dir) / "ec2t.md", text)
    plot(result, Path(FLAGS.output_dir))
    print(text)


def plot(result: dict, folder: Path) -> None:
    """``ec2t.png``: accuracy against the entropy-coded kernel size, per variant, the Pareto front marked; and
    ``ec2t_training.png`` (sparsity, code entropy, accuracy per epoch) when the rows carry their Keras ``history``."""
    from tfcompress import plots

    plots.accuracy_vs_size(
        result["rows"], folder / "ec2t.png", x="entropy_coded_bits", x_scale=1 / 8 / 1024, log_x=True,
        label="variant", title="EC2T vs TTQ vs float32: ResNet-20 on Fashion-MNIST 32×32",
        xlabel="entropy-coded kernels, KB (log)", ylabel="test accuracy, %")
    histories = {row["variant"]: row["history"] for row in result["rows"] if row.get("history")}
    if histories:  # rows of runs that recorded ec2t.train's history (the committed ones did not); absent keys skipped
        plots.training_curves(histories, folder / "ec2t_training.png", title="EC2T / TTQ training",
                              keys=["ternary_sparsity", "ternary_entropy_bits", "val_accuracy", "loss"])


def _verdicts(rows: list[dict]) -> list[str]:
    ec2t_rows = [row for row in rows if row["variant"].startswith("EC2T")]
    verdicts = []
    for row in ec2t_rows:
        sparse_ok = row["sparsity"] >= 0.60 and row['delta_points'] >= -1.0
        verdicts.append(
            f"{row['variant']}: ≥ 60 % sparsity with ≤ 1 point loss — {'met' if sparse_ok else 'NOT met'} "
            f"({100 * row['sparsity']:.1f} %, {row['delta_points']:+.2f} points); ≥ 25× smaller "
            f"entropy-coded kernels — {'met' if row['entropy_coded_ratio'] >= 25 else 'NOT met'} "
            f"({row['entropy_coded_ratio']:.1f}×); step time ≤ 1.5× plain — "
            f"{'met' if row['step_time_ratio'] <= 1.5 else 'NOT met'} ({row['step_time_ratio']:.2f}×)"
        )
    return verdicts


if __name__ == "__main__":
    app.run(main)
