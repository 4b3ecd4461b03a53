"""Does distillation pay on a pruned student? The same student, the same steps, with and without a teacher.

    python benchmarks/distillation.py   # writes benchmarks/results/distillation.{md,json}

The reference ResNet-20 (Fashion-MNIST 32×32) is pruned once (``--method``, default L1, to ``--target_macs`` of
its MACs: the student of ``benchmarks/compress.py``'s chain), then trained for ``--epochs`` on the same batches
in the same order (54,000 images per epoch, 10 % held out, no augmentation unless ``--augment``; SGD Nesterov,
cosine from 0.01):

* **plain**: cross-entropy on the labels alone;
* **distilled**, for each ``--settings`` entry α:T: the thesis's loss α·CE(y, z) + (1 − α)·T²·CE(softmax(z_t/T),
  softmax(z/T)) with the original model as the teacher — its code's defaults 0.1:5 (what budget mode uses) and
  its report's best on CIFAR-10, 0.2:2.

The student and each arm are pipeline runs (``tfc.pipeline.run_recipe``) in ``--work_dir``: a killed run
resumes. Each arm trains a copy of the student once per ``--seeds`` seed, the arms of one seed on the same
batches. Reported on the 10,000 test images: LiteRT accuracy (mean ± standard deviation over the seeds) and Keras
accuracy (mean), points against the original, and against plain paired by seed (mean ± standard deviation, seeds
won).
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string("model", str(REPO / "models" / "resnet20_fashion_mnist.keras"), "The teacher, pruned into the "
                    "student.")
flags.DEFINE_enum("method", "l1", ["l1", "l2", "uniform", "fisher"], "Channel pruning criterion of the student.")
flags.DEFINE_float("target_macs", 0.5, "The student keeps this fraction of the MACs.", lower_bound=0.01,
                   upper_bound=1.0)
flags.DEFINE_integer("epochs", 1, "Training epochs of every arm (equal steps).", lower_bound=1)
flags.DEFINE_float("lr", 0.01, "Initial learning rate (cosine to 0).", lower_bound=0.0)
flags.DEFINE_list("settings", ["0.1:5", "0.2:2"], "Distillation arms as alpha:temperature (α on the hard loss).")
flags.DEFINE_integer("seeds", 3, "Data orders each arm trains on; the arms of a seed share it.",
                     lower_bound=1)
flags.DEFINE_bool("augment", False, "Random crop and flip while training: the arms of a seed then see the same "
                  "images in the same order but not the same crops (tf.image's random ops are not reproducible).")
flags.DEFINE_integer("train_limit", 0, "Training images per epoch (0: all 54,000).", lower_bound=0)
flags.DEFINE_string("device", "litert", "Device of the rows' latency (see tfcompress.latency.DEVICE_HELP).")
flags.DEFINE_string("work_dir", "/tmp/tfcompress-benchmark-distillation", "Runs (resumable) go here.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where distillation.{md,json} go.")


class Arm(NamedTuple):
    """One way of training the student: its label, distillation setting (None, None: plain) and recipe stage."""

    label: str
    alpha: float | None
    temperature: float | None
    folder: str
    stage: dict[str, Any]


def _parse_settings(entries: list[str]) -> list[tuple[float, float]]:
    settings = []
    for entry in entries:
        alpha, _, temperature = entry.partition(":")
        try:
            settings.append((float(alpha), float(temperature)))
        except ValueError:
            raise flags.ValidationError(
                f"--settings takes alpha:temperature pairs such as 0.1:5, got {entry!r}") from None
        if not 0 <= settings[-1][0] <= 1 or settings[-1][1] <= 0:
            raise flags.ValidationError(f"--settings: alpha in [0, 1] and temperature > 0, got {entry!r}")
    return settings


flags.register_validator("settings",
                         lambda entries: bool(entries) and len(set(_parse_settings(entries))) == len(entries),
                         message="--settings takes distinct alpha:temperature pairs such as 0.1:5,0.2:2")


def main(argv: list[str]) -> None:
    del argv
    import keras

    import tfcompress as tfc
    from tfcompress import files, latency
    from tfcompress.pipeline import Context, Measurement

    started = time.monotonic()
    work = files.check_output_folder(FLAGS.work_dir)
    files.check_output_folder(FLAGS.output_dir)
    model = tfc.export.load_keras_model(FLAGS.model)

    def context(seed: int) -> Context:
        # a dataset reshuffles on every pass: a fresh one per arm gives every arm of a seed the same order; the
        # random crop and flip are not reproducible from a seed (tf.image's stateful ops in a tf.data map), so
        # they are off unless --augment
        keras.utils.set_random_seed(seed)
        return Context.of_dataset(model, "fashion_mnist", image_size=32, train_limit=FLAGS.train_limit or None,
                                  seed=seed, augment=FLAGS.augment)

    measurement = Measurement(device=FLAGS.device, runs=30, eval_limit=None)
    prune = {"stage": "prune", "method": FLAGS.method, "target_macs": FLAGS.target_macs}
    train = {"epochs": FLAGS.epochs, "lr": FLAGS.lr}
    arms = [Arm("plain", None, None, "plain", {"stage": "finetune", **train})]
    arms += [Arm(f"distilled α {alpha:g}, T {temperature:g}", alpha, temperature, f"distill_{alpha:g}_{temperature:g}",
                 {"stage": "distill", **train, "alpha": alpha, "temperature": temperature})
             for alpha, temperature in _parse_settings(FLAGS.settings)]
    student = tfc.pipeline.run_recipe(model, [prune], context(0), work / "student", measurement)
    original = student.rows[0]
    runs = []
    for seed in range(FLAGS.seeds):
        for arm in arms:  # the teacher is the context's original model; run_recipe trains a copy of the student
            folder = work / (arm.folder if seed == 0 else f"{arm.folder}_seed{seed}")
            end = tfc.pipeline.run_recipe(student.model, [arm.stage], context(seed), folder, measurement,
                                          seed=seed).rows[-1]
            runs.append({"label": arm.label, "alpha": arm.alpha, "temperature": arm.temperature, "seed": seed,
                         **{key: end[key] for key in ("keras_accuracy", "litert_accuracy", "params", "macs",
                                                      "latency_ms", "seconds")}})
            print(f"[{time.monotonic() - started:6.0f} s] {arm.label}, seed {seed}: "
                  f"{100 * end['litert_accuracy']:.2f} %", flush=True)
    rows = summarize(runs, original["litert_accuracy"])
    report = {
        "benchmark": "distillation",
        "command": " ".join(["python benchmarks/distillation.py", *(arg for arg in sys.argv[1:]
                                                                     if not arg.startswith("--output_dir"))]),
        "host": latency.describe_host(), "minutes": round((time.monotonic() - started) / 60, 1),
        "settings": {"model": Path(FLAGS.model).name, "method": FLAGS.method, "target_macs": FLAGS.target_macs,
                     "epochs": FLAGS.epochs, "lr": FLAGS.lr, "train_images": min(FLAGS.train_limit or 54000, 54000),
                     "augment": FLAGS.augment,
                     "seeds": FLAGS.seeds},
        "original_litert_accuracy": original["litert_accuracy"], "rows": rows, "runs": runs,
        "findings": findings_of(rows, test_images=10000),
    }
    out = Path(FLAGS.output_dir)
    files.write_json(out / "distillation.json", report)
    text = _markdown(report)
    files.write_text(out / "distillation.md", text)
    print(text)


def summarize(runs: list[dict], original_accuracy: float) -> list[dict]:
    """One row per arm over its seeds (LiteRT accuracy): mean and standard deviation, points against the original
    (negative: lost), and against plain *paired by seed* (the same batches): mean, standard deviation and the seeds
    the arm won."""
    plain = {run["seed"]: run["litert_accuracy"] for run in runs if run["alpha"] is None}
    rows = []
    for label in dict.fromkeys(run["label"] for run in runs):
        mine = [run for run in runs if run["label"] == label]
        accuracies = [run["litert_accuracy"] for run in mine]
        paired = [100 * (run["litert_accuracy"] - plain[run["seed"]]) for run in mine if run["seed"] in plain]
        rows.append({
            "label": label, "alpha": mine[0]["alpha"], "temperature": mine[0]["temperature"], "seeds": len(mine),
            "litert_accuracy": round(statistics.fmean(accuracies), 5),
            "litert_accuracy_std": round(statistics.stdev(accuracies), 5) if len(mine) > 1 else None,
            "keras_accuracy": round(statistics.fmean(run["keras_accuracy"] for run in mine), 5),
            "vs_original_points": round(100 * (statistics.fmean(accuracies) - original_accuracy), 2),
            "vs_plain_points": round(statistics.fmean(paired), 2) if paired else None,
            "vs_plain_std": round(statistics.stdev(paired), 2) if len(paired) > 1 else None,
            "wins": sum(d > 0 for d in paired), "params": mine[0]["params"], "macs": mine[0]["macs"],
            "minutes": round(sum(run["seconds"] or 0 for run in mine) / 60, 1),
        })
    return rows


def findings_of(rows: list[dict], test_images: int) -> list[str]:
    """Each distilled arm against plain, the noise of the comparison, and the issue's verdict: the first distilled
    arm (the thesis code's defaults, which budget mode uses) beats plain on average and in every seed."""
    plain = next(row for row in rows if row["alpha"] is None)
    distilled = [row for row in rows if row["alpha"] is not None]
    p = plain["litert_accuracy"]
    error = 100 * math.sqrt(p * (1 - p) / test_images)

    def spread(row: dict) -> str:
        if row["vs_plain_std"] is None:
            return (f"one seed: one accuracy's standard error on {test_images:,} images is ±{error:.2f} points, so "
                    f"a difference under ~{2 * math.sqrt(2) * error:.1f} points is within noise")
        return f"± {row['vs_plain_std']:.2f} over {row['seeds']} seeds, won {row['wins']} of {row['seeds']}"

    findings = [f"{row['label']}: {100 * row['litert_accuracy']:.2f} % vs plain {100 * p:.2f} % at equal steps "
                f"({row['vs_plain_points']:+.2f} points, {spread(row)})." for row in distilled]
    if distilled:
        first = distilled[0]
        beats = first["vs_plain_points"] > 0 and first["wins"] == first["seeds"]
        findings.append(
            "Target (the distilled student beats the same student fine-tuned without a teacher, on average and in "
            f"every seed): {'met' if beats else 'NOT met'} by {first['label']} ({first['vs_plain_points']:+.2f} "
            "points).")
    return findings


def _markdown(report: dict) -> str:
    from tfcompress import report as tables

    settings, host = report["settings"], report["host"]

    def accuracy(row: dict, key: str) -> str:
        std = row.get(f"{key}_std")
        return f"{100 * row[key]:.2f} %" + ("" if std is None else f" ± {100 * std:.2f}")

    table = [{"label": row["label"], "keras": f"{100 * row['keras_accuracy']:.2f} %",
              "litert": accuracy(row, "litert_accuracy"), "orig": f"{row['vs_original_points']:+.2f}",
              "plain": "–" if row["alpha"] is None else f"{row['vs_plain_points']:+.2f}"
              + ("" if row["vs_plain_std"] is None else f" ± {row['vs_plain_std']:.2f} ({row['wins']}/{row['seeds']})"),
              "params": f"{row['params']:,}", "macs": f"{row['macs'] / 1e6:.2f} M", "min": f"{row['minutes']:.1f}"}
             for row in report["rows"]]
    return "\n".join([
        "# Distillation on a pruned student: with and without a teacher at equal steps", "",
        f"Command: `{report['command']}` ({report['minutes']} min for this invocation)  ",
        f"Machine: {host['cpu']}, {host['cores']} cores.  ",
        f"Student: {settings['model']} pruned by {settings['method']} to {100 * settings['target_macs']:.0f} % of "
        f"its MACs; every arm then trains {settings['epochs']} epoch(s) of {settings['train_images']:,} "
        f"{'augmented ' if settings.get('augment') else ''}images (SGD Nesterov 0.9, cosine from "
        f"{settings['lr']:g}), for each of {settings['seeds']} seed(s) on "
        f"the same batches in the same order as the plain arm of that seed; the teacher is the original "
        f"({100 * report['original_litert_accuracy']:.2f} % LiteRT). Accuracy on the 10,000 test images, mean "
        "(± standard deviation) over the seeds; *vs plain*: the difference paired by seed (seeds won).", "",
        tables.markdown_table(table, [("label", "arm"), ("keras", "Keras acc."), ("litert", "LiteRT acc."),
                                      ("orig", "vs original, points"), ("plain", "vs plain, points"),
                                      ("params", "params"), ("macs", "MACs"), ("min", "train min (all seeds)")]),
        "", *[f"- {line}" for line in report["findings"]],
    ]) + "\n"


if __name__ == "__main__":
    app.run(main)
