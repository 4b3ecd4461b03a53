"""NetAdapt vs latency-aware Fisher vs global L1 vs uniform, aimed at half the measured latency on one device.

    python benchmarks/netadapt.py          # writes benchmarks/results/netadapt.{md,json,png}

The reference ResNet-20 (Fashion-MNIST 32×32) is measured on ``--device`` (float32); every method prunes it to
``--fraction`` of that **measured** latency as the device's latency table predicts it, then gets the same
fine-tune budget (``--finetune_epochs`` of SGD, cosine from ``--finetune_lr``, augmentation, on the training split
without the holdout). Reported per method: test accuracy after pruning and after the fine-tune, measured and
predicted latency (all final models measured in one interleaved pass at the end, on a quiet machine), MACs,
params, training steps spent while pruning and wall time.

NetAdapt and Fisher train while they prune (short-term fine-tunes, steps between prunes): their budget is the
shared fine-tune *plus* that, reported as "pruning steps". The thesis's settings are flags (100 short-term steps,
one channel per 100 steps); the defaults here are smaller so the run fits a 2-core machine (REFERENCE.md §1.1-1.2).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string("model", "models/resnet20_fashion_mnist.keras", "The model to prune (.keras, logits).")
flags.DEFINE_string("device", "litert", "Device (see tfcompress.latency.DEVICE_HELP).")
flags.DEFINE_string("table", "/tmp/tfcompress-tables/resnet20_fashion_mnist.litert.npz",
                    "The device's float32 table; built there when missing.")
flags.DEFINE_float("fraction", 0.5, "Target: this fraction of the measured unpruned latency.")
flags.DEFINE_list("methods", ["netadapt", "fisher", "l1", "uniform"], "Methods to compare.")
flags.DEFINE_integer("finetune_epochs", 3, "Shared fine-tune budget per method (epochs).", lower_bound=0)
flags.DEFINE_float("finetune_lr", 0.01, "Fine-tune learning rate (cosine).")
flags.DEFINE_integer("train_limit", None, "Train on the first N examples only.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_float("holdout_fraction", 0.1, "Holdout kept out of training (NetAdapt's comparisons).")
flags.DEFINE_integer("holdout_limit", 1000, "NetAdapt compares candidates on this many holdout images.")
flags.DEFINE_integer("short_term_steps", 20, "NetAdapt fine-tune batches per candidate (thesis: 100).")
flags.DEFINE_float("init_red_fact", 10.0, "NetAdapt: first saving target = (1 − fraction)·latency / this (thesis 20).")
flags.DEFINE_float("decay_rate", 0.98, "NetAdapt saving target decay per iteration.")
flags.DEFINE_integer("prune_every", 20, "Fisher: training steps between prunes (thesis: 100).")
flags.DEFINE_integer("runs", 100, "Timed inferences per measurement (3 interleaved rounds, median).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where the .md, .json and .png go.")


def measure(device, models: dict, rounds: int = 3) -> dict[str, float]:
    """µs per model: the median of ``rounds`` interleaved passes over all models (float32)."""

    from tfcompress.export import to_tflite

    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for name, model in models.items():
            paths[name] = Path(folder) / f"{len(paths)}.tflite"
            to_tflite(model, "float32", output=paths[name])
        measured = device.side_by_side(list(paths.values()), threads=1, runs=FLAGS.runs, passes=rounds)
    return {name: 1000 * ms for name, ms in zip(paths, measured, strict=True)}


def main(argv: list[str]) -> None:
    import keras

    from tfcompress import data, latency, training
    from tfcompress.export import load_keras_model
    from tfcompress.graph import ChannelGraph
    from tfcompress.pruning import prune_channels
    from tfcompress.pruning.fisher import fisher_prune
    from tfcompress.pruning.netadapt import netadapt

    started = time.monotonic()
    keras.utils.set_random_seed(FLAGS.seed)
    model = load_keras_model(REPO / FLAGS.model)
    device = latency.open_device(FLAGS.device)
    fingerprint = device.fingerprint(1)
    table_path = latency.table.table_path(FLAGS.table)
    if table_path.is_file():
        table = latency.Table.load(table_path)
        table.check_device(fingerprint)
        table_seconds = table.meta.get("build_seconds")
    else:
        table_path.parent.mkdir(parents=True, exist_ok=True)
        table = latency.build_table(model, device, output=table_path, precisions=("float32",))
        table_seconds = table.meta.get("build_seconds")
    unpruned_us = measure(device, {"unpruned": model})["unpruned"]
    target = f"{FLAGS.fraction * unpruned_us / 1000:.6f}ms"
    print(f"unpruned: measured {unpruned_us / 1000:.3f} ms, predicted {table.predict(model).ms:.3f} ms → target "
          f"{target} predicted")

    options = {"image_size": 32, "batch_size": FLAGS.batch_size, "holdout_fraction": FLAGS.holdout_fraction}
    train = data.load("fashion_mnist", "train", augment=True, seed=FLAGS.seed, limit=FLAGS.train_limit, **options)
    holdout = data.load("fashion_mnist", "holdout", **options).unbatch().take(FLAGS.holdout_limit).batch(256)
    test = data.load("fashion_mnist", "test", image_size=32, batch_size=256)
    baseline = training.evaluate(model, test)["accuracy"]
    cost = table.cost_fn(model)
    rows, finals = [], {}
    for method in FLAGS.methods:
        keras.utils.set_random_seed(FLAGS.seed)
        begin = time.monotonic()
        steps = 0
        if method == "netadapt":
            result = netadapt(model, train, holdout, table=table, target_latency=target,
                              short_term_steps=FLAGS.short_term_steps, init_red_fact=FLAGS.init_red_fact,
                              decay_rate=FLAGS.decay_rate, progress=print)
            pruned = result.model
            candidates = sum(len(row["candidates"]) for row in result.history)
            steps = (candidates + 1) * FLAGS.short_term_steps
            extra = {"iterations": len(result.history), "candidates": candidates}
        elif method == "fisher":
            result = fisher_prune(model, train, target_latency=target, table=table, prune_every=FLAGS.prune_every,
                                  verbose=1)
            pruned = result.model
            steps = result.history[-1]["step"]
            extra = {"prunes": len(result.history)}
        elif method in ("l1", "uniform"):
            pruned = prune_channels(model, method, cost_fn=cost, target_latency=target).model
            extra = {}
        else:
            raise app.UsageError(f"unknown method {method!r}: netadapt, fisher, l1 or uniform")
        prune_s = time.monotonic() - begin
        accuracy_pruned = training.evaluate(pruned, test)["accuracy"]
        begin = time.monotonic()
        if FLAGS.finetune_epochs:
            total = FLAGS.finetune_epochs * int(train.cardinality())
            training.compile_classifier(pruned, training.sgd(FLAGS.finetune_lr, total, "cosine"))
            pruned.fit(train, epochs=FLAGS.finetune_epochs, verbose=2)
        finetune_s = time.monotonic() - begin
        graph = ChannelGraph(pruned)
        rows.append({"method": method, "accuracy_pruned": accuracy_pruned,
                     "accuracy": training.evaluate(pruned, test)["accuracy"],
                     "predicted_us": table.predict(pruned).total_us, "macs": graph.cost(metric="macs"),
                     "params": pruned.count_params(), "pruning_steps": steps, "prune_s": round(prune_s, 1),
                     "finetune_s": round(finetune_s, 1), **extra})
        finals[method] = pruned
        print(rows[-1])
    measured = measure(device, {"unpruned": model, **finals})
    for row in rows:
        row["measured_us"] = measured[row["method"]]
        row["latency_ratio"] = row["measured_us"] / measured["unpruned"]
        row["prediction_error"] = (row["predicted_us"] - row["measured_us"]) / row["measured_us"]
    report = {
        "command": " ".join(["python benchmarks/netadapt.py", *sys.argv[1:]]),
        "settings": {k: FLAGS[k].value for k in (
            "model", "device", "fraction", "methods", "finetune_epochs", "finetune_lr", "train_limit", "batch_size",
            "holdout_fraction", "holdout_limit", "short_term_steps", "init_red_fact", "decay_rate", "prune_every",
            "runs", "seed")},
        "fingerprint": fingerprint, "table_build_s": table_seconds,
        "unpruned": {"accuracy": baseline, "measured_us": measured["unpruned"], "first_measured_us": unpruned_us,
                     "predicted_us": table.predict(model).total_us,
                     "macs": ChannelGraph(model).cost(metric="macs"), "params": model.count_params()},
        "target_us": FLAGS.fraction * unpruned_us, "rows": rows,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    write(report)


def write(report: dict) -> None:
    from tfcompress import files

    out = Path(FLAGS.output_dir)
    files.write_json(out / "netadapt.json", report)
    plot(report, out / "netadapt.png")
    fp, s, base = report["fingerprint"], report["settings"], report["unpruned"]
    lines = [
        "# NetAdapt vs latency-aware Fisher vs L1 vs uniform, at half the measured latency",
        "",
        f"Command: `{report['command']}`  ",
        f"Device: `{fp.get('device')}`, {fp.get('cpu')} ({fp.get('machine')}, {fp.get('cores')} cores; ISA: "
        f"{', '.join(fp.get('isa') or [])}), runtime {fp.get('runtime')} {fp.get('runtime_version')}, 1 thread, "
        f"float32. Run time {report['minutes']} min (table build {report['table_build_s']} s, reused when cached).  ",
        f"Target: {s['fraction']} × the measured unpruned latency ({report['target_us'] / 1000:.3f} ms), as the "
        f"table predicts it. Shared fine-tune: {s['finetune_epochs']} epochs, SGD cosine from {s['finetune_lr']}, "
        f"batch {s['batch_size']}, augmentation, training split minus a {s['holdout_fraction']:.0%} holdout. "
        f"NetAdapt: {s['short_term_steps']} short-term steps per candidate, holdout {s['holdout_limit']} images, "
        f"init_red_fact {s['init_red_fact']}, decay {s['decay_rate']}, l2. Fisher: latency-aware, one prune every "
        f"{s['prune_every']} steps (SGD 8e-4). Latencies: median of 3 interleaved passes × {s['runs']} runs, all "
        "models in one pass at the end.",
        "",
        "| method | test acc. pruned | test acc. fine-tuned | Δ vs unpruned | measured ms | × unpruned | predicted ms "
        "| pred. error | MACs | params | pruning steps | pruning time | fine-tune time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| unpruned | – | {100 * base['accuracy']:.2f} % | – | {base['measured_us'] / 1000:.3f} | 1.00× | "
        f"{base['predicted_us'] / 1000:.3f} | – | {base['macs']:,} | {base['params']:,} | – | – | – |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['method']} | {100 * r['accuracy_pruned']:.2f} % | {100 * r['accuracy']:.2f} % | "
            f"{100 * (r['accuracy'] - base['accuracy']):+.2f} | {r['measured_us'] / 1000:.3f} | "
            f"{r['latency_ratio']:.2f}× | {r['predicted_us'] / 1000:.3f} | {100 * r['prediction_error']:+.1f} % | "
            f"{r['macs']:,} | {r['params']:,} | {r['pruning_steps']:,} | {r['prune_s'] / 60:.1f} min | "
            f"{r['finetune_s'] / 60:.1f} min |")
    best = max(report["rows"], key=lambda r: r["accuracy"])
    lines += ["", f"Best after the shared fine-tune: **{best['method']}** ({100 * best['accuracy']:.2f} %, "
              f"{best['latency_ratio']:.2f}× the unpruned measured latency).", "",
              "![accuracy vs measured latency](netadapt.png)", ""]
    files.write_text(out / "netadapt.md", "\n".join(lines))
    print("\n".join(lines))


def plot(report: dict, path: Path) -> None:
    """Accuracy after the shared fine-tune against measured latency, per method, the target and Pareto front."""
    from tfcompress import plots

    base, fp = report["unpruned"], report["fingerprint"]
    rows = [{"name": "unpruned", "latency_ms": base["measured_us"] / 1000, "accuracy": base["accuracy"]}]
    rows += [{"name": row["method"], "latency_ms": row["measured_us"] / 1000, "accuracy": row["accuracy"]}
             for row in report["rows"]]
    plots.accuracy_vs_latency(
        rows, path, group="name", title="NetAdapt vs Fisher vs L1 vs uniform at half the measured latency",
        xlabel=f"measured ms ({fp.get('device')}, {fp.get('cpu')})",
        ylabel="test accuracy % (after the shared fine-tune)", vlines={"target": report["target_us"] / 1000})


if __name__ == "__main__":
    app.run(main)
