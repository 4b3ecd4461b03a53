"""SNIP vs random vs magnitude-after-training pruning of LeNet-300-100 and LeNet-5 on Fashion-MNIST.

    python benchmarks/snip.py --train_limit=20000   # bounded run (see the result for its time on 2 shared cores)
    python benchmarks/snip.py --full                # paper-like schedule: all 60,000 images, 20 epochs, 5 seeds

Writes benchmarks/results/snip.{md,json}.

For each model, seed and sparsity (0 / 50 / 90 / 95 / 98 % of kernels and biases, SNIP's reference setting):

* SNIP: variance-scaling init, saliency on one batch of 100 training images, global top-κ, mask applied to a
  fresh init (as the reference code), then trained for ``--epochs``;
* random: the same sparsity in every layer (uniform per layer), random connections kept, trained the same way;
* magnitude after training: the dense model of the same seed (trained ``--epochs``), global magnitude
  pruning, then ``--finetune_epochs`` of fine-tuning with the masks fixed.

Sparsity 0 is the dense model (one run per seed serves all three columns). Test error is on the 10,000 test
images, mean ± std over seeds. Training: SGD + Nesterov momentum 0.9, cosine lr from 0.1 (LeNet-300-100) or 0.02
(LeNet-5), weight decay 5e-4, batch 128, no augmentation. The trained dense and 95 %-SNIP models of seed 0 are
also exported (float32 and int8, each without and with sparse weight encoding) to report the sizes.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet_300_100", "lenet5"], "Zoo models.")
flags.DEFINE_list("sparsities", ["0", "0.5", "0.9", "0.95", "0.98"], "Target sparsities.")
flags.DEFINE_integer("seeds", 3, "Seeds per configuration.", lower_bound=1)
flags.DEFINE_integer("epochs", 2, "Training epochs of dense, SNIP and random models.", lower_bound=1)
flags.DEFINE_integer("finetune_epochs", 1, "Fine-tuning epochs after magnitude pruning.", lower_bound=0)
flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
flags.DEFINE_float("lr", None, "Initial learning rate for every model (default: per model, see LEARNING_RATES).")
flags.DEFINE_integer("prune_batch_size", 100, "Examples in the SNIP saliency batch (paper: 100).", lower_bound=1)
flags.DEFINE_integer("train_limit", None, "Train on the first N examples only.", lower_bound=1)
flags.DEFINE_bool("full", False, "Paper-like schedule: 20 epochs, 5 fine-tuning epochs, 5 seeds.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where snip.md and snip.json go.")

DATASET = "fashion_mnist"
METHODS = ("snip", "random", "magnitude")
# LeNet-5 (no BatchNorm) diverges at lr 0.1 with Nesterov momentum 0.9 and batch 128 (measured: 90 % error);
# 0.02 trains it, and LeNet-300-100 trains well at 0.1.
LEARNING_RATES = {"lenet_300_100": 0.1, "lenet5": 0.02}
# EPFL reproduction of SNIP (REFERENCE.md §4.2), MNIST test error %, mean of 10 runs; κ̄ → error.
ANCHORS_MNIST = {
    "lenet_300_100": {0.0: 1.33, 0.5: 1.45, 0.9: 2.37},
    "lenet5": {0.0: 0.94, 0.5: 1.01, 0.9: 1.25},
}


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.full:
        FLAGS.epochs, FLAGS.finetune_epochs, FLAGS.seeds = 20, 5, 5
    import keras
    import numpy as np
    import tensorflow as tf

    import tfcompress as tfc
    from tfcompress import export, files, latency, report
    from tfcompress.pruning import magnitude, snip, weight_masks

    started = time.time()
    sparsities = [float(s) for s in FLAGS.sparsities]
    test = tfc.data.load(DATASET, "test", batch_size=1000)
    runs, layer_sparsity, prepass_seconds, sizes = [], {}, {}, []

    def train(model: keras.Model, epochs: int, seed: int, name: str) -> float:
        data = tfc.data.load(DATASET, "train", batch_size=FLAGS.batch_size, shuffle=True, seed=seed,
                             limit=FLAGS.train_limit)
        lr = FLAGS.lr or LEARNING_RATES.get(name, 0.1)
        optimizer = tfc.training.sgd(lr, epochs * int(data.cardinality()), "cosine", 0.9, 5e-4)
        tfc.training.compile_classifier(model, optimizer)
        model.fit(data, epochs=epochs, verbose=0)
        return 1.0 - tfc.training.evaluate(model, test)["accuracy"]

    def record(name: str, method: str, sparsity: float, seed: int, error: float | None, note: str = "") -> None:
        runs.append({"model": name, "method": method, "sparsity": sparsity, "seed": seed, "test_error": error,
                     "note": note, "elapsed_s": round(time.time() - started, 1)})
        shown = "–" if error is None else f"{100 * error:.2f} %"
        print(f"[{time.time() - started:6.0f} s] {name} {method} sparsity {sparsity:.2f} seed {seed}: {shown} {note}",
              flush=True)

    for name in FLAGS.models:
        for seed in range(FLAGS.seeds):
            keras.utils.set_random_seed(seed)
            dense = tfc.zoo.build(name, (28, 28, 1), 10)
            dense_error = train(dense, FLAGS.epochs, seed, name)
            for method in METHODS:
                record(name, method, 0.0, seed, dense_error)
            prune_batch = next(iter(tfc.data.load(DATASET, "train", batch_size=FLAGS.prune_batch_size, shuffle=True,
                                                  seed=1000 + seed)))
            for sparsity in (s for s in sparsities if s > 0):
                keras.utils.set_random_seed(seed)
                try:
                    result = snip.prune(tfc.zoo.build(name, (28, 28, 1), 10), prune_batch, sparsity, seed=seed)
                except ValueError as error:  # a layer emptied: report it rather than stop the benchmark
                    record(name, "snip", sparsity, seed, None, f"({error})")
                    continue
                prepass_seconds.setdefault(name, []).append(result.prepass_seconds)
                if sparsity == 0.95:
                    layer_sparsity.setdefault(name, []).append(result.layer_sparsity())
                record(name, "snip", sparsity, seed, train(result.model, FLAGS.epochs, seed, name))
                if sparsity == 0.95 and seed == 0:
                    sizes.extend(_sizes(name, dense, result.model, export, weight_masks, tfc))

                keras.utils.set_random_seed(seed)
                fresh = tfc.zoo.build(name, (28, 28, 1), 10)
                random_model = weight_masks.apply_masks(
                    fresh, magnitude.random_masks(fresh, sparsity, scope="local", prune_biases=True, seed=seed))
                record(name, "random", sparsity, seed, train(random_model, FLAGS.epochs, seed, name))

                try:
                    pruned = magnitude.prune_magnitude(dense, sparsity, scope="global", prune_biases=True)
                except ValueError as error:  # a layer emptied: report it rather than stop the benchmark
                    record(name, "magnitude", sparsity, seed, None, f"({error})")
                    continue
                error = train(pruned, FLAGS.finetune_epochs, seed, name) if FLAGS.finetune_epochs else (
                    1.0 - tfc.training.evaluate(pruned, test)["accuracy"])
                record(name, "magnitude", sparsity, seed, error)

    total_seconds = time.time() - started
    summary = _summarize(runs, sparsities, np)
    host = latency.describe_host()
    command = "python benchmarks/snip.py" + (" --full" if FLAGS.full else "") + "".join(
        f" {arg}" for arg in sys.argv[1:] if not arg.startswith("--full"))
    payload = {
        "benchmark": "snip", "command": command, "host": host, "tensorflow": tf.__version__,
        "python": platform.python_version(), "total_seconds": round(total_seconds, 1),
        "settings": {"epochs": FLAGS.epochs, "finetune_epochs": FLAGS.finetune_epochs, "seeds": FLAGS.seeds,
                     "batch_size": FLAGS.batch_size, "prune_batch_size": FLAGS.prune_batch_size,
                     "train_limit": FLAGS.train_limit, "sparsities": sparsities,
                     "lr": FLAGS.lr or {name: LEARNING_RATES.get(name, 0.1) for name in FLAGS.models}},
        "summary": summary, "snip_layer_sparsity_at_95": layer_sparsity,
        "prepass_seconds": prepass_seconds, "sizes": sizes, "runs": runs, "anchors_mnist_epfl": ANCHORS_MNIST,
    }
    files.write_json(Path(FLAGS.output_dir) / "snip.json", payload)
    text = _markdown(payload, report, np)
    files.write_text(Path(FLAGS.output_dir) / "snip.md", text)
    print(text)


def _sizes(name, dense, masked, export, weight_masks, tfc) -> list[dict]:
    """Sizes of the trained dense and 95 %-SNIP models as float32 and int8, each without and with sparse encoding."""
    calibration = tfc.data.load(DATASET, "train", batch_size=100, seed=0)
    rows = []
    for variant, model in ((f"{name} dense", dense), (f"{name} SNIP 95 %", masked)):
        nonzero = weight_masks.weight_sparsity(export.strip(model), prune_biases=True)["total"]["nonzero"]
        for mode, sparse in (("float32", False), ("float32", True), ("int8", False), ("int8", True)):
            blob = export.to_tflite(model, mode, sparse=sparse, representative_data=calibration,
                                    num_calibration_samples=200)
            size = export.size_report(blob)
            rows.append({"variant": variant, "export": mode + (" sparse" if sparse else ""),
                         "nonzero_params": nonzero, "tflite_bytes": size.tflite_bytes, "gzip_bytes": size.gzip_bytes})
    return rows


def _summarize(runs: list[dict], sparsities: list[float], np) -> list[dict]:
    rows = []
    for name in dict.fromkeys(run["model"] for run in runs):
        for sparsity in sparsities:
            row = {"model": name, "sparsity": sparsity, "anchor_mnist": ANCHORS_MNIST.get(name, {}).get(sparsity)}
            for method in METHODS:
                errors = [100 * r["test_error"] for r in runs if r["model"] == name and r["method"] == method
                          and r["sparsity"] == sparsity and r["test_error"] is not None]
                row[f"{method}_mean"] = round(float(np.mean(errors)), 3) if errors else None
                row[f"{method}_std"] = round(float(np.std(errors)), 3) if errors else None
                row[f"{method}_runs"] = len(errors)
            rows.append(row)
    return rows


def _cell(row: dict, method: str) -> str:
    if row[f"{method}_mean"] is None:
        return "–"
    return f"{row[f'{method}_mean']:.2f} ± {row[f'{method}_std']:.2f}"


def _markdown(payload: dict, report, np) -> str:
    settings, host = payload["settings"], payload["host"]
    table_rows = [{
        "model": r["model"], "sparsity": f"{100 * r['sparsity']:.0f} %", "snip": _cell(r, "snip"),
        "random": _cell(r, "random"), "magnitude": _cell(r, "magnitude"),
        "anchor": "–" if r["anchor_mnist"] is None else f"{r['anchor_mnist']:.2f}",
    } for r in payload["summary"]]
    columns = [("model", "model"), ("sparsity", "sparsity"), ("snip", "SNIP error %"),
               ("random", "random error %"), ("magnitude", "magnitude-after-training error %"),
               ("anchor", "EPFL SNIP on MNIST, error % (anchor)")]
    layer_lines = []
    for name, per_seed in payload["snip_layer_sparsity_at_95"].items():
        for layer in per_seed[0]:
            values = [100 * seed_row[layer] for seed_row in per_seed]
            layer_lines.append({"model": name, "layer": layer, "sparsity": f"{np.mean(values):.1f} %"})
    prepass = [{"model": name, "seconds": f"{np.mean(v):.3f} (min {np.min(v):.3f}, max {np.max(v):.3f})"}
               for name, v in payload["prepass_seconds"].items()]
    verdicts = _verdicts(payload["summary"])
    return "\n".join([
        "# SNIP vs random vs magnitude pruning — LeNets on Fashion-MNIST", "",
        f"Command: `{payload['command']}`  ",
        f"Machine: {host['cpu']}, {host['cores']} cores ({host['machine']}), TensorFlow {payload['tensorflow']}; "
        f"total run time {payload['total_seconds'] / 60:.1f} min (cores shared with other jobs).  ",
        f"Schedule (bounded, not the paper's): {settings['epochs']} epochs of SGD (Nesterov 0.9, cosine lr from "
        f"{settings['lr']}, wd 5e-4, batch {settings['batch_size']}) on the first "
        f"{settings['train_limit'] or 60000:,} training images, for dense, SNIP and random models; magnitude = the "
        f"dense model of the same seed pruned globally by |w| then fine-tuned {settings['finetune_epochs']} epoch(s). "
        f"SNIP saliency on one batch of {settings['prune_batch_size']} training images, variance-scaling init, mask "
        f"applied to a fresh init (reference code). Random = uniform per layer. Biases are pruned with the "
        f"kernels (reference). {settings['seeds']} seeds; error on the 10,000 test images, mean ± std. "
        "`--full` runs 20 epochs, 5 fine-tuning epochs, 5 seeds.", "",
        report.markdown_table(table_rows, columns), "",
        "The anchors are MNIST (EPFL reproduction of SNIP, 10 seeds, 30,000 iterations at batch 500, augmentation): "
        "Fashion-MNIST is a much harder task, so compare the *rise* in error with sparsity, not the level.", "",
        *[f"- {v}" for v in verdicts], "",
        "## Per-layer sparsity of the SNIP masks at 95 % (mean over seeds)", "",
        report.markdown_table(layer_lines, [("model", "model"), ("layer", "layer"), ("sparsity", "pruned")]), "",
        "## SNIP pre-pass time (saliency on one batch + global top-κ), seconds", "",
        report.markdown_table(prepass, [("model", "model"), ("seconds", "seconds")]), "",
        "## Sizes of the exported models (seed 0)", "",
        report.markdown_table(payload["sizes"], [("variant", "model"), ("export", "export"),
                                                 ("nonzero_params", "non-zero weights"),
                                                 ("tflite_bytes", ".tflite bytes"), ("gzip_bytes", "gzip bytes")]),
        "",
        "Unstructured sparsity buys size, not speed, on stock TFLite kernels: the zeros shrink the gzipped file "
        "and the sparse-encoded flatbuffer, but the dense kernels still multiply every zero (XNNPACK's sparse "
        "path needs ARM and MobileNet-style 1×1 convolutions).",
    ]) + "\n"


def _verdicts(summary: list[dict]) -> list[str]:
    by_key = {(r["model"], r["sparsity"]): r for r in summary}
    verdicts = []
    for name in dict.fromkeys(r["model"] for r in summary):
        dense, at95 = by_key.get((name, 0.0)), by_key.get((name, 0.95))
        if not dense or not at95 or at95["snip_mean"] is None:
            continue
        gap = at95["snip_mean"] - dense["snip_mean"]
        if name == "lenet5":
            verdicts.append(f"Target LeNet-5 SNIP 95 % within 1 point of dense: {gap:+.2f} points → "
                            f"{'met' if gap <= 1.0 else 'NOT met'}.")
        if at95["random_mean"] is not None:
            lead = at95["random_mean"] - at95["snip_mean"]
            verdicts.append(f"Target {name}: SNIP better than random by ≥ 2 points at 95 %: {lead:+.2f} points → "
                            f"{'met' if lead >= 2.0 else 'NOT met'}.")
    return verdicts


if __name__ == "__main__":
    app.run(main)
