"""The latency budget in one call, and a chained recipe, against single techniques at the same latency.

    python benchmarks/compress.py          # writes benchmarks/results/compress.{md,json,png}
    python benchmarks/compress.py --precision=float32 --finetune_epochs=2 --nochain --name=compress_float32
                                           # what an AVX2 host (int8 no faster) runs, on any host

The reference ResNet-20 (Fashion-MNIST 32×32) on ``--device``:

* **budget mode** (``tfc.compress``) at each of ``--fractions`` of its measured float32 latency, within
  ``--max_drops`` points (the issue's targets: 1.0 at 0.5×, 2.0 at 0.3×): the precision chosen by measurement,
  the device's table, latency-aware Fisher pruning, ``--finetune_epochs`` of distillation from the original per
  round, every round measured next to the original;
* **a recipe** chaining prune (L1, half the MACs) → distil → EC2T (ternary) → int8;
* **single techniques**: int8 post-training quantization alone; L1 channel pruning to each budget's table
  prediction with a plain fine-tune of the same length (no distillation), in float32.

All final ``.tflite`` files are then measured together in interleaved passes (median of 3 × ``--runs``), so
their latencies compare as ratios of one session, with the host's fingerprint. The fine-tune budget is stated in
the result: ``--train_limit`` images per epoch (default all 54,000) × ``--finetune_epochs``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string("model", str(REPO / "models" / "resnet20_fashion_mnist.keras"), "Model to compress.")
flags.DEFINE_string("device", "litert", "Device (see tfcompress.latency.DEVICE_HELP).")
flags.DEFINE_list("fractions", ["0.5", "0.3"], "Budgets: fractions of the measured float32 latency.")
flags.DEFINE_list("max_drops", ["1.0", "2.0"], "Accuracy limit (points) of each budget.")
flags.DEFINE_integer("finetune_epochs", 1, "Distillation / fine-tune epochs per round.", lower_bound=1)
flags.DEFINE_integer("train_limit", 0, "Training images per epoch (0: all 54,000).", lower_bound=0)
flags.DEFINE_integer("max_rounds", 2, "Budget mode rounds at most.", lower_bound=1)
flags.DEFINE_enum("precision", "auto", ["auto", "float32", "int8"],
                  "Budget mode's precision: auto (chosen by measurement) or forced, e.g. float32 to run here what an "
                  "AVX2 host, where int8 is no faster, chooses.")
flags.DEFINE_string("name", "compress", "Result file stem: OUTPUT_DIR/NAME.{md,json,png}.")
flags.DEFINE_integer("fisher_prune_every", 10, "Fisher pruning's steps between prunes.", lower_bound=1)
flags.DEFINE_integer("eval_limit", 0, "LiteRT accuracy on the first N test images (0: all 10,000).")
flags.DEFINE_integer("runs", 100, "Timed inferences per measurement.", lower_bound=1)
flags.DEFINE_bool("chain", True, "Include the prune → distil → EC2T → int8 recipe.")
flags.DEFINE_string("work_dir", "/tmp/tfcompress-benchmark-compress", "Runs (resumable) and tables go here.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where the .md, .json and .png go.")


def main(argv: list[str]) -> None:

    import tfcompress as tfc
    from tfcompress.pipeline import Context, Measurement

    if len(FLAGS.fractions) != len(FLAGS.max_drops):
        raise app.UsageError("give one --max_drops entry per --fractions entry")
    started = time.monotonic()
    work = Path(FLAGS.work_dir)
    model = tfc.export.load_keras_model(FLAGS.model)
    context = Context.of_dataset(model, "fashion_mnist", image_size=32, train_limit=FLAGS.train_limit or None)
    measurement = Measurement(device=FLAGS.device, runs=30, eval_limit=FLAGS.eval_limit or None)
    if not (work / "table_float32.npz").exists():  # the single techniques' float32 table (budget mode may reuse it)
        tfc.latency.build_table(model, FLAGS.device, output=work / "table_float32.npz", precisions=("float32",))
    entries = []  # (label, kind, final row, tflite path, extra)

    for fraction, drop in zip(map(float, FLAGS.fractions), map(float, FLAGS.max_drops), strict=True):
        result = tfc.compress(model, context, folder=work / f"budget_{fraction}", latency_fraction=fraction,
                              max_accuracy_drop=drop, measurement=measurement, finetune_epochs=FLAGS.finetune_epochs,
                              max_rounds=FLAGS.max_rounds, fisher_prune_every=FLAGS.fisher_prune_every,
                              precision=FLAGS.precision, table_path=work / "table_{precision}.npz")
        entries.append((f"budget {fraction}× within {drop} points", "budget", result.rows[-1], result.tflite,
                        {"met": result.met, "message": result.message, "precision": result.precision,
                         "target_fraction": fraction, "minutes": _stage_minutes(work / f"budget_{fraction}"),
                         "rounds": len(result.rows) - 2, "recipe": result.recipe.to_list()}))
        # the same latency by a single technique: L1 pruning to the table's view of it, a plain fine-tune
        table = tfc.latency.Table.load(work / "table_float32.npz")
        single = tfc.pipeline.run_recipe(
            model, [{"stage": "prune", "method": "l1", "target_latency": fraction},
                    {"stage": "finetune", "epochs": FLAGS.finetune_epochs, "lr": 0.01}],
            _with_table(context, table), work / f"l1_{fraction}", measurement)
        entries.append((f"L1 prune to {fraction}× + fine-tune (float32)", "single", single.rows[-1], single.tflite,
                        {"target_fraction": fraction, "minutes": _stage_minutes(work / f"l1_{fraction}")}))

    base = tfc.pipeline.run_recipe(model, [{"stage": "quantize", "precision": "int8"}], context, work / "int8",
                                   measurement)
    entries.insert(0, ("original (float32)", "original", base.rows[0], work / "int8" / "00_original" / "model.tflite",
                       {}))
    entries.insert(1, ("int8 post-training quantization alone", "single", base.rows[1], base.tflite, {}))
    if FLAGS.chain:
        recipe = [{"stage": "prune", "method": "l1", "target_macs": 0.5},
                  {"stage": "distill", "epochs": FLAGS.finetune_epochs, "lr": 0.01},
                  {"stage": "ternarize", "method": "ec2t", "epochs": 1},
                  {"stage": "quantize", "precision": "int8"}]
        chain = tfc.pipeline.run_recipe(model, recipe, context, work / "chain", measurement)
        for row in chain.rows[1:]:
            entries.append((f"chain: {row['stage']}", "chain", row, work / "chain" / row["step"] / "model.tflite",
                            {"minutes": round(row["seconds"] / 60, 1)}))

    # every final .tflite in interleaved passes: latencies as ratios of one session
    device = tfc.latency.open_device(FLAGS.device)
    paths = [Path(path) for _, _, _, path, _ in entries]
    measured = device.side_by_side(paths, threads=1, runs=FLAGS.runs)
    rows = []
    for (label, kind, row, path, extra), ms in zip(entries, measured, strict=True):
        rows.append({"label": label, "kind": kind, **{k: row[k] for k in (
            "precision", "keras_accuracy", "litert_accuracy", "params", "nonzero_params", "macs", "tflite_bytes",
            "gzip_bytes", "micronet_score")}, "latency_ms": round(ms, 4), "speedup": round(measured[0] / ms, 3),
            "drop_points": round(100 * (entries[0][2]["litert_accuracy"] - row["litert_accuracy"]), 2),
            "tflite": str(path), **extra})
    report = {"command": " ".join(["python benchmarks/compress.py", *sys.argv[1:]]),
              "fingerprint": device.fingerprint(1), "minutes": round((time.monotonic() - started) / 60, 1),
              "train_images": FLAGS.train_limit or 54000, "finetune_epochs": FLAGS.finetune_epochs,
              "budget_precision": FLAGS.precision, "rows": rows}
    write(report)


def _stage_minutes(folder: Path) -> float:
    """Minutes the stages under ``folder`` took when they ran (their rows keep it: a resumed run reads them back),
    the latency table's build not included."""
    rows = [json.loads(path.read_text())["row"] for path in folder.glob("**/row.json")]
    return round(sum(row.get("seconds") or 0 for row in rows) / 60, 1)


def _with_table(context, table):
    import dataclasses

    return dataclasses.replace(context, table=table)


def write(report: dict) -> None:
    from tfcompress import files

    out = Path(FLAGS.output_dir)
    files.write_json(out / f"{FLAGS.name}.json", report)
    fp = report["fingerprint"]
    lines = [
        "# A latency budget in one command (ResNet-20, Fashion-MNIST 32×32)"
        + ("" if report.get("budget_precision", "auto") == "auto"
           else f": budget mode forced to {report['budget_precision']}, as on a host where it is the faster "
                "precision"), "",
        f"Command: `{report['command']}` ({report['minutes']} min for this invocation; a resumed run reads back "
        "what was done before: *stage min* is the time each variant's stages took when they ran). "
        f"Host: {fp.get('cpu')}, ISA "
        f"{'/'.join(fp.get('isa', []) or [])}, {fp.get('runtime')} {fp.get('runtime_version', '')}, 1 thread, "
        f"device {fp.get('device')}. Fine-tune budget per round: {report['finetune_epochs']} epoch(s) of "
        f"{report['train_images']:,} images. Latency: all files in one session, median of 3 interleaved passes; "
        "speed-up against the float32 original of this session. Accuracy: LiteRT, test set.", "",
        "| variant | precision | LiteRT acc. | points lost | latency ms | speed-up | params | non-zero | MACs "
        "| gzip KB | budget met | stage min |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        met = {True: "yes", False: "**no**"}.get(row.get("met"), "–")
        lines.append(
            f"| {row['label']} | {row['precision']} | {100 * row['litert_accuracy']:.2f} % | {row['drop_points']:+.2f} "
            f"| {row['latency_ms']:.3f} | {row['speedup']:.2f}× | {row['params']:,} | {row['nonzero_params']:,} "
            f"| {row['macs'] / 1e6:.2f} M | {row['gzip_bytes'] / 1024:.0f} | {met} | {row.get('minutes', '–')} |")
    for row in report["rows"]:
        if row["kind"] == "budget":
            lines += ["", f"- **{row['label']}**: {row['message']} ({row['rounds']} round(s), {row['minutes']} min, "
                      f"{row['precision']}); recipe `{row['recipe']}`"]
    chain = [row for row in report["rows"] if row["kind"] == "chain"]
    if chain:  # what the chain buys against the budget rows: its end, by the same measurements
        end, original = chain[-1], report["rows"][0]
        smallest = min((r for r in report["rows"] if r["kind"] == "budget"), key=lambda r: r["gzip_bytes"],
                       default=None)
        versus = "" if smallest is None else (
            f", {smallest['gzip_bytes'] / end['gzip_bytes']:.1f}× smaller than the smallest budget-mode file "
            f"({smallest['label']}: {smallest['speedup']:.2f}× faster, {smallest['drop_points']:.2f} points lost)")
        lines += ["", "- **chain** (L1 to half the MACs → distil → EC2T → int8): "
                  f"{100 * end['litert_accuracy']:.2f} % ({end['drop_points']:.2f} points lost), {end['speedup']:.2f}× "
                  f"faster, {end['gzip_bytes'] / 1024:.0f} KB gzip: "
                  f"{original['gzip_bytes'] / end['gzip_bytes']:.1f}× smaller than the original{versus}. "
                  "Ternary weights and int8 buy size here, not speed: the speed is the pruning's."]
    files.write_text(out / f"{FLAGS.name}.md", "\n".join(lines) + "\n")
    plot(report, out / f"{FLAGS.name}.png")


def plot(report: dict, path: Path) -> None:
    """Accuracy against measured latency, a marker per kind of variant, the Pareto front marked."""
    from tfcompress import plots

    plots.accuracy_vs_latency(
        report["rows"], path, y="litert_accuracy", label="label", group="kind",
        title="ResNet-20 / Fashion-MNIST: budget mode vs single techniques",
        xlabel=f"measured latency, ms ({report['fingerprint'].get('device')}, 1 thread)",
        ylabel="LiteRT top-1 accuracy, %")


if __name__ == "__main__":
    app.run(main)
