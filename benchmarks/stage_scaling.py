"""The toolkit's own cost as the input grows: time and peak memory of every stage at 32, 96, 160 and 224 px.

    python benchmarks/stage_scaling.py     # writes benchmarks/results/stage_scaling.{md,json}

For each ``--sizes`` entry, in a fresh process (so that each size's peak memory is its own): a keras.applications
MobileNetV2 (α ``--alpha``, random weights, 10 classes) at that size goes through the stages a budget run uses —
build, channel graph, latency table (float32, ``--table_runs`` runs per point), L1 channel pruning to half the
channels, float32 and int8 export (int8 calibrated on ``--images`` images), LiteRT evaluation of ``--images``
images, profile. Each stage's wall time and the process's peak resident memory after it (``ru_maxrss``: the peak so
far, so a stage that raises it shows). The model's MACs grow with the square of the size: the table says which
stage grows worse than that.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["32", "96", "160", "224"], "Input sizes (px).")
flags.DEFINE_float("alpha", 0.35, "MobileNetV2 width multiplier.")
flags.DEFINE_integer("images", 200, "Images for int8 calibration and the LiteRT evaluation.", lower_bound=1)
flags.DEFINE_integer("table_runs", 5, "Timed inferences per latency-table point.", lower_bound=1)
flags.DEFINE_integer("one_size", None, "Internal: measure this size in this process and print JSON.")
flags.DEFINE_string("work_dir", "/tmp/tfcompress-benchmark-stage-scaling", "Tables and files go here.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where stage_scaling.{md,json} go.")


def measure_one(size: int) -> dict:
    """Every stage at ``size`` px in this process: seconds and peak RSS (MiB) after it."""
    import resource

    clock = time.monotonic()
    import keras
    import numpy as np
    import tensorflow as tf

    import tfcompress as tfc

    stages: list[dict] = []

    def done(name: str) -> None:
        nonlocal clock
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stages.append({"stage": name, "seconds": round(time.monotonic() - clock, 2), "peak_mib": round(peak_mib)})
        clock = time.monotonic()

    done("import TensorFlow, Keras, tfcompress")
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=FLAGS.alpha, weights=None, classes=10,
                                           classifier_activation=None)
    done("build the model")
    graph = tfc.graph.ChannelGraph(model)
    macs = graph.cost()
    done("channel graph")
    work = Path(FLAGS.work_dir)
    for stale in work.glob(f"table_{size}.*"):  # a table build is timed from scratch, never resumed
        stale.unlink()
    table = tfc.latency.build_table(model, "litert", output=work / f"table_{size}.npz", precisions=("float32",),
                                    runs=FLAGS.table_runs, repeats=1, force=True, progress=False)
    done("latency table (float32)")
    predicted_ms = table.predict(model, "float32").total_us / 1000
    small = tfc.pruning.prune_channels(model, "l1", target_channels=0.5, graph=graph).model
    done("L1 pruning to half the channels")
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (FLAGS.images, size, size, 3)).astype("float32")
    labels = rng.integers(0, 10, FLAGS.images)
    flatbuffer = tfc.export.to_tflite(small)
    done("export float32")
    tfc.export.to_tflite(small, "int8", representative_data=images, num_calibration_samples=FLAGS.images)
    done(f"export int8 ({FLAGS.images} calibration images)")
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    tfc.runtime.evaluate_tflite(tfc.runtime.TFLiteModel(flatbuffer, num_threads=2), batches, progress=False)
    done(f"LiteRT evaluation ({FLAGS.images} images)")
    tfc.profile.profile(small)
    done("profile")
    return {"size": size, "macs": macs, "params": model.count_params(), "predicted_ms": round(predicted_ms, 3),
            "stages": stages}


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.one_size is not None:
        print("RESULT " + json.dumps(measure_one(FLAGS.one_size)))
        return
    Path(FLAGS.work_dir).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results = []
    for size in map(int, FLAGS.sizes):
        process = subprocess.run([sys.executable, __file__, f"--one_size={size}", f"--alpha={FLAGS.alpha}",
                                  f"--images={FLAGS.images}", f"--table_runs={FLAGS.table_runs}",
                                  f"--work_dir={FLAGS.work_dir}"], capture_output=True, text=True, check=False)
        line = next((line for line in process.stdout.splitlines() if line.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"size {size} failed:\n{process.stderr[-2000:]}")
        results.append(json.loads(line.removeprefix("RESULT ")))
        print(f"{size} px: " + ", ".join(f"{s['stage']} {s['seconds']} s" for s in results[-1]["stages"]))
    from tfcompress import latency

    report = {"command": "python benchmarks/stage_scaling.py " + " ".join(sys.argv[1:]),
              "fingerprint": latency.open_device("litert").fingerprint(1),
              "minutes": round((time.monotonic() - started) / 60, 1), "alpha": FLAGS.alpha, "results": results}
    write(report)


def write(report: dict) -> None:
    from tfcompress import files

    out = Path(FLAGS.output_dir)
    files.write_json(out / "stage_scaling.json", report)
    fp, results = report["fingerprint"], report["results"]
    base = results[0]
    lines = [f"# The toolkit's own cost by input size (MobileNetV2 α {report['alpha']}, random weights)", "",
             f"Command: `{report['command'].strip()}` ({report['minutes']} min). Host: {fp.get('cpu')}, ISA "
             f"{'/'.join(fp.get('isa', []))}, oneDNN {'on' if fp.get('onednn') else 'off'}, {fp.get('cores')} cores. "
             "Each size in a fresh process; seconds per stage, and the process's peak resident memory after it "
             "(MiB). *growth*: the stage's time relative to the smallest size, next to the model's MACs growth.", "",
             "| stage | " + " | ".join(f"{r['size']} px s (MiB)" for r in results) + " | time growth / MACs growth |",
             "|---|" + "---|" * (len(results) + 1)]
    for index, stage in enumerate(base["stages"]):
        cells = [f"{r['stages'][index]['seconds']:.2f} ({r['stages'][index]['peak_mib']:,})" for r in results]
        growth = results[-1]["stages"][index]["seconds"] / max(stage["seconds"], 1e-3)
        lines.append(f"| {stage['stage']} | " + " | ".join(cells) +
                     f" | ×{growth:.1f} / ×{results[-1]['macs'] / base['macs']:.1f} |")
    lines += ["", "| size | MACs | params | predicted float32 ms |", "|---|---|---|---|"]
    lines += [f"| {r['size']} px | {r['macs'] / 1e6:.1f} M | {r['params']:,} | {r['predicted_ms']} |" for r in results]
    files.write_text(out / "stage_scaling.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
