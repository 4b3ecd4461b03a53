"""Does distillation pay on a pruned student? The same student, the same steps, with and without a teacher.

    python benchmarks/distillation.py   # writes benchmarks/results/distillation.{md,json}

The reference ResNet-20 (Fashion-MNIST 32×32) is pruned once (``--method``, default L1, to ``--target_macs`` of
its MACs: the student of ``benchmarks/compress.py``'s chain), then trained for ``--epochs`` on the same batches
in the same order (54,000 augmented images per epoch, 10 % held out; SGD Nesterov, cosine from 0.01):

* **plain**: cross-entropy on the labels alone;
* **distilled**, for each ``--settings`` entry α:T: the thesis's loss α·CE(y, z) + (1 − α)·T²·CE(softmax(z_t/T),
  softmax(z/T)) with the original model as the teacher — its code's defaults 0.1:5 (what budget mode uses) and
  its report's best on CIFAR-10, 0.2:2.

The student and each arm are pipeline runs (``tfc.pipeline.run_recipe``) in ``--work_dir``: a killed run
resumes. Reported: Keras and LiteRT accuracy on the 10,000 test images, points against the original and against
plain. One seed: the binomial standard error of one accuracy on 10,000 images (≈ 0.25 points here) is in the
findings.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

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
flags.DEFINE_integer("train_limit", 0, "Training images per epoch (0: all 54,000).", lower_bound=0)
flags.DEFINE_string("device", "litert", "Device of the rows' latency (see tfcompress.latency.DEVICE_HELP).")
flags.DEFINE_string("work_dir", "/tmp/tfcompress-benchmark-distillation", "Runs (resumable) go here.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where distillation.{md,json} go.")


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


flags.register_validator("settings", lambda entries: bool(entries) and bool(_parse_settings(entries)),
                         message="--settings takes at least one alpha:temperature pair such as 0.1:5")


def main(argv: list[str]) -> None:
    del argv
    import tfcompress as tfc
    from tfcompress import files, latency
    from tfcompress.pipeline import Context, Measurement

    started = time.monotonic()
    work = files.check_output_folder(FLAGS.work_dir)
    files.check_output_folder(FLAGS.output_dir)
    model = tfc.export.load_keras_model(FLAGS.model)
    context = Context.of_dataset(model, "fashion_mnist", image_size=32, train_limit=FLAGS.train_limit or None)
    measurement = Measurement(device=FLAGS.device, runs=30, eval_limit=None)
    prune = {"stage": "prune", "method": FLAGS.method, "target_macs": FLAGS.target_macs}
    train = {"epochs": FLAGS.epochs, "lr": FLAGS.lr}
    arms = [("plain", None, None, {"stage": "finetune", **train})]
    arms += [(f"distilled α {alpha:g}, T {temperature:g}", alpha, temperature,
              {"stage": "distill", **train, "alpha": alpha, "temperature": temperature})
             for alpha, temperature in _parse_settings(FLAGS.settings)]
    student = tfc.pipeline.run_recipe(model, [prune], context, work / "student", measurement)
    original = student.rows[0]
    rows = []
    for label, alpha, temperature, stage in arms:  # the teacher is the context's original, not the student
        folder = work / ("plain" if alpha is None else f"distill_{alpha:g}_{temperature:g}")
        end = tfc.pipeline.run_recipe(student.model, [stage], context, folder, measurement).rows[-1]
        rows.append({"label": label, "alpha": alpha, "temperature": temperature,
                     **{key: end[key] for key in ("keras_accuracy", "litert_accuracy", "params", "macs",
                                                  "latency_ms", "seconds")}})
        print(f"[{time.monotonic() - started:6.0f} s] {label}: {100 * end['litert_accuracy']:.2f} %", flush=True)
    rows = summarize(rows, original["litert_accuracy"])
    report = {
        "benchmark": "distillation",
        "command": " ".join(["python benchmarks/distillation.py", *(arg for arg in sys.argv[1:]
                                                                     if not arg.startswith("--output_dir"))]),
        "host": latency.describe_host(), "minutes": round((time.monotonic() - started) / 60, 1),
        "settings": {"model": Path(FLAGS.model).name, "method": FLAGS.method, "target_macs": FLAGS.target_macs,
                     "epochs": FLAGS.epochs, "lr": FLAGS.lr, "train_images": FLAGS.train_limit or 54000},
        "original_litert_accuracy": original["litert_accuracy"], "rows": rows,
        "findings": findings_of(rows, test_images=10000),
    }
    out = Path(FLAGS.output_dir)
    files.write_json(out / "distillation.json", report)
    text = _markdown(report)
    files.write_text(out / "distillation.md", text)
    print(text)


def summarize(rows: list[dict], original_accuracy: float) -> list[dict]:
    """Adds each arm's points against the original (negative: lost) and against the plain arm (LiteRT)."""
    plain = next(row for row in rows if row["alpha"] is None)
    return [{**row, "vs_original_points": round(100 * (row["litert_accuracy"] - original_accuracy), 2),
             "vs_plain_points": round(100 * (row["litert_accuracy"] - plain["litert_accuracy"]), 2)} for row in rows]


def findings_of(rows: list[dict], test_images: int) -> list[str]:
    """Each distilled arm against plain, the standard error that one seed carries, and the issue's verdict: the
    first distilled arm (the thesis code's defaults, which budget mode uses) beats plain."""
    plain = next(row for row in rows if row["alpha"] is None)
    distilled = [row for row in rows if row["alpha"] is not None]
    p = plain["litert_accuracy"]
    error = 100 * math.sqrt(p * (1 - p) / test_images)
    findings = [f"{row['label']}: {100 * row['litert_accuracy']:.2f} % vs plain {100 * p:.2f} % at equal steps "
                f"({row['vs_plain_points']:+.2f} points)." for row in distilled]
    if distilled:
        first = distilled[0]
        beats = first["vs_plain_points"] > 0
        findings.append(
            f"Target (the distilled student beats the same student fine-tuned without a teacher): "
            f"{'met' if beats else 'NOT met'} by {first['label']} ({first['vs_plain_points']:+.2f} points; one "
            f"seed, one accuracy's standard error ±{error:.2f} points, so a difference under "
            f"~{2 * math.sqrt(2) * error:.1f} points is within noise).")
    return findings


def _markdown(report: dict) -> str:
    from tfcompress import report as tables

    settings, host = report["settings"], report["host"]
    table = [{"label": row["label"], "keras": f"{100 * row['keras_accuracy']:.2f} %",
              "litert": f"{100 * row['litert_accuracy']:.2f} %", "orig": f"{row['vs_original_points']:+.2f}",
              "plain": f"{row['vs_plain_points']:+.2f}", "params": f"{row['params']:,}",
              "macs": f"{row['macs'] / 1e6:.2f} M", "min": f"{(row['seconds'] or 0) / 60:.1f}"}
             for row in report["rows"]]
    return "\n".join([
        "# Distillation on a pruned student: with and without a teacher at equal steps", "",
        f"Command: `{report['command']}` ({report['minutes']} min for this invocation)  ",
        f"Machine: {host['cpu']}, {host['cores']} cores.  ",
        f"Student: {settings['model']} pruned by {settings['method']} to {100 * settings['target_macs']:.0f} % of "
        f"its MACs; every arm then trains {settings['epochs']} epoch(s) of {settings['train_images']:,} augmented "
        f"images on the same batches (SGD Nesterov 0.9, cosine from {settings['lr']:g}); the teacher is the "
        f"original ({100 * report['original_litert_accuracy']:.2f} % LiteRT). Accuracy on the 10,000 test images.",
        "",
        tables.markdown_table(table, [("label", "arm"), ("keras", "Keras acc."), ("litert", "LiteRT acc."),
                                      ("orig", "vs original, points"), ("plain", "vs plain, points"),
                                      ("params", "params"), ("macs", "MACs"), ("min", "train min")]), "",
        *[f"- {line}" for line in report["findings"]],
    ]) + "\n"


if __name__ == "__main__":
    app.run(main)
