"""Your model, your images: the one-command budget from an image folder alone, with labels and without.

    python benchmarks/own_data.py          # writes benchmarks/results/own_data.{md,json}

What a user brings, built here from data that installs offline:

1. **Their images**: Fashion-MNIST as RGB JPEGs at ``--image_size`` px, ``--train_images`` in class folders
   (``folder/train/<class>/``, ``folder/test/<class>/``, ``--test_images``) — and the same training images in one flat
   folder without labels.
2. **Their model**: ``keras.applications.MobileNetV2(alpha=--alpha, weights=None)`` at that size with [-1, 1]
   pixels (``--scaling=tf``, as keras.applications' MobileNetV2 expects), trained ``--train_epochs`` on the folder.
3. **Budget mode** (``tfc.compress``) to ``--fraction`` of its measured float32 latency on ``--device``:
   (a) from the labelled folder within ``--max_drop`` points of accuracy; (b) from the unlabelled folder alone —
   the original's top-1 decisions are the labels, the limit is top-1 agreement ≥ ``--min_agreement``, and both
   results are then scored on the labelled test images too.

Reported: accuracy / agreement (LiteRT), latency measured side by side with the original, the precision chosen,
rounds, and the toolkit's time per stage, with the host's fingerprint. Resumable: ``--work_dir`` keeps the folder,
the trained model and every budget run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
flags.DEFINE_integer("image_size", 96, "Image and model input size (the issue's 96–160 px).", lower_bound=32)
flags.DEFINE_float("alpha", 0.35, "MobileNetV2 width multiplier.")
flags.DEFINE_integer("train_images", 3000, "Labelled training images (a tenth per class).", lower_bound=100)
flags.DEFINE_integer("test_images", 1000, "Labelled test images.", lower_bound=100)
flags.DEFINE_integer("train_epochs", 6, "Epochs that train the user's model.", lower_bound=1)
flags.DEFINE_float("fraction", 0.5, "The budget: a fraction of the model's measured float32 latency.")
flags.DEFINE_float("max_drop", 1.0, "Labelled: accuracy points the result may lose.")
flags.DEFINE_float("min_agreement", 0.97, "Unlabelled: top-1 agreement with the original the result must keep.")
flags.DEFINE_integer("finetune_epochs", 2, "Distillation epochs per budget round.", lower_bound=1)
flags.DEFINE_integer("max_rounds", 2, "Budget rounds at most.", lower_bound=1)
flags.DEFINE_string("method", "uniform", "Budget mode's pruning method (latency-aware Fisher trains while it "
                    "prunes: hours for a 96 px MobileNetV2 on 2 cores; global L1 empties MobileNetV2's thin layers).")
flags.DEFINE_string("input_size", None, "Budget mode's input_size: a size in px or 'auto' (fewer pixels behind a "
                    "Resizing layer that keeps the model's input); default: the resolution stays.")
flags.DEFINE_string("device", "litert", "Device (see tfcompress.latency.DEVICE_HELP).")
flags.DEFINE_string("work_dir", "/tmp/tfcompress-benchmark-own-data", "Folder, model and runs (resumable).")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where own_data.{md,json} go.")


def write_folders(root: Path) -> dict[str, Path]:
    """The user's photos: labelled train/test class folders and a flat unlabelled copy of the training images."""
    import numpy as np
    from PIL import Image

    import tfcompress as tfc

    folders = {"labelled": root / "photos", "unlabelled": root / "unlabelled"}
    if (root / "photos.done").exists():
        return folders
    for split, count in (("train", FLAGS.train_images), ("test", FLAGS.test_images)):
        images, labels = tfc.data.load_arrays("fashion_mnist", split)
        per_class = count // 10
        chosen = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
        for index in chosen:
            picture = Image.fromarray(np.repeat(images[index], 3, axis=-1)).resize(
                (FLAGS.image_size, FLAGS.image_size), Image.BILINEAR)
            folder = folders["labelled"] / split / f"class_{labels[index]}"
            folder.mkdir(parents=True, exist_ok=True)
            picture.save(folder / f"{index}.jpg", quality=90)
            if split == "train":
                folders["unlabelled"].mkdir(parents=True, exist_ok=True)
                picture.save(folders["unlabelled"] / f"{index}.jpg", quality=90)
    (root / "photos.done").write_text("")
    return folders


def users_model(root: Path, photos: Path):
    """keras.applications MobileNetV2 trained on the labelled folder ([-1, 1] pixels), saved once."""
    import keras

    import tfcompress as tfc

    path = root / "mobilenet_v2.keras"
    if path.exists():
        return keras.models.load_model(path)
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(FLAGS.image_size, FLAGS.image_size, 3), alpha=FLAGS.alpha,
                                           weights=None, classes=10, classifier_activation=None)
    data = tfc.data.ModelData.for_model(model, str(photos), tfc.data.Preprocessing("tf"))
    model.compile(keras.optimizers.Adam(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(data.batches("train", batch_size=64, augment=False), epochs=FLAGS.train_epochs, verbose=2)
    # keras.applications' BatchNorm momentum (0.999) leaves the moving statistics near their start after a short
    # training: inference would be at chance. Re-estimated from the training images, as a user's longer run would.
    tfc.training.recalibrate_batch_norm(model, data.batches("train", batch_size=64), max_batches=30)
    tfc.files.save_model(model, path)
    return model


def main(argv: list[str]) -> None:
    del argv
    import tfcompress as tfc
    from tfcompress.pipeline import Context, Measurement

    started = time.monotonic()
    work = Path(FLAGS.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.monotonic()
    folders = write_folders(work)
    seconds["write the image folders"] = time.monotonic() - clock
    clock = time.monotonic()
    model = users_model(work, folders["labelled"])
    seconds["train the user's model"] = time.monotonic() - clock
    scaling = tfc.data.Preprocessing("tf")
    labelled = tfc.data.ModelData.for_model(model, str(folders["labelled"]), scaling)
    unlabelled = tfc.data.ModelData.for_model(model, str(folders["unlabelled"]), scaling,
                                              test_spec=str(folders["labelled"] / "test")).labelled_by(model)
    measurement = Measurement(device=FLAGS.device, runs=30)
    runs = {}
    for name, data, drop in (("labelled", labelled, FLAGS.max_drop),
                             ("unlabelled", unlabelled, round(100 * (1 - FLAGS.min_agreement), 6))):
        clock = time.monotonic()
        context = Context.of_data(model, data, holdout_fraction=0.1)
        result = tfc.compress(model, context, folder=work / f"budget_{name}{_pixels()}",
                              latency_fraction=FLAGS.fraction,
                              max_accuracy_drop=drop, measurement=measurement, method=FLAGS.method,
                              finetune_epochs=FLAGS.finetune_epochs, max_rounds=FLAGS.max_rounds,
                              table_path=work / "table_{precision}.npz",
                              input_size=FLAGS.input_size if FLAGS.input_size in (None, "auto")
                              else int(FLAGS.input_size))
        seconds[f"budget mode, {name}"] = time.monotonic() - clock
        runs[name] = result
    # both results, and the original, on the labelled test images in LiteRT
    test = labelled.batches("test")
    rows = []
    original_tflite = work / f"budget_labelled{_pixels()}" / "base" / "00_original" / "model.tflite"
    paths = [original_tflite, runs["labelled"].tflite, runs["unlabelled"].tflite]
    device = tfc.latency.open_device(FLAGS.device)
    latencies = device.side_by_side(paths, threads=1, runs=100)
    for (label, result), path, ms in zip((("original (float32)", None), *runs.items()), paths, latencies,
                                         strict=True):
        lite = tfc.runtime.TFLiteModel(path, num_threads=2)
        accuracy = tfc.runtime.evaluate_tflite(lite, test, progress=False)["accuracy"]
        agreement = tfc.runtime.evaluate_tflite(lite, unlabelled.batches("test"), progress=False)["accuracy"]
        rows.append({"variant": label if result is None else f"budget mode from the {label} folder",
                     "litert_accuracy": accuracy, "agreement_with_original": agreement, "latency_ms": ms,
                     "speedup": latencies[0] / ms, "precision": "float32" if result is None else result.precision,
                     "met": None if result is None else result.met,
                     "message": "" if result is None else result.message,
                     "rounds": 0 if result is None else len(result.rows) - 2,
                     "input_size": None if result is None else result.input_size,
                     "input_sizes": [] if result is None else result.input_sizes,
                     "steps": [] if result is None else [
                         *({"what": f"probe {n} (untrained)", "predicted_ms": p["predicted_ms"],
                            "latency_ms": p["latency_ms"], "drop_points": None}
                           for n, p in enumerate(result.probes, 1)),
                         *({"what": r["stage"], "predicted_ms": r["predicted_ms"], "latency_ms": r["latency_ms"],
                            "drop_points": r["round_drop_points"]} for r in result.rows[2:])],
                     "params": tfc.profile.profile(model if result is None else result.model).total.params})
    report = {"command": "python benchmarks/own_data.py " + " ".join(sys.argv[1:]),
              "fingerprint": device.fingerprint(1), "minutes": round((time.monotonic() - started) / 60, 1),
              "image_size": FLAGS.image_size, "alpha": FLAGS.alpha, "train_images": FLAGS.train_images,
              "test_images": FLAGS.test_images, "fraction": FLAGS.fraction, "max_drop": FLAGS.max_drop,
              "min_agreement": FLAGS.min_agreement, "finetune_epochs": FLAGS.finetune_epochs,
              "input_size": FLAGS.input_size,
              "seconds": {key: round(value, 1) for key, value in seconds.items()}, "rows": rows}
    write(report)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _pixels() -> str:
    """The suffix of a run's folders and files with ``--input_size``: ``_input_auto``, ``_input_112``."""
    return f"_input_{FLAGS.input_size}" if FLAGS.input_size else ""


def write(report: dict) -> None:
    from tfcompress import files

    out = Path(FLAGS.output_dir)
    files.write_json(out / f"own_data{_pixels()}.json", report)
    fp = report["fingerprint"]
    lines = [f"# Your model, your images: budget mode from an image folder (MobileNetV2 α {report['alpha']}, "
             f"{report['image_size']} px)", "",
             f"Command: `{report['command'].strip()}` ({report['minutes']} min). Host: {fp.get('cpu')}, ISA "
             f"{'/'.join(fp.get('isa', []))}, oneDNN {'on' if fp.get('onednn') else 'off'}, "
             f"{fp.get('runtime')} {fp.get('runtime_version')}, 1 thread. The user's data: "
             f"{report['train_images']} training and {report['test_images']} test JPEGs (Fashion-MNIST as RGB at "
             f"{report['image_size']} px) in class folders, and the training images again in a flat folder without "
             f"labels. Budget: {report['fraction']}× the original's measured float32 latency; labelled within "
             f"{report['max_drop']} point(s), unlabelled with top-1 agreement ≥ {report['min_agreement']}; "
             f"{report['finetune_epochs']} distillation epoch(s) per round. Latency: the three files side by side.",
             f"{' Input size: ' + str(report.get('input_size')) + '.' if report.get('input_size') else ''}",
             "", "| variant | precision | input px | LiteRT accuracy (labelled test) | agreement with the original | "
             "latency ms | speed-up | params | rounds | met |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        met = "–" if row["met"] is None else ("yes" if row["met"] else "**no**")
        pixels = row.get("input_size") or report["image_size"]
        lines.append(f"| {row['variant']} | {row['precision']} | {pixels} | {100 * row['litert_accuracy']:.2f} % | "
                     f"{100 * row['agreement_with_original']:.2f} % | {row['latency_ms']:.3f} | "
                     f"{row['speedup']:.2f}× | {row['params']:,} | {row['rounds']} | {met} |")
    lines += ["", "Time per stage (this host):", ""]
    lines += [f"- {stage}: {value / 60:.1f} min" for stage, value in report["seconds"].items()]
    lines += [""] + [f"- **{row['variant']}**: {row['message']}" for row in report["rows"] if row["message"]]
    for row in report["rows"]:
        if row.get("steps"):
            ladder = ", ".join(f"{entry['size']} px {entry['latency_ms']:.3f} ms"
                               for entry in row.get("input_sizes", []))
            lines += ["", f"{row['variant']}, step by step (latency as measured beside the original"
                      + (f"; input sizes measured untrained: {ladder}" if ladder else "") + "):", "",
                      "| step | table's prediction ms | measured ms | points lost |", "|---|---|---|---|"]
            lines += [f"| {step['what']} | {_ms(step['predicted_ms'])} | {step['latency_ms']:.3f} | "
                      f"{'–' if step['drop_points'] is None else format(step['drop_points'], '.2f')} |"
                      for step in row["steps"]]
    files.write_text(out / f"own_data{_pixels()}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    app.run(main)
