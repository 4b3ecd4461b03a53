"""Training throughput (images/s) of ResNet-20 at 32×32 on this machine.

    python benchmarks/train_throughput.py            # writes benchmarks/results/train_throughput.{md,json}

Times ``model.fit`` steps on real Fashion-MNIST batches (padded to 32×32, augmented as in training) after a
warm-up epoch that absorbs tracing; reports images/s per batch size and input channel count. The numbers are
ratios' raw material: compare them within one run, not across machines.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["64", "128", "256"], "Batch sizes to time.")
flags.DEFINE_list("channels", ["1", "3"], "Input channels (3 = grayscale repeated, as CIFAR nets see it).")
flags.DEFINE_integer("steps", 30, "Timed steps per repeat.", lower_bound=5)
flags.DEFINE_integer("repeats", 3, "Timed epochs per configuration; the median is reported.", lower_bound=1)
flags.DEFINE_string("output_dir", str(Path(__file__).parent / "results"), "Where the .md and .json go.")


def measure(batch_size: int, channels: int, steps: int, repeats: int) -> dict:
    import keras
    import numpy as np

    import tfcompress as tfc

    keras.utils.set_random_seed(0)
    model = tfc.zoo.resnet_cifar(20, (32, 32, channels), 10)
    tfc.training.compile_classifier(model, tfc.training.sgd(0.1, steps * 2, "cosine"))
    dataset = tfc.data.load("fashion_mnist", "train", batch_size=batch_size, image_size=32, channels=channels,
                            augment=True, limit=batch_size * steps)
    model.fit(dataset.take(5), epochs=1, verbose=0, shuffle=False)  # tracing and first-step allocation
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds))
    return {"batch_size": batch_size, "channels": channels, "steps": steps, "seconds": [round(t, 2) for t in seconds],
            "median_seconds": round(median, 2), "images_per_second": round(batch_size * steps / median, 1)}


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    from tfcompress import files
    from tfcompress.latency import describe_host

    rows = [measure(int(b), int(c), FLAGS.steps, FLAGS.repeats) for c in FLAGS.channels for b in FLAGS.batch_sizes]
    result = {
        "benchmark": "train_throughput",
        "model": "resnet20 (CIFAR ResNet, option-B shortcuts), 32×32 inputs, SGD Nesterov",
        "command": "python benchmarks/train_throughput.py " + " ".join(
            f"--{name}={','.join(FLAGS[name].value) if isinstance(FLAGS[name].value, list) else FLAGS[name].value}"
            for name in ("batch_sizes", "channels", "steps", "repeats")),
        "host": describe_host(),
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "rows": rows,
    }
    out = Path(FLAGS.output_dir)
    files.write_json(out / "train_throughput.json", result)
    lines = [
        "# Training throughput: ResNet-20 at 32×32", "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['host'].get('cpu')}, {result['host'].get('cores')} cores, TensorFlow {tf.__version__}", "",
        "| input channels | batch size | steps per repeat | seconds per repeat | images/s (median) |",
        "|---|---|---|---|---|",
        *[f"| {r['channels']} | {r['batch_size']} | {r['steps']} | {', '.join(map(str, r['seconds']))} | "
          f"{r['images_per_second']} |" for r in rows],
        "", "Repeats of identical work sometimes differ by ≈ 5.1 s steps (e.g. 5.13 vs 10.26 s) on this shared VM: "
        "host scheduling, not the code; the median is the number to use.", "",
        "One epoch of Fashion-MNIST (60,000 images) at the best rate takes "
        f"{60000 / max(r['images_per_second'] for r in rows) / 60:.1f} min on this machine.",
    ]
    files.write_text(out / "train_throughput.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
