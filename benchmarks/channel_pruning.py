"""Channel pruning of the reference ResNet-20: MACs vs measured LiteRT latency, accuracy before and after a
short fine-tune, and surgery time on large keras.applications models — in one run.

    python benchmarks/channel_pruning.py     # writes benchmarks/results/channel_pruning.{md,json}

Each variant is the reference model pruned to 75 %, 50 % and 25 % of its MACs, uniformly (the same fraction
of every group) or by global L1 ranking (also with kept channel counts rounded up to multiples of 8), then
fine-tuned for ``--finetune_epochs`` on ``--train_limit``
training images (SGD + Nesterov, cosine from ``--lr``). Latency is the median of ``--runs`` batch-1 inferences
in the LiteRT interpreter, ratios against the unpruned model in the same run.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_string("model", "models/resnet20_fashion_mnist.keras", "Reference .keras model.")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset of the model.")
flags.DEFINE_list("targets", ["0.75", "0.5", "0.25"], "Fractions of the original MACs to keep.")
flags.DEFINE_list("importances", ["uniform", "l1", "l1@8"], "Importances to compare; IMPORTANCE@N keeps channel counts "
                  "that are multiples of N.")
flags.DEFINE_integer("finetune_epochs", 1, "Fine-tune epochs per variant.", lower_bound=0)
flags.DEFINE_integer("train_limit", 20000, "Training images used for fine-tuning (0: all 60,000).", lower_bound=0)
flags.DEFINE_float("lr", 0.02, "Fine-tune learning rate.")
flags.DEFINE_integer("runs", 100, "Timed inferences per latency measurement.", lower_bound=5)
flags.DEFINE_list("surgery_models", ["ResNet50", "DenseNet121"], "keras.applications models timed in surgery.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where the .md and .json go.")

COLUMNS = [
    ("variant", "variant"), ("macs", "MACs"), ("macs_ratio", "MACs ×"), ("params", "params"),
    ("latency_ms_t1", "ms, 1 thread"), ("latency_ms_t1_ratio", "latency × (1 thr.)"),
    ("latency_ms_t2", "ms, 2 threads"), ("latency_ms_t2_ratio", "latency × (2 thr.)"),
    ("accuracy_pruned", "acc. pruned"), ("keras_accuracy", "acc. fine-tuned"), ("litert_accuracy", "LiteRT acc."),
]


def surgery_timing(name: str) -> dict:
    import keras

    from tfcompress.graph import ChannelGraph
    from tfcompress.pruning import get_importance, plan_channels, shrink

    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10)
    start = time.perf_counter()
    graph = ChannelGraph(model)
    plan = plan_channels(graph, get_importance("l1").scores(graph), target_channels=0.7, scope="local")
    planned = time.perf_counter()
    shrink(model, plan.masks, graph=graph)
    done = time.perf_counter()
    return {"model": name, "layers": len(model.layers), "groups": len(graph.groups),
            "graph_and_plan_s": round(planned - start, 2), "shrink_s": round(done - planned, 2),
            "total_s": round(done - start, 2)}


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    import tfcompress as tfc
    from tfcompress import export, files, latency, report

    started = time.time()
    model = export.load_keras_model(REPO / FLAGS.model)
    options = tfc.data.pipeline_options_for(model.input_shape, FLAGS.dataset)
    test = tfc.data.load(FLAGS.dataset, "test", batch_size=500, **options)
    train = tfc.data.load(FLAGS.dataset, "train", batch_size=128, augment=True, seed=0,
                          limit=FLAGS.train_limit or None, **options)
    rows = []
    with tempfile.TemporaryDirectory(prefix="channel-pruning-") as workdir:
        def measure(name, keras_model, **extra):
            row = report.measure_variant(name, keras_model, export.to_tflite(keras_model), test,
                                         Path(workdir) / f"{len(rows)}.tflite", threads=(1, 2), runs=FLAGS.runs)
            row.pop("tflite")
            rows.append({**row, **extra})
            print(f"{name}: {row['macs']:,} MACs, {row['latency_ms_t1']:.3f} ms, acc {row['keras_accuracy']:.4f}",
                  flush=True)

        measure("unpruned", model, accuracy_pruned=None)
        for label in FLAGS.importances:
            importance, _, multiple = label.partition("@")
            for target in (float(t) for t in FLAGS.targets):
                small = tfc.pruning.prune_channels(model, importance, target_macs=target,
                                                   channel_multiple=int(multiple or 1)).model
                accuracy_pruned = tfc.training.evaluate(small, test)["accuracy"]
                if FLAGS.finetune_epochs:
                    steps = FLAGS.finetune_epochs * int(train.cardinality())
                    tfc.training.compile_classifier(small, tfc.training.sgd(FLAGS.lr, steps, "cosine"))
                    small.fit(train, epochs=FLAGS.finetune_epochs, verbose=0, shuffle=False)
                name = importance + (f", channels ×{multiple}" if multiple else "")
                measure(f"{name} → {target:.0%} MACs", small, accuracy_pruned=accuracy_pruned)
    base = rows[0]
    for row in rows:
        row["macs_ratio"] = round(row["macs"] / base["macs"], 3)
        for threads in (1, 2):  # latency relative to the unpruned model: < 1 is faster
            row[f"latency_ms_t{threads}_ratio"] = round(row[f"latency_ms_t{threads}"] / base[f"latency_ms_t{threads}"],
                                                        3)
    timings = [surgery_timing(name) for name in FLAGS.surgery_models]

    host = latency.describe_host()
    command = ("python benchmarks/channel_pruning.py " + f"--finetune_epochs={FLAGS.finetune_epochs} "
               f"--train_limit={FLAGS.train_limit} --lr={FLAGS.lr} --runs={FLAGS.runs}")
    files.write_json(Path(FLAGS.output_dir) / "channel_pruning.json", {
        "benchmark": "channel_pruning", "command": command, "host": host, "tensorflow": tf.__version__,
        "rows": rows, "surgery": timings, "seconds": round(time.time() - started),
    })
    surgery_lines = [f"| {t['model']} | {t['layers']} | {t['groups']} | {t['graph_and_plan_s']} | {t['shrink_s']} | "
                     f"{t['total_s']} |" for t in timings]
    text = "\n".join([
        "# Channel pruning of the reference ResNet-20 (Fashion-MNIST 32×32)", "",
        f"Command: `{command}`  ",
        f"Machine: {host['cpu']}, {host['cores']} cores, TensorFlow {tf.__version__}. Run time "
        f"{(time.time() - started) / 60:.0f} min.  ",
        f"Fine-tune: {FLAGS.finetune_epochs} epoch(s) on {FLAGS.train_limit or 60000} training images, SGD "
        f"Nesterov, cosine from lr {FLAGS.lr}. Latency: median of {FLAGS.runs} batch-1 runs, LiteRT interpreter "
        "(XNNPACK), float32; ratios are to the unpruned model in the same run (< 1 = faster).", "",
        report.markdown_table(rows, COLUMNS), "",
        "## Surgery time (graph + L1 plan removing 30 % of every group, then shrink)", "",
        "| model | layers | groups | graph + plan s | shrink s | total s |", "|---|---|---|---|---|---|",
        *surgery_lines, "",
    ]) + "\n"
    files.write_text(Path(FLAGS.output_dir) / "channel_pruning.md", text)
    print(text)


if __name__ == "__main__":
    app.run(main)
