"""tfcompress against tensorflow-model-optimization (tfmot): the same trained models, data, fine-tune budget and
host, every ``.tflite`` measured in one session.

    make baselines                # installs tfmot + tf-keras (--no-deps), then runs this with its defaults
    python benchmarks/baselines.py   # writes benchmarks/results/baselines.{md,json} and baselines_MODEL.png

For each of ``--models`` (LeNet-5 and ResNet-20 on Fashion-MNIST, the trained ``models/*.keras``; ``--originals``
takes others, and a model without a file is trained here first):

* **tfcompress** (this process, Keras 3): int8 post-training quantization; channel pruning (``--prune_method``)
  to each of ``--channel_fractions`` of the channels, fine-tuned, in float32 and int8; EC2T ternary weights
  trained for the same epochs, in float32 and int8; with ``--compress_dir``, the budget-mode results of
  ``benchmarks/compress.py`` (their own, larger fine-tune budget: reported, not part of the verdict).
* **tfmot** (``benchmarks/baselines_tfmot.py`` in its own process: tfmot needs legacy ``tf_keras`` and switches
  the process to it): the same architecture rebuilt in ``tf_keras`` with the same weights (outputs checked
  against Keras 3 on a batch), ``prune_low_magnitude`` to each of ``--sparsities`` (``PolynomialDecay``) as
  ``.tflite`` dense, with ``EXPERIMENTAL_SPARSITY`` and as int8, and quantization-aware training, int8.

Both sides fine-tune ``--finetune_epochs`` × ``--train_limit`` images (0: all 54,000) with the same optimizer
(SGD, Nesterov 0.9, cosine from ``--lr``, weight decay 5e-4 on kernels) on the same augmented pipeline; int8
calibrates on the same 256 images. All files are then timed in interleaved passes on ``--device`` (median of 3
× ``--runs``, 1 thread) and evaluated in LiteRT on the test split. The summary names, per model, who is fastest
and who is smallest (gzip) among the variants within ``--max_drop`` points of the original, and by how much.

Each variant is kept in ``--work_dir`` under a folder named after the model's weights and the budget, so a
killed run resumes and a run with other settings starts afresh.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("baselines_tfmot.py")
DATASET = "fashion_mnist"
BASELINE_MODULES = ("tensorflow_model_optimization", "tf_keras")
INSTALL_HINT = ("run `make baselines` (or: pip install --no-deps tensorflow-model-optimization tf-keras==2.21.* "
                "&& pip install dm-tree mock six)")
PARITY_TOLERANCE = 1e-4  # max |Keras 3 − tf_keras| of the logits on a batch, float32
CALIBRATION_IMAGES = 256  # as tfcompress.pipeline's int8 rows
LATENCY_NOISE = 0.05  # interleaved medians on a shared host: closer than 5 % is called a tie

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["lenet5", "resnet20"], "Reference models (tfcompress.zoo names) on Fashion-MNIST.")
flags.DEFINE_list("originals", [], "NAME=PATH: a trained .keras to start from instead of models/NAME_fashion_mnist"
                  ".keras (e.g. resnet20=/work/bench-runs/compress/int8/00_original/model.keras).")
flags.DEFINE_integer("train_epochs", 10, "Epochs to train a model that has no .keras file yet.", lower_bound=1)
flags.DEFINE_integer("finetune_epochs", 1, "Fine-tune epochs of every compressed variant, both sides.", lower_bound=1)
flags.DEFINE_integer("train_limit", 0, "Training images per epoch (0: all 54,000).", lower_bound=0)
flags.DEFINE_integer("test_limit", 0, "Test images for every accuracy (0: all 10,000).", lower_bound=0)
flags.DEFINE_float("lr", 0.01, "Fine-tune learning rate (cosine decay), both sides.", lower_bound=0.0)
flags.register_validator("lr", lambda lr: lr > 0, "--lr must be > 0")
flags.DEFINE_list("sparsities", ["0.5", "0.8", "0.9"], "tfmot prune_low_magnitude final sparsities.")
flags.DEFINE_float("pruning_end_fraction", 0.75, "tfmot reaches the final sparsity at this fraction of the "
                   "fine-tune; the rest trains with the final mask.", lower_bound=0.05, upper_bound=1.0)
flags.DEFINE_bool("qat", True, "Include tfmot quantization-aware training.")
flags.DEFINE_list("channel_fractions", ["0.75", "0.5"], "tfcompress channel pruning: fractions of channels kept.")
flags.DEFINE_enum("prune_method", "l1", ["l1", "l2", "bn", "uniform", "taylor", "fisher"],
                  "tfcompress channel importance (fisher prunes while training: more than the fine-tune budget).")
flags.DEFINE_bool("ec2t", True, "Include tfcompress EC2T ternary weights.")
flags.DEFINE_string("compress_dir", "", "A benchmarks/compress.py --work_dir: add its budget_* results (ResNet-20).")
flags.DEFINE_float("max_drop", 1.0, "Equal accuracy: at most this many points below the original.", lower_bound=0.0)
flags.DEFINE_string("device", "litert", "Device (see tfcompress.latency.DEVICE_HELP).")
flags.DEFINE_integer("runs", 100, "Timed inferences per file per pass.", lower_bound=1)
flags.DEFINE_string("work_dir", "/tmp/tfcompress-benchmark-baselines", "Variants (resumable) go here.")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where the .md, .json and .png go.")


def _fractions(values: Sequence[str]) -> bool:
    try:
        return all(0.0 < float(value) < 1.0 for value in values)
    except ValueError:
        return False


flags.register_validator("sparsities", _fractions, "sparsities are numbers in (0, 1)")
flags.register_validator("channel_fractions", _fractions, "channel fractions are numbers in (0, 1)")
flags.register_validator("originals", lambda values: all("=" in value for value in values),
                         "each --originals entry is NAME=PATH")


def missing_baseline_packages(modules: Sequence[str] = BASELINE_MODULES) -> list[str]:
    """The tfmot packages this Python cannot import, found without importing them (importing tfmot would switch
    this process to legacy Keras)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def require_baselines(modules: Sequence[str] = BASELINE_MODULES) -> None:
    """Exits with one line naming what is missing and how to install it."""
    missing = missing_baseline_packages(modules)
    if missing:
        sys.exit(f"baselines.py: {' and '.join(missing)} not installed in {sys.executable}: {INSTALL_HINT}")


def main(argv: list[str]) -> None:
    del argv
    require_baselines()
    import keras
    import tensorflow as tf

    import tfcompress as tfc
    from tfcompress import plots

    plots.require_matplotlib()
    started = time.monotonic()
    work = Path(FLAGS.work_dir)
    entries: list[dict[str, Any]] = []
    parity: dict[str, Any] = {}
    for name in FLAGS.models:
        model_entries, parity[name] = compare_on(name, work)
        entries += model_entries

    print(f"measuring {len(entries)} .tflite files in one interleaved session", flush=True)
    device = tfc.latency.open_device(FLAGS.device)
    accuracies = litert_accuracies(entries, work)
    measured = device.side_by_side([Path(entry["tflite"]) for entry in entries], threads=1, runs=FLAGS.runs)
    rows = finish_rows(entries, accuracies, measured)
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__,
                "ai_edge_litert": tfc.latency.interpreter.litert_version(),
                **next(iter(parity.values()))["versions"]}
    report = {
        "benchmark": "baselines",
        "command": " ".join(["python benchmarks/baselines.py", *sys.argv[1:]]),
        "flags": _own_flags(),
        "fingerprint": device.fingerprint(1),
        "versions": versions,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "budget": {"finetune_epochs": FLAGS.finetune_epochs, "train_images": FLAGS.train_limit or 54000,
                   "test_images": FLAGS.test_limit or 10000, "lr": FLAGS.lr},
        "parity": parity,
        "rows": rows,
        "verdicts": equal_accuracy_verdicts(rows, FLAGS.max_drop),
    }
    write(report)


# ------------------------------------------------------------------------------------------- one model


def compare_on(name: str, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Runs (or reads back) both sides for one model: the entries to measure and the tf_keras parity check."""
    import numpy as np

    import tfcompress as tfc
    from tfcompress.pipeline import Context, Measurement, run_recipe

    model = original_model(name, work)
    options = tfc.data.pipeline_options_for(model.input_shape, DATASET)
    data = {
        "train": {"name": DATASET, "split": "train", "holdout_fraction": 0.1, "augment": True, "shuffle": True,
                  "seed": 0, "limit": FLAGS.train_limit or None, "batch_size": 128, **options},
        "test": {"name": DATASET, "split": "test", "batch_size": 500, "limit": FLAGS.test_limit or None, **options},
    }
    settings = {"model": name, "weights": weights_digest(model), "data": data,
                "finetune_epochs": FLAGS.finetune_epochs, "lr": FLAGS.lr, "weight_decay": 5e-4, "seed": 0}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    folder = work / name / f"budget-{key}"  # other weights or another budget: another folder
    folder.mkdir(parents=True, exist_ok=True)
    tfc.files.write_json(folder / "settings.json", settings)
    train, test = tfc.data.load(**data["train"]), tfc.data.load(**data["test"])
    calibration_path = folder / "calibration.npz"
    if not calibration_path.is_file():
        images = np.concatenate([x for x, _ in train.take(-(-CALIBRATION_IMAGES // 128)).as_numpy_iterator()])
        write_npz(calibration_path, {"images": images[:CALIBRATION_IMAGES]})
    with np.load(calibration_path) as archive:
        calibration = archive["images"]

    # tfcompress: every recipe through tfcompress.pipeline (each stage kept on disk, resumed when killed)
    context = Context(original=model, train=train, test=test, progress=print)
    measurement = Measurement(device=FLAGS.device, runs=10, eval_limit=None, calibration=calibration)  # timed later
    ours = folder / "tfcompress"
    entries = []

    def add(row: dict[str, Any], path: Path, side: str, variant: str, short: str, **extra: Any) -> None:
        entries.append({"model": name, "side": side, "variant": variant, "short": short,
                        "precision": row["precision"], "keras_accuracy": row["keras_accuracy"],
                        "params": row["params"], "nonzero_params": row["nonzero_params"], "macs": row.get("macs"),
                        "train_seconds": row.get("seconds"), "equal_budget": True, "tflite": str(path), **extra})

    base = run_recipe(model, [{"stage": "quantize", "precision": "int8"}], context, ours / "int8", measurement)
    add(base.rows[0], ours / "int8" / "00_original" / "model.tflite", "reference", "original (float32)", "original")
    add(base.rows[1], base.tflite, "tfcompress", "int8 post-training quantization", "PTQ int8")
    method = FLAGS.prune_method
    for fraction in map(float, FLAGS.channel_fractions):
        recipe = [{"stage": "prune", "method": method, "target_channels": fraction},
                  {"stage": "finetune", "epochs": FLAGS.finetune_epochs, "lr": FLAGS.lr},
                  {"stage": "quantize", "precision": "int8"}]
        run = run_recipe(model, recipe, context, ours / f"{method}_{fraction:g}", measurement)
        label = (f"{method.upper() if method.startswith('l') else method} channel pruning to {100 * fraction:.0f} % "
                 "of channels + fine-tune")
        short = f"{method} {100 * fraction:.0f}% ch"
        add(run.rows[2], run.folder / "02_finetune" / "model.tflite", "tfcompress", label, short,
            equal_budget=method != "fisher")
        add(run.rows[3], run.tflite, "tfcompress", f"{label} + int8", f"{short} int8", equal_budget=method != "fisher")
    if FLAGS.ec2t:
        recipe = [{"stage": "ternarize", "method": "ec2t", "epochs": FLAGS.finetune_epochs},
                  {"stage": "quantize", "precision": "int8"}]
        run = run_recipe(model, recipe, context, ours / "ec2t", measurement)
        add(run.rows[1], run.folder / "01_ternarize" / "model.tflite", "tfcompress", "EC2T ternary weights", "EC2T")
        add(run.rows[2], run.tflite, "tfcompress", "EC2T ternary weights + int8", "EC2T int8")
    if FLAGS.compress_dir:
        entries += budget_mode_entries(name, Path(FLAGS.compress_dir), ours / "int8" / "00_original" / "row.json")

    # tfmot: the worker process, on the same weights, data and calibration images
    transfer = folder / "transfer"
    parity_images = np.concatenate([x for x, _ in test.take(1).as_numpy_iterator()])[:32]
    describe_architecture(model, transfer, parity_images)
    job = {"key": key, "folder": str(folder / "tfmot"), "repo": str(REPO), "data": data, "seed": 0,
           "architecture": str(transfer / "architecture.json"), "weights": str(transfer / "weights.npz"),
           "parity": str(transfer / "parity.npz"), "parity_tolerance": PARITY_TOLERANCE,
           "calibration": str(calibration_path), "finetune_epochs": FLAGS.finetune_epochs, "lr": FLAGS.lr,
           "weight_decay": 5e-4, "sparsities": [float(s) for s in FLAGS.sparsities],
           "pruning_end_fraction": FLAGS.pruning_end_fraction, "qat": FLAGS.qat}
    run_worker(job, folder / "tfmot" / "job.json")
    parity = json.loads((folder / "tfmot" / "parity.json").read_text())
    entries += tfmot_entries(name, folder / "tfmot", job)
    return entries, parity


def original_model(name: str, work: Path) -> Any:
    """The trained float32 model: ``--originals``, else ``models/NAME_fashion_mnist.keras``, else trained here
    (``--train_epochs``, kept in the work folder)."""
    import tfcompress as tfc

    overrides = dict(entry.split("=", 1) for entry in FLAGS.originals)
    path = Path(overrides.get(name, REPO / "models" / f"{name}_{DATASET}.keras"))
    if name in overrides or path.is_file():
        return tfc.export.load_keras_model(path)
    trained = work / name / "original.keras"
    if trained.is_file():
        return tfc.export.load_keras_model(trained)
    image_size = 28 if name.startswith("lenet") else 32  # as the models/ files
    model = tfc.zoo.build(name, tfc.data.input_shape(DATASET, image_size), 10)
    train = tfc.data.load(DATASET, "train", holdout_fraction=0.1, augment=True, seed=0, image_size=image_size)
    print(f"no trained {name}: training {FLAGS.train_epochs} epochs into {trained}", flush=True)
    tfc.training.compile_classifier(model, tfc.training.sgd(0.1, FLAGS.train_epochs * int(train.cardinality())))
    model.fit(train, epochs=FLAGS.train_epochs, verbose=2)
    tfc.files.save_model(model, trained)
    return model


def weights_digest(model: Any) -> str:
    import numpy as np

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- the tfmot side


def describe_architecture(model: Any, folder: Path, parity_inputs: Any) -> None:
    """Writes what the tfmot worker rebuilds the model from: ``architecture.json`` (per layer in topological
    order: class, config with Keras 3 serialization reduced to plain values, the layers it reads, its weight
    keys), ``weights.npz`` and ``parity.npz`` (inputs and the Keras 3 logits, for the rebuild's check)."""
    import numpy as np

    from tfcompress import files

    config = model.get_config()
    by_name = {layer.name: layer for layer in model.layers}
    layers, weights = [], {}
    for index, entry in enumerate(config["layers"]):
        name = entry["name"]
        nodes = entry.get("inbound_nodes") or []
        if len(nodes) > 1:
            raise ValueError(f"layer {name!r} is called {len(nodes)} times; shared layers are not rebuilt")
        args = nodes[0]["args"] if nodes else []
        keys = []
        for position, array in enumerate(by_name[name].get_weights()):
            keys.append(f"{index:04d}_{position}")
            weights[keys[-1]] = array
        layers.append({"name": name, "class_name": entry["class_name"], "config": _plain(entry["config"]),
                       "inputs": _history_names(args), "as_list": bool(args) and isinstance(args[0], list),
                       "weights": keys})
    description = {"name": model.name, "layers": layers, "inputs": _endpoint_names(config["input_layers"]),
                   "outputs": _endpoint_names(config["output_layers"])}
    files.write_json(folder / "architecture.json", description)
    write_npz(folder / "weights.npz", weights)
    write_npz(folder / "parity.npz", {"inputs": parity_inputs,
                                      "outputs": np.asarray(model(parity_inputs, training=False))})


def write_npz(path: Path, arrays: Mapping[str, Any]) -> None:
    import numpy as np

    from tfcompress import files

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    files.write_bytes(path, buffer.getvalue())


def _plain(value: Any) -> Any:
    """A Keras 3 config value as tf_keras takes it: a dtype policy by its name, a serialized object as
    ``{"class_name", "config"}`` (tf_keras does not know ``module`` / ``registered_name``)."""
    if isinstance(value, dict):
        if str(value.get("class_name", "")).endswith("DTypePolicy"):
            return value["config"]["name"]
        if "class_name" in value and "config" in value:
            return {"class_name": value["class_name"], "config": _plain(value["config"])}
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _history_names(args: Any) -> list[str]:
    """The layers whose outputs a node's arguments hold, in order."""
    if isinstance(args, dict):
        if args.get("class_name") == "__keras_tensor__":
            return [args["config"]["keras_history"][0]]
        return [name for item in args.values() for name in _history_names(item)]
    if isinstance(args, list | tuple):
        return [name for item in args for name in _history_names(item)]
    return []


def _endpoint_names(endpoints: Any) -> list[str]:
    """``["image", 0, 0]`` (one) or ``[["a", 0, 0], …]`` → layer names."""
    if endpoints and isinstance(endpoints[0], str):
        return [endpoints[0]]
    return [endpoint[0] for endpoint in endpoints]


def run_worker(job: dict[str, Any], job_path: Path) -> None:
    """Runs ``baselines_tfmot.py`` on ``job`` in its own process with legacy Keras; its output goes to ours."""
    from tfcompress import files

    files.write_json(job_path, job)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONUNBUFFERED": "1"}
    print(f"tfmot worker: {job_path}", flush=True)
    process = subprocess.run([sys.executable, str(WORKER), f"--job={job_path}"], env=env, check=False)
    if process.returncode != 0:
        raise RuntimeError(f"the tfmot worker failed (exit {process.returncode}; its output is above): "
                           f"{sys.executable} {WORKER} --job={job_path}")


def tfmot_entries(name: str, folder: Path, job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The worker's variants as entries to measure."""
    names = ["rebuild"] + [f"prune_{s:g}" for s in job["sparsities"]] + (["qat"] if job["qat"] else [])
    entries = []
    for stem in names:
        saved = json.loads((folder / f"{stem}.json").read_text())
        for variant in saved["variants"]:
            sparsity = variant.get("target_sparsity")
            if stem == "rebuild":
                side, label, short = "reference", "original rebuilt in tf_keras (float32, converter check)", "tf_keras"
            elif sparsity is not None:
                kind = {"float32": "dense", "float32_sparse": "sparse format", "int8": "int8"}[
                    variant["name"].split("_", 2)[2]]
                side, label = "tfmot", f"magnitude pruning to {100 * sparsity:.0f} % sparsity ({kind})"
                short = f"P{100 * sparsity:.0f} {kind}"
            else:
                side, label, short = "tfmot", "quantization-aware training (int8)", "QAT int8"
            entries.append({"model": name, "side": side, "variant": label, "short": short,
                            "precision": variant["precision"], "keras_accuracy": variant["keras_accuracy"],
                            "params": variant["params"], "nonzero_params": variant["nonzero_params"], "macs": None,
                            "kernel_sparsity": variant.get("kernel_sparsity"),
                            "train_seconds": saved.get("train_seconds"), "equal_budget": True,
                            "tflite": str(folder / variant["tflite"])})
    return entries


def budget_mode_entries(name: str, compress_dir: Path, our_original_row: Path) -> list[dict[str, Any]]:
    """``benchmarks/compress.py``'s budget results, when that run started from the same weights."""
    ours = json.loads(our_original_row.read_text())["key"]["source"]
    entries = []
    for folder in sorted(compress_dir.glob("budget_*")):
        try:
            source = json.loads((folder / "base" / "00_original" / "row.json").read_text())["key"]["source"]
            budget = json.loads((folder / "budget.json").read_text())
            row = json.loads((folder / "summary.json").read_text())["rows"][-1]
        except (OSError, ValueError, KeyError):
            print(f"{folder}: not a finished budget-mode run, left out", flush=True)
            continue
        if source != ours:
            print(f"{folder}: started from other weights ({source}) than {name} ({ours}), left out", flush=True)
            continue
        fraction = folder.name.removeprefix("budget_")
        entries.append({"model": name, "side": "tfcompress", "variant": f"budget mode {fraction}× ({budget['message']}"
                        "; own fine-tune budget)", "short": f"budget {fraction}×", "precision": row["precision"],
                        "keras_accuracy": row["keras_accuracy"], "params": row["params"],
                        "nonzero_params": row["nonzero_params"], "macs": row.get("macs"), "train_seconds": None,
                        "equal_budget": False, "tflite": str(folder / "model.tflite")})
    return entries


# ---------------------------------------------------------------------------------------- measurement, rows


def litert_accuracies(entries: Sequence[Mapping[str, Any]], work: Path) -> list[float]:
    """LiteRT top-1 accuracy of every entry's file on the test split, cached by file content and test set."""
    import tfcompress as tfc

    cache_path = work / "litert_accuracy.json"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    tests: dict[str, Any] = {}
    results = []
    for entry in entries:
        path = Path(entry["tflite"])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        key = f"{digest}:{FLAGS.test_limit}"
        if key not in cache:
            model = tfc.runtime.TFLiteModel(path, num_threads=2)
            size = model.input_shape[0]
            if size not in tests:
                options = {"image_size": size, "channels": model.input_shape[2]}
                tests[size] = tfc.data.load(DATASET, "test", batch_size=500, limit=FLAGS.test_limit or None,
                                            **options)
            cache[key] = tfc.runtime.evaluate_tflite(model, tests[size])["accuracy"]
            tfc.files.write_json(cache_path, cache)
            print(f"LiteRT accuracy {entry['model']} {entry['variant']}: {cache[key]:.4f}", flush=True)
        results.append(cache[key])
    return results


def finish_rows(entries: Sequence[Mapping[str, Any]], accuracies: Sequence[float],
                latencies_ms: Sequence[float]) -> list[dict[str, Any]]:
    """Rows with LiteRT accuracy, sizes, latency, and the speed-up and points lost against the model's original."""
    from tfcompress import export

    rows = []
    for entry, accuracy, ms in zip(entries, accuracies, latencies_ms, strict=True):
        size = export.size_report(entry["tflite"])
        rows.append({**entry, "litert_accuracy": accuracy, "latency_ms": round(ms, 4),
                     "tflite_bytes": size.tflite_bytes, "gzip_bytes": size.gzip_bytes})
    originals = {row["model"]: row for row in rows if row["short"] == "original"}
    for row in rows:
        original = originals[row["model"]]
        row["speedup"] = round(original["latency_ms"] / row["latency_ms"], 3)
        row["gzip_ratio"] = round(original["gzip_bytes"] / row["gzip_bytes"], 2)
        row["drop_points"] = round(100 * (original["litert_accuracy"] - row["litert_accuracy"]), 2)
    return rows


def equal_accuracy_verdicts(rows: Sequence[Mapping[str, Any]], max_drop: float,
                            sides: tuple[str, str] = ("tfcompress", "tfmot")) -> list[dict[str, Any]]:
    """Per model and per cost (``latency_ms``, ``gzip_bytes``): each side's cheapest variant among those within
    ``max_drop`` points of the original (equal fine-tune budget only), the winner and the factor it wins by.

    A latency factor under 1 + :data:`LATENCY_NOISE` is a tie; equal sizes are a tie.
    """
    verdicts = []
    for model in dict.fromkeys(row["model"] for row in rows):
        eligible = [row for row in rows if row["model"] == model and row["side"] in sides and row["equal_budget"]
                    and row["drop_points"] <= max_drop]
        for cost, unit in (("latency_ms", "ms"), ("gzip_bytes", "bytes gzip")):
            best = {side: min((row for row in eligible if row["side"] == side), key=lambda row: row[cost],
                              default=None) for side in sides}
            verdict: dict[str, Any] = {"model": model, "cost": cost, "max_drop": max_drop,
                                       **{side: _brief(best[side], cost) for side in sides}}
            present = [side for side in sides if best[side] is not None]
            if len(present) < 2:
                verdict.update(winner=present[0] if present else None, factor=None)
                verdict["text"] = (f"{model}: only {present[0]} has variants within {max_drop:g} point(s) of the "
                                   f"original; its {'fastest' if cost == 'latency_ms' else 'smallest'}: "
                                   f"{_describe(best[present[0]], cost, unit)}"
                                   if present else f"{model}: no variant of either side stays within {max_drop:g} "
                                   "point(s) of the original")
            else:
                low, high = sorted(sides, key=lambda side: best[side][cost])
                factor = best[high][cost] / best[low][cost]
                tie = factor < 1 + LATENCY_NOISE if cost == "latency_ms" else factor == 1
                verdict.update(winner=None if tie else low, factor=round(factor, 2))
                what = "fastest" if cost == "latency_ms" else "smallest"
                head = (f"{model}, {what} within {max_drop:g} point(s) of the original: "
                        + ("a tie" if tie else f"**{low}** by {factor:.2f}×"))
                verdict["text"] = (f"{head} — {low}: {_describe(best[low], cost, unit)}; "
                                   f"{high}: {_describe(best[high], cost, unit)}")
            verdicts.append(verdict)
    return verdicts


def _brief(row: Mapping[str, Any] | None, cost: str) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"variant": row["variant"], cost: row[cost], "drop_points": row["drop_points"]}


def _describe(row: Mapping[str, Any], cost: str, unit: str) -> str:
    value = f"{row[cost]:.3f}" if cost == "latency_ms" else f"{row[cost]:,}"
    return f"{row['variant']} ({row['precision']}), {value} {unit}, {row['drop_points']:+.2f} points"


# ---------------------------------------------------------------------------------------------- output

COLUMNS = [
    ("side", "side"), ("variant", "variant"), ("precision", "precision"), ("keras_accuracy", "Keras acc."),
    ("litert_accuracy", "LiteRT acc."), ("drop_points", "points lost"), ("latency_ms", "latency ms"),
    ("speedup_ratio", "speed-up"), ("params", "params"), ("nonzero_params", "non-zero"), ("tflite_kb", "tflite KB"),
    ("gzip_kb", "gzip KB"), ("gzip_ratio", "gzip ×"),
]


def write(report: dict[str, Any]) -> None:
    from tfcompress import files, plots
    from tfcompress import report as tables

    out = Path(FLAGS.output_dir)
    files.write_json(out / "baselines.json", report)
    fp, versions, budget = report["fingerprint"], report["versions"], report["budget"]
    lines = [
        "# tfcompress vs tensorflow-model-optimization (Fashion-MNIST)", "",
        f"Command: `{report['command']}` ({report['minutes']} min).  ",
        f"Host: {fp.get('cpu')}, {fp.get('cores')} cores ({fp.get('machine')}), ISA "
        f"{'/'.join(fp.get('isa') or []) or '?'}; {fp.get('runtime')} {fp.get('runtime_version')}, 1 thread, device "
        f"{fp.get('device')}. TensorFlow {versions['tensorflow']}, Keras {versions['keras']}, tf_keras "
        f"{versions.get('tf_keras')}, tensorflow-model-optimization {versions.get('tensorflow_model_optimization')}."
        "  ",
        f"Fine-tune budget, both sides: {budget['finetune_epochs']} epoch(s) of {budget['train_images']:,} images "
        f"(augmented), SGD Nesterov 0.9, cosine from {budget['lr']:g}, weight decay 5e-4 on kernels; EC2T trains "
        "the same epochs with its reference optimizer; tfmot reaches its sparsity at "
        f"{report['flags'].get('pruning_end_fraction', 0.75):g} of the fine-tune (PolynomialDecay). int8: 256 "
        "calibration images, float input and output. Accuracy: LiteRT on "
        f"{budget['test_images']:,} test images. Latency: every file in one session, median of 3 interleaved passes "
        f"× {report['flags'].get('runs')} runs; speed-up and gzip × against the model's float32 original.", "",
    ]
    for model, parity in report["parity"].items():
        lines.append(f"- {model}: tf_keras rebuild outputs within {parity['max_abs_diff']:.2g} of Keras 3 "
                     f"(tolerance {parity['tolerance']:g}, {parity['examples']} test images).")
    for model in dict.fromkeys(row["model"] for row in report["rows"]):
        rows = [{**row, "tflite_kb": round(row["tflite_bytes"] / 1024), "gzip_kb": round(row["gzip_bytes"] / 1024),
                 "speedup_ratio": row["speedup"], "drop_points": f"{row['drop_points']:+.2f}"}
                for row in report["rows"] if row["model"] == model]
        lines += ["", f"## {model}", "", tables.markdown_table(rows, COLUMNS)]
        plots.accuracy_vs_latency(
            rows, out / f"baselines_{model}.png", y="litert_accuracy", label="short", group="side",
            title=f"{model} / Fashion-MNIST: tfcompress vs tfmot, same fine-tune budget",
            xlabel=f"latency, ms ({fp.get('device')}, 1 thread, one session)", ylabel="LiteRT top-1 accuracy, %")
    lines += ["", f"## At equal accuracy (≤ {FLAGS.max_drop:g} point lost, equal fine-tune budget)", "",
              *[f"- {verdict['text']}" for verdict in report["verdicts"]], ""]
    if any(not row["equal_budget"] for row in report["rows"]):
        lines += ["Budget-mode rows come from `benchmarks/compress.py` with their own (larger) fine-tune budget; "
                  "they are shown, not counted in the verdicts.", ""]
    files.write_text(out / "baselines.md", "\n".join(lines))
    print("\n".join(lines))


def _own_flags() -> dict[str, Any]:
    module = sys.argv[0] if __name__ == "__main__" else __name__
    return {flag.name: flag.value for flag in FLAGS.get_flags_for_module(module)}


if __name__ == "__main__":
    app.run(main)
