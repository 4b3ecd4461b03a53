"""Latency tables: build time, and predicted vs measured latency of randomly pruned models on one device.

    python benchmarks/latency_table.py          # writes benchmarks/results/latency_table.{md,json,png}

For each model (the reference ResNet-20 and MobileNetV2 at 32×32), a table is built for float32 and int8 on
``--device``; then ``--variants`` random pruned variants per precision are predicted from the table and
measured on the same device in the same run, in two kinds:

* **on-grid**: every group keeps a random count of the table's grid (multiples of the step, ``prune_channels(...,
  channel_multiple=step)`` on groups of up to ``step × (max_points − 1)`` channels), at least a quarter;
* **any count**: every group keeps a random count in [size/4, size].

Reported: median and 90th-percentile relative error |predicted − measured| / measured, for the table's default
"ceil" reading and for linear interpolation, and a predicted-vs-measured scatter plot.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["models/resnet20_fashion_mnist.keras", "mobilenet_v2"],
                  "A .keras file or a zoo model name (built at 32×32×3, 10 classes).")
flags.DEFINE_string("device", "litert", "Device to build and measure on (see tfcompress.latency.DEVICE_HELP).")
flags.DEFINE_list("precisions", ["float32", "int8"], "Precisions.")
flags.DEFINE_integer("variants", 30, "Random pruned variants per model, precision and kind.", lower_bound=1)
flags.DEFINE_integer("step", 8, "Table grid step (channels).", lower_bound=1)
flags.DEFINE_integer("max_points", 12, "Grid points per axis at most.", lower_bound=2)
flags.DEFINE_integer("repeats", 2, "Measurements per table point.", lower_bound=1)
flags.DEFINE_integer("runs", 30, "Timed inferences per table point.", lower_bound=1)
flags.DEFINE_integer("model_runs", 50, "Timed inferences per variant measurement (3 measurements, median).")
flags.DEFINE_integer("threads", 1, "Threads.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the random variants.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where the .md, .json and .png go.")


def load(name: str):
    from tfcompress import zoo
    from tfcompress.export import load_keras_model

    if name.endswith(".keras"):
        return load_keras_model(REPO / name if not Path(name).is_absolute() else name)
    return zoo.build(name, input_shape=(32, 32, 3), num_classes=10)


def random_keep(graph, rng, on_grid: bool) -> dict[int, int]:
    from tfcompress.latency.table import grid_points
    from tfcompress.latency.units import Axis

    counts = {}
    for group in graph.prunable_groups:
        if on_grid:  # a point of the table's grid for this group, at least a quarter of it
            points = grid_points(Axis((group.id,), (group.size,)), FLAGS.step, FLAGS.max_points)
            counts[group.id] = int(rng.choice(points[points >= group.size / 4]))
        else:
            counts[group.id] = int(rng.integers(max(1, group.size // 4), group.size + 1))
    return counts


def measure(device, paths: list[Path], runs: int, threads: int, rounds: int = 3) -> list[float]:
    """µs per variant: the median of ``rounds`` measurements taken in interleaved passes over all variants (a
    disturbed moment of the machine then spreads over variants instead of shifting one)."""
    return [1000 * ms for ms in device.side_by_side(paths, threads=threads, runs=runs, passes=rounds)]


def errors(rows: list[dict], key: str) -> dict:
    import numpy as np

    relative = np.abs([(r[key] - r["measured_us"]) / r["measured_us"] for r in rows])
    return {"median": float(np.median(relative)), "p90": float(np.percentile(relative, 90)), "n": len(rows)}


def main(argv: list[str]) -> None:
    import numpy as np

    from tfcompress import latency
    from tfcompress.export import to_tflite
    from tfcompress.graph import ChannelGraph
    from tfcompress.pruning import shrink

    device = latency.open_device(FLAGS.device)
    fingerprint = device.fingerprint(FLAGS.threads)
    rng = np.random.default_rng(FLAGS.seed)
    report: dict = {"command": " ".join(["python benchmarks/latency_table.py", *sys.argv[1:]]), "device": device.name,
                    "settings": {k: FLAGS[k].value for k in (
                        "precisions", "variants", "step", "max_points", "repeats", "runs", "model_runs", "threads",
                        "seed")}, "models": []}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        for name in FLAGS.models:
            model = load(name)
            graph = ChannelGraph(model)
            begin = time.monotonic()
            table = latency.build_table(model, device, output=Path(folder) / f"{model.name}.npz",
                                        precisions=FLAGS.precisions, step=FLAGS.step, max_points=FLAGS.max_points,
                                        repeats=FLAGS.repeats, runs=FLAGS.runs, threads=FLAGS.threads)
            build_s = time.monotonic() - begin
            points = sum(int(np.prod([len(p) for p in e.points])) for e in table.entries.values())
            entry = {"model": name, "name": model.name, "command": report["command"], "settings": report["settings"],
                     "fingerprint": fingerprint, "build_s": round(build_s, 1), "entries": len(table.entries),
                     "grid_points": points, "units": len(table.predict(model, FLAGS.precisions[0]).layers),
                     "results": {}}
            print(f"{name}: table of {len(table.entries)} entries, {points} points × {len(FLAGS.precisions)} "
                  f"precisions built in {build_s:.0f} s")
            for precision in FLAGS.precisions:
                cost = table.cost_fn(model, precision, graph)
                rows, paths = [], []
                calibration = np.random.default_rng(0).random((4, *model.input_shape[1:]), np.float32)
                for kind in ("on-grid", "any count"):
                    for i in range(FLAGS.variants):
                        counts = random_keep(graph, rng, kind == "on-grid")
                        pruned = shrink(model, graph.masks_from_keep({g: range(n) for g, n in counts.items()}),
                                        graph=graph)
                        paths.append(Path(folder) / f"{model.name}-{precision}-{len(paths)}.tflite")
                        to_tflite(pruned, precision, output=paths[-1],
                                  **({"representative_data": calibration, "num_calibration_samples": 4}
                                     if precision == "int8" else {}))
                        table.meta["interpolation"] = "linear"
                        linear = table.predict(pruned, precision).total_us
                        table.meta["interpolation"] = "ceil"
                        rows.append({"kind": kind, "variant": i, "predicted_us": cost(counts), "linear_us": linear,
                                     "macs": graph.cost(counts, "macs")})
                for row, measured in zip(rows, measure(device, paths, FLAGS.model_runs, FLAGS.threads), strict=True):
                    row["measured_us"] = measured
                full = table.predict(model, precision).total_us
                summary = {kind: {"ceil": errors([r for r in rows if r["kind"] == kind], "predicted_us"),
                                  "linear": errors([r for r in rows if r["kind"] == kind], "linear_us")}
                           for kind in ("on-grid", "any count")}
                entry["results"][precision] = {"unpruned_predicted_us": full, "summary": summary, "variants": rows}
                print(f"  {precision}: " + "; ".join(
                    f"{kind}: median {100 * s['ceil']['median']:.1f} %, p90 {100 * s['ceil']['p90']:.1f} %"
                    for kind, s in summary.items()))
            entry["minutes"] = round((time.monotonic() - begin) / 60, 1)
            report["models"].append(entry)
            write(report)  # after every model: a long run keeps what it measured
    print(f"done in {(time.monotonic() - started) / 60:.1f} min")


def write(report: dict) -> None:
    """Writes the results, keeping those of models this run did not measure (run models separately with
    different grids; each model's entry holds its command, settings and device)."""
    from tfcompress import files

    out = Path(FLAGS.output_dir)
    previous = out / "latency_table.json"
    if previous.exists():
        measured = {entry["name"] for entry in report["models"]}
        kept = [entry for entry in json.loads(previous.read_text()).get("models", [])
                if entry["name"] not in measured and "settings" in entry]
        report = {**report, "models": kept + report["models"]}
    files.write_json(out / "latency_table.json", report)
    plot(report, out / "latency_table.png")
    lines = ["# Latency tables: predicted vs measured latency of randomly pruned models", ""]
    for entry in report["models"]:
        fp, settings = entry["fingerprint"], entry["settings"]
        lines += [
            f"**{entry['name']}** — command: `{entry['command']}`  ",
            f"Device: `{fp.get('device')}`, {fp.get('cpu')} ({fp.get('machine')}, {fp.get('cores')} cores; ISA: "
            f"{', '.join(fp.get('isa') or []) or 'unknown'}; no AVX-512/VNNI unless listed), runtime "
            f"{fp.get('runtime')} {fp.get('runtime_version')}, {fp.get('threads')} thread(s). "
            f"Run time {entry['minutes']} min.  ",
            f"Table: grid step {settings['step']} channels, at most {settings['max_points']} points per axis, "
            f"residues, {settings['repeats']} measurements × {settings['runs']} runs per point. Variants: "
            f"{settings['variants']} per precision and kind, each the median of 3 interleaved measurements × "
            f"{settings['model_runs']} runs, on the same device in the same run.",
            "",
        ]
    lines += [
        "| model | table build | entries | grid points | precision | kind | median error | p90 error | "
        "median (linear) | p90 (linear) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in report["models"]:
        for precision, result in entry["results"].items():
            for kind, summary in result["summary"].items():
                c, lin = summary["ceil"], summary["linear"]
                lines.append(f"| {entry['name']} | {entry['build_s'] / 60:.1f} min | {entry['entries']} | "
                             f"{entry['grid_points']} | {precision} | {kind} | {100 * c['median']:.1f} % | "
                             f"{100 * c['p90']:.1f} % | {100 * lin['median']:.1f} % | {100 * lin['p90']:.1f} % |")
    lines += [
        "",
        "Build time covers all precisions of the model (conversion of every one-unit model + measurement). "
        "\"ceil\" (the default) reads a channel count between grid points at the next point up — CPU kernels pad "
        "channels to their SIMD tile, so latency is a staircase in the channel count; \"linear\" interpolates.",
        "",
        "![predicted vs measured](latency_table.png)",
        "",
    ]
    files.write_text(out / "latency_table.md", "\n".join(lines))
    print(json.dumps({e["name"]: {p: r["summary"] for p, r in e["results"].items()} for e in report["models"]},
                     indent=1))


def plot(report: dict, path: Path) -> None:
    """Predicted against measured latency of every variant, a panel per model (on-grid ○, any count ×)."""
    from tfcompress import plots

    panels = {
        f"{entry['name']} ({entry['fingerprint'].get('device')}, {entry['fingerprint'].get('cpu')})": [
            {**row, "series": f"{precision}, {row['kind']}", "marker": "o" if row["kind"] == "on-grid" else "x"}
            for precision, result in entry["results"].items() for row in result["variants"]]
        for entry in report["models"]}
    plots.predicted_vs_measured(panels, path)


if __name__ == "__main__":
    app.run(main)
