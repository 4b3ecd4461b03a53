"""Measures the latency of a .tflite model with LiteRT, litert-benchmark or a benchmark_model binary.

    python scripts/benchmark.py --tflite=models/lenet5.tflite --runner=litert --threads=4 --runs=50 \
        --json=results/lenet5.latency.json
    python scripts/benchmark.py --tflite=m.tflite --runner=binary --benchmark_binary=/opt/tflite/benchmark_model
    python scripts/benchmark.py --tflite=m.tflite --device=ssh://pi@raspberrypi       # on a Pi, over SSH
    python scripts/benchmark.py --tflite=m.tflite --device=binary:/opt/tflite/benchmark_model

``--device`` names where to measure as every script does (``litert``, ``litert_benchmark``, ``binary:PATH``,
``ssh://user@host[:port][?runner=...]``, see ``tfcompress.latency.devices``); ``--runner`` is the older
spelling for the local ones.

Prints a one-line summary, then the result as JSON; ``--json`` also writes it to a file (atomically). The
schema is ``tfcompress.latency.LatencyResult.to_dict()``. Bad input (no such model, not a .tflite file, no or
non-executable binary) is refused before anything runs, and nothing is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags

from tfcompress.latency.devices import DEVICE_HELP

FLAGS = flags.FLAGS
flags.DEFINE_string("tflite", None, "The .tflite model to measure.")
flags.DEFINE_enum("runner", "litert", ["litert", "litert_benchmark", "binary"],
                  "litert: LiteRT interpreter in this process; litert_benchmark: the litert-benchmark command "
                  "(falls back to litert, saying why); binary: TFLite's C++ benchmark_model at --benchmark_binary.")
flags.DEFINE_string("benchmark_binary", None,
                    "Path of the benchmark_model executable for --runner=binary "
                    "(default: $TFCOMPRESS_BENCHMARK_MODEL).")
flags.DEFINE_string("device", None, "Where to measure (instead of --runner). " + DEVICE_HELP)
flags.DEFINE_integer("threads", 1, "CPU threads for the runtime.", lower_bound=1)
flags.DEFINE_integer("runs", 50, "Timed inferences.", lower_bound=1)
flags.DEFINE_integer("warmup", 5, "Untimed inferences before the timed ones.", lower_bound=0)
flags.DEFINE_string("json", None, "Also write the result to this JSON file (atomically).")
flags.mark_flag_as_required("tflite")
flags.register_multi_flags_validator(
    ["device", "runner", "benchmark_binary"],
    lambda f: f["device"] is None or (f["runner"] == "litert" and f["benchmark_binary"] is None),
    message="--device names the runner and its binary itself: leave out --runner and --benchmark_binary",
)
flags.register_multi_flags_validator(
    ["runner", "benchmark_binary"], lambda f: f["benchmark_binary"] is None or f["runner"] == "binary",
    message="--benchmark_binary is only used with --runner=binary",
)


def main(argv: list[str]) -> None:
    del argv
    from tfcompress import files, latency

    # Validate everything before measuring, so a typo costs nothing and leaves no file behind.
    try:
        output = files.check_output(FLAGS.json, inputs=[FLAGS.tflite], kind="json") if FLAGS.json else None
        latency.check_tflite(FLAGS.tflite)
        device = latency.open_device(FLAGS.device) if FLAGS.device else None
        if FLAGS.runner == "binary" and device is None:
            latency.resolve_binary(FLAGS.benchmark_binary)
    except (OSError, ValueError) as error:
        raise app.UsageError(str(error)) from error

    try:
        if device is not None:
            result, = device.measure([Path(FLAGS.tflite)], threads=FLAGS.threads, runs=FLAGS.runs,
                                     warmup=FLAGS.warmup)
        else:
            result = latency.benchmark(
                FLAGS.tflite, runner=FLAGS.runner, threads=FLAGS.threads, runs=FLAGS.runs, warmup=FLAGS.warmup,
                binary=FLAGS.benchmark_binary,
            )
    except latency.BenchmarkError as error:
        sys.exit(f"benchmark failed: {error}")

    report = result.to_dict()
    if output is not None:
        files.write_json(output, report)
    print(result.summary())
    print(json.dumps(report, indent=2))


def run() -> None:
    from tfcompress.cli import app as cli_app

    cli_app.run(main)


if __name__ == "__main__":
    run()
