"""Pruning as architecture search: does any method beat uniform width pruning, or a grid of small networks?

    python benchmarks/architecture_search.py     # writes benchmarks/results/architecture_search.{md,json,png}

The NetAdapt thesis (REFERENCE.md §1.4–1.7) pruned WRN-40-2 on CIFAR-10 for a Raspberry Pi 3B with NetAdapt,
Fisher pruning and MorphNet, retrained every found architecture from scratch, and found that **none beat uniform
width pruning, and that grid-searched smaller networks were better still**; whether that holds for other
architectures, hardware and data was left open. This program asks the same question on Fashion-MNIST (32×32)
and this host's ``--device``:

1. The ``--reference`` network (a tfcompress.zoo name, ResNet-20 by default) is trained from scratch for
   ``--reference_epochs``; its float32 latency is measured (the budgets' unit) and the device's latency table is
   built for it once (kept in ``--work_dir``).
2. At each of ``--budgets`` (fractions of that measured latency):

   a. **grid** — the ``--grid`` of base architectures from the zoo (WRN depth/width, ResNet depth, MobileNetV2
      width, ShuffleNetV2, EffNet) is measured next to the reference; those within the largest budget are trained;
   b. **uniform** width pruning of the reference, the same fraction from every channel group rounded up to
      ``--channel_multiple`` (as width multipliers are), to the budget as the table predicts it;
   c. **MorphNet** (latency cost from the table, group lasso, threshold 1e-3) on the trained reference, its
      strength searched (``--morphnet_trials`` runs of ``--morphnet_epochs`` × ``--morphnet_train_limit`` images,
      SGD without momentum; geometric bisection from the thesis's 5e-8 scaled to the same accumulated push as its
      200 epochs) until the alive channels' predicted latency is within ``--morphnet_window`` below the budget.
      When no trial lands there, the threshold of the nearest one is moved until it does, and the report says so;
   d. **NetAdapt** (l2, holdout-scored candidates) to the budget;
   e. **latency-aware Fisher** pruning to the budget;

   and every architecture found by (b)–(e) is applied to a fresh initialization of the reference (its plan, then
   re-initialized so every layer has its own fan-in's scale) and **trained from scratch for exactly the grid
   models' budget**: ``--epochs`` × ``--train_limit`` images, SGD Nesterov, cosine from ``--lr``, weight decay
   5e-4, augmentation.
3. **MorphNet to a FLOPs target** (``--morphnet_flops_target``, FLOP cost as morph-net's): the strength searched
   until the alive channels keep the target ± ``--morphnet_flops_tolerance`` of the reference's FLOPs, shrunk,
   retrained the same way; reported: FLOPs kept and points lost against the reference.
4. Every final model is exported to float32 ``.tflite``, evaluated in LiteRT on the test set (``--test_limit``)
   and all are timed together in **one interleaved session** (median of 3 passes × ``--runs``, 1 thread), so the
   latencies compare as ratios. A model counts within a budget when its measured latency is at most the budget ×
   (1 + ``--budget_tolerance``). The verdict per budget (best model within it, uniform pruning, which method beats
   uniform by more than the test set's noise) is computed from the rows.

Everything slow is cached in ``--work_dir`` under a folder named after what produced it (architecture, budget
and the flags it depends on): a killed run resumes, a run with other settings starts those parts afresh.
The reference's first latency measurement and the grid's measurement are cached too, so targets do not move when
a run resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
DATASET = "fashion_mnist"
IMAGE_SIZE = 32
PRUNING_METHODS = ("uniform", "morphnet", "netadapt", "fisher")
METHOD_NAMES = {"reference": "reference", "grid": "grid", "uniform": "uniform width pruning", "morphnet": "MorphNet",
                "netadapt": "NetAdapt", "fisher": "Fisher (latency-aware)", "morphnet_flops": "MorphNet (FLOPs)"}
# The search methods the thesis compared against uniform pruning (the grid is the other alternative it tried).
THESIS_PRUNERS = ("morphnet", "netadapt", "fisher")
# A short MorphNet trial starts at the thesis's strength × morphnet.THESIS_REGULARIZED_IMAGES / its own images (the
# same accumulated push): on ResNet-20 / Fashion-MNIST, 2 epochs × 5,400 images at 4.6e-5 kept 61 % of the FLOPs, ÷4
# kept everything.
# Around 0.3× and 0.5× of ResNet-20 on a 2-core x86 host (LiteRT, 1 thread): the thesis's families, smaller.
DEFAULT_GRID = [
    "resnet8", "resnet14", "wrn-10-1", "wrn-16-1",
    "mobilenet_v1:width_multiplier=0.25", "mobilenet_v1:width_multiplier=0.5",
    "mobilenet_v2:width_multiplier=0.25", "mobilenet_v2:width_multiplier=0.35",
    "shufflenetv2_d12_w32", "shufflenetv2_d12_w48", "effnet_w32_e2", "effnet_w32_e4",
]

FLAGS = flags.FLAGS
flags.DEFINE_string("reference", "resnet20", "The reference network (tfcompress.zoo name), trained from scratch.")
flags.DEFINE_integer("reference_epochs", None, "Epochs of the reference (default: --epochs).", lower_bound=1)
flags.DEFINE_list("budgets", ["0.5", "0.3"], "Latency budgets: fractions of the reference's measured latency.")
flags.DEFINE_list("grid", DEFAULT_GRID, "Base architectures: zoo names, builder arguments after colons "
                  "(mobilenet_v2:width_multiplier=0.5); those within the largest budget are trained.")
flags.DEFINE_list("methods", list(PRUNING_METHODS), "Pruning methods to run at every budget.")
flags.DEFINE_integer("epochs", 10, "Training epochs of every model trained from scratch.", lower_bound=1)
flags.DEFINE_integer("train_limit", 0, "Training images per epoch (0: all 54,000 after the holdout).",
                     lower_bound=0)
flags.DEFINE_integer("test_limit", 0, "Test images for every accuracy (0: all 10,000).", lower_bound=0)
flags.DEFINE_integer("batch_size", 128, "Batch size (training, pruning).", lower_bound=1)
flags.DEFINE_float("lr", 0.1, "Initial learning rate of the from-scratch training (cosine to 0).", lower_bound=0.0)
flags.register_validator("lr", lambda lr: lr > 0, "--lr must be > 0")
flags.DEFINE_float("holdout_fraction", 0.1, "Training split held out for NetAdapt's comparisons (never trained on).")
flags.DEFINE_integer("holdout_limit", 1000, "NetAdapt compares candidates on this many holdout images.",
                     lower_bound=1)
flags.DEFINE_integer("short_term_steps", 20, "NetAdapt fine-tune batches per candidate (thesis: 100).",
                     lower_bound=1)
flags.DEFINE_float("init_red_fact", 10.0, "NetAdapt: first saving target = (1 − budget)·latency / this (thesis 20).",
                   lower_bound=1.0)
flags.DEFINE_float("decay_rate", 0.98, "NetAdapt: saving target decay per iteration.")
flags.DEFINE_integer("fisher_prune_every", 10, "Fisher: training steps between prunes (thesis: 100).", lower_bound=1)
flags.DEFINE_integer("fisher_channels_per_prune", 4, "Fisher: channels masked per prune (thesis: 1).", lower_bound=1)
flags.DEFINE_integer("morphnet_epochs", 1, "MorphNet: regularized training epochs per strength trial.",
                     lower_bound=1)
flags.DEFINE_integer("morphnet_train_limit", 16384, "MorphNet: training images per trial epoch (0: as "
                     "--train_limit).", lower_bound=0)
flags.DEFINE_float("morphnet_lr", 0.05, "MorphNet: SGD without momentum, cosine from this (momentum leaves the group "
                   "lasso values oscillating above the threshold).", lower_bound=0.0)
flags.DEFINE_integer("morphnet_trials", 4, "MorphNet: strength trials per target at most.", lower_bound=1)
flags.DEFINE_float("morphnet_window", 0.1, "MorphNet latency target: a trial lands when its predicted latency is in "
                   "[budget·(1 − window), budget].", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("morphnet_threshold", 1e-3, "MorphNet: alive-channel threshold (the thesis's 1e-3).",
                   lower_bound=0.0)
flags.DEFINE_float("morphnet_flops_target", 0.5, "MorphNet (FLOPs) on the reference: FLOPs fraction to keep "
                   "(0: skip).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("morphnet_flops_tolerance", 0.05, "MorphNet (FLOPs): accepted ± around the target.",
                   lower_bound=0.0)
flags.DEFINE_float("max_flops_drop", 1.5, "MorphNet (FLOPs): accuracy loss target, points.", lower_bound=0.0)
flags.DEFINE_integer("channel_multiple", 8, "Uniform width pruning rounds every kept count up to a multiple of "
                     "this, as width multipliers do (MobileNet's make_divisible; the table's grid step).",
                     lower_bound=1)
flags.DEFINE_float("budget_tolerance", 0.05, "A model is within a budget when measured ≤ budget × (1 + this).",
                   lower_bound=0.0)
flags.DEFINE_string("device", "litert", "Device (see tfcompress.latency.DEVICE_HELP).")
flags.DEFINE_string("table", "", "The device's float32 table for the reference (default: in --work_dir; built "
                    "there when missing).")
flags.DEFINE_integer("runs", 100, "Timed inferences per file per pass (3 interleaved passes).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of every initialization and data order.")
flags.DEFINE_string("work_dir", "/tmp/tfcompress-benchmark-architecture-search",
                    "Trained models, plans, tables and measurements (resumable).")
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where the .md, .json and .png go.")


def _fractions(values: Sequence[str]) -> bool:
    try:
        return bool(values) and all(0.0 < float(value) < 1.0 for value in values)
    except ValueError:
        return False


def _grid_entries(values: Sequence[str]) -> bool:
    try:
        for value in values:
            parse_grid_entry(value)
    except ValueError:
        return False
    return True


flags.register_validator("budgets", _fractions, "--budgets are numbers in (0, 1): fractions of the reference latency")
flags.register_validator("methods", lambda values: set(values) <= set(PRUNING_METHODS),
                         f"--methods are among {', '.join(PRUNING_METHODS)}")
flags.register_validator("grid", _grid_entries, "--grid entries are NAME or NAME:KEY=VALUE[:KEY=VALUE], e.g. "
                         "mobilenet_v2:width_multiplier=0.5")
flags.register_validator("decay_rate", lambda value: 0.0 < value <= 1.0, "--decay_rate is in (0, 1]")
flags.register_validator("holdout_fraction", lambda value: 0.0 < value < 1.0, "--holdout_fraction is in (0, 1)")


# ------------------------------------------------------------------------------------------------- pure logic


def parse_grid_entry(entry: str) -> tuple[str, dict[str, Any]]:
    """``"mobilenet_v2:width_multiplier=0.5"`` → ``("mobilenet_v2", {"width_multiplier": 0.5})``; numbers are
    parsed as int or float, anything else stays a string.

    Raises:
        ValueError: an empty name or an argument without ``=``.
    """
    name, *arguments = entry.strip().split(":")
    if not name:
        raise ValueError(f"grid entry {entry!r} has no model name")
    kwargs: dict[str, Any] = {}
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if not equals or not key:
            raise ValueError(f"grid entry {entry!r}: {argument!r} is not KEY=VALUE")
        for kind in (int, float):
            try:
                kwargs[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = value
    return name, kwargs


def cache_key(name: str, settings: Mapping[str, Any]) -> str:
    """A folder name for what ``settings`` produce: ``name`` made path-safe, then a digest of the settings (key
    order does not matter; another value of any setting gives another folder)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9.=]+', '_', name).strip('_')}-{digest}"


def within_budget(fraction: float | None, budget: float, tolerance: float) -> bool:
    """Whether a measured latency ``fraction`` of the reference fits ``budget`` (with a relative ``tolerance``)."""
    return fraction is not None and fraction <= budget * (1.0 + tolerance) + 1e-12


def noise_points(accuracy_a: float, accuracy_b: float, examples: int) -> float:
    """Two standard errors of the difference of two accuracies on the same ``examples`` test images (binomial,
    independent), in points: differences below it are within the test set's noise."""
    variance = (accuracy_a * (1 - accuracy_a) + accuracy_b * (1 - accuracy_b)) / max(1, examples)
    return 100 * 2 * math.sqrt(variance)


def budget_verdict(rows: Sequence[Mapping[str, Any]], budget: float, tolerance: float) -> dict[str, Any]:
    """The answer at one budget, from the final rows (``method``, ``budget``, ``label``, ``fraction`` measured,
    ``accuracy``, ``test_images``): the best model within it, uniform pruning's accuracy, and which methods beat
    uniform by more than the test set's noise (:func:`noise_points`).

    Candidates: grid models whose measured fraction fits the budget and the pruning methods' models made for this
    budget that fit it; a method's model made for this budget that does not fit is listed as over the budget.
    """
    made_here = [r for r in rows if r["method"] in PRUNING_METHODS and r.get("budget") == budget]
    grid = [r for r in rows if r["method"] == "grid"]
    candidates = [r for r in [*grid, *made_here] if within_budget(r.get("fraction"), budget, tolerance)]
    over = [r for r in made_here if not within_budget(r.get("fraction"), budget, tolerance)]
    verdict: dict[str, Any] = {"budget": budget, "limit_fraction": budget * (1 + tolerance),
                               "candidates": len(candidates), "over_budget": [r["label"] for r in over]}
    if not candidates:
        verdict.update(best=None, uniform=None, beats_uniform=[], thesis_holds=None,
                       text=f"At {budget:g}×: no model is within the budget.")
        return verdict
    best = max(candidates, key=lambda r: (r["accuracy"], -r["fraction"]))
    uniform = next((r for r in candidates if r["method"] == "uniform"), None)
    verdict["best"] = {k: best[k] for k in ("method", "label", "accuracy", "fraction")}
    head = (f"At {budget:g}× (measured ≤ {budget * (1 + tolerance):.3g}× the reference): the best within the budget "
            f"is **{best['label']}** ({100 * best['accuracy']:.2f} %, {best['fraction']:.2f}×)")
    if uniform is None:
        verdict.update(uniform=None, beats_uniform=[], thesis_holds=None)
        verdict["text"] = head + "; uniform width pruning has no model within the budget, so nothing is compared to it."
        return verdict
    verdict["uniform"] = {k: uniform[k] for k in ("label", "accuracy", "fraction")}
    comparisons, beats, ties, worse = [], [], [], []
    for row in sorted(candidates, key=lambda r: -r["accuracy"]):
        if row is uniform:
            continue
        delta = 100 * (row["accuracy"] - uniform["accuracy"])
        noise = noise_points(row["accuracy"], uniform["accuracy"], min(row["test_images"], uniform["test_images"]))
        entry = {"label": row["label"], "method": row["method"], "delta_points": round(delta, 2),
                 "noise_points": round(noise, 2)}
        comparisons.append(entry)
        (beats if delta > noise else worse if delta < -noise else ties).append(entry)
    pruners_beat = [e for e in beats if e["method"] in THESIS_PRUNERS]
    grid_beats = [e for e in beats if e["method"] == "grid"]
    verdict.update(comparisons=comparisons, beats_uniform=[e["label"] for e in beats],
                   thesis_holds=not pruners_beat, grid_beats_uniform=bool(grid_beats))

    def listed(entries: list[dict[str, Any]]) -> str:
        return ", ".join(f"{e['label']} ({e['delta_points']:+.2f})" for e in entries) or "none"

    if best is uniform:
        head += " — uniform width pruning itself"
    else:
        head += (f"; uniform width pruning reaches {100 * uniform['accuracy']:.2f} % ({uniform['fraction']:.2f}×), "
                 f"{100 * (best['accuracy'] - uniform['accuracy']):+.2f} points from the best")
    noise = max((e["noise_points"] for e in comparisons), default=0.0)
    text = [head + ".",
            f"Better than uniform by more than the test-set noise (up to ±{noise:.2f} points): {listed(beats)}.",
            f"Within the noise: {listed(ties)}. Worse: {listed(worse)}."]
    if over:
        text.append("Over the budget when measured (not counted): "
                    + ", ".join(f"{r['label']} ({r['fraction']:.2f}×)" for r in over) + ".")
    if pruners_beat:
        text.append(f"The thesis's finding does **not** hold at {budget:g}×: {listed(pruners_beat)} beat uniform "
                    "width pruning.")
    else:
        text.append(f"The thesis's finding holds at {budget:g}×: no pruning method (MorphNet, NetAdapt, Fisher) beats "
                    "uniform width pruning"
                    + ("; a grid architecture does." if grid_beats else "; nor does any grid architecture."))
    verdict["text"] = " ".join(text)
    return verdict


def overall_answer(verdicts: Sequence[Mapping[str, Any]]) -> str:
    """One sentence over the budgets: where the thesis's finding holds, where it does not, where nothing answers."""
    holds = [f"{v['budget']:g}×" for v in verdicts if v.get("thesis_holds") is True]
    fails = [f"{v['budget']:g}×" for v in verdicts if v.get("thesis_holds") is False]
    open_ = [f"{v['budget']:g}×" for v in verdicts if v.get("thesis_holds") is None]
    grid = [f"{v['budget']:g}×" for v in verdicts if v.get("grid_beats_uniform")]
    parts = []
    if holds:
        parts.append(f"no pruning method beats uniform width pruning at {', '.join(holds)}")
    if fails:
        parts.append(f"a pruning method beats it at {', '.join(fails)}")
    if open_:
        parts.append(f"no comparison at {', '.join(open_)} (uniform pruning missing or over the budget)")
    parts.append(f"a grid architecture beats it at {', '.join(grid)}" if grid else "no grid architecture beats it")
    verdict = "holds" if holds and not fails and not open_ else "does not hold" if fails and not holds else "is mixed"
    return (f"On this data and host the thesis's finding {verdict}: " + "; ".join(parts)
            + " (one training seed; differences within 2 standard errors of the test set are called ties).")


# ------------------------------------------------------------------------------------------------- the run


class Run:
    """The shared state of one run: data, device, table, the trained reference, the work folder."""

    def __init__(self) -> None:
        import keras

        import tfcompress as tfc

        self.tfc, self.keras = tfc, keras
        self.work = Path(FLAGS.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.input_shape = tfc.data.input_shape(DATASET, IMAGE_SIZE)
        options = {"image_size": IMAGE_SIZE, "batch_size": FLAGS.batch_size,
                   "holdout_fraction": FLAGS.holdout_fraction}
        self.train = tfc.data.load(DATASET, "train", augment=True, seed=FLAGS.seed, limit=FLAGS.train_limit or None,
                                   **options)
        # MorphNet's strength trials see fewer images per epoch than the from-scratch training
        self.morphnet_limit = min([v for v in (FLAGS.train_limit, FLAGS.morphnet_train_limit) if v], default=None)
        self.morphnet_train = tfc.data.load(DATASET, "train", augment=True, seed=FLAGS.seed,
                                            limit=self.morphnet_limit, **options)
        self.holdout = tfc.data.load(DATASET, "holdout", **options).unbatch().take(FLAGS.holdout_limit).batch(256)
        self.test = tfc.data.load(DATASET, "test", image_size=IMAGE_SIZE, batch_size=256,
                                  limit=FLAGS.test_limit or None)
        self.device = tfc.latency.open_device(FLAGS.device)
        self.fingerprint = self.device.fingerprint(1)
        self.training = {"epochs": FLAGS.epochs, "train_limit": FLAGS.train_limit, "batch_size": FLAGS.batch_size,
                         "lr": FLAGS.lr, "holdout_fraction": FLAGS.holdout_fraction, "seed": FLAGS.seed,
                         "weight_decay": 5e-4, "schedule": "cosine", "augment": True, "dataset": DATASET,
                         "image_size": IMAGE_SIZE}
        self.stage_seconds: dict[str, float] = {}

    # -------------------------------------------------------------------------------------------- models

    def build(self, name: str, kwargs: Mapping[str, Any] | None = None) -> Any:
        self.keras.utils.set_random_seed(FLAGS.seed)
        return self.tfc.zoo.build(name, self.input_shape, 10, **dict(kwargs or {}))

    def fresh_from_plan(self, plan: Mapping[str, Any]) -> Any:
        """The reference architecture pruned to ``plan``, re-initialized: ``apply_plan`` slices a fresh init, and a
        clone gives every layer an initialization of its own (pruned) fan-in, as a network designed that narrow."""
        pruned = self.tfc.pruning.apply_plan(self.build(FLAGS.reference), plan)
        self.keras.utils.set_random_seed(FLAGS.seed)
        return self.keras.models.clone_model(pruned)

    def trained(self, label: str, make: Callable[[], Any], settings: Mapping[str, Any], epochs: int | None = None
                ) -> tuple[Any, dict[str, Any], Path]:
        """``make()`` (a fresh model) trained from scratch with the shared budget, or read back from the work dir;
        returns the model, its row (Keras and LiteRT accuracy, params, MACs, training seconds) and its folder."""
        tfc = self.tfc
        epochs = epochs or FLAGS.epochs
        key = {**settings, **self.training, "epochs": epochs, "test_limit": FLAGS.test_limit}
        folder = self.work / "trained" / cache_key(label, key)
        if (folder / "row.json").is_file():
            print(f"{label}: read back from {folder}", flush=True)
            return (tfc.export.load_keras_model(folder / "model.keras"), json.loads((folder / "row.json").read_text()),
                    folder)
        model = make()
        steps = epochs * int(self.train.cardinality())
        print(f"{label}: training from scratch, {epochs} epoch(s), {model.count_params():,} params", flush=True)
        self.keras.utils.set_random_seed(FLAGS.seed)
        tfc.training.compile_classifier(model, tfc.training.sgd(FLAGS.lr, steps, "cosine"))
        begin = time.monotonic()
        model.fit(self.train, epochs=epochs, verbose=2)
        seconds = time.monotonic() - begin
        tfc.training.check_finite(model, label)
        tfc.files.save_model(model, folder / "model.keras")
        tfc.export.to_tflite(model, "float32", output=folder / "model.tflite")
        row = {"label": label, "params": model.count_params(),
               "macs": tfc.graph.ChannelGraph(model).cost(metric="macs"),
               "keras_accuracy": tfc.training.evaluate(model, self.test)["accuracy"],
               **self._litert_accuracy(folder / "model.tflite"), "retrain_s": round(seconds, 1),
               "train_images": epochs * self._train_images(), "settings": key}
        tfc.files.write_json(folder / "row.json", row)  # last: its presence says the folder is complete
        return model, row, folder

    def _litert_accuracy(self, path: Path) -> dict[str, Any]:
        result = self.tfc.runtime.evaluate_tflite(path, self.test, progress=False)
        return {"accuracy": result["accuracy"], "test_images": result["examples"]}

    def _train_images(self, limit: int = 0) -> int:
        """Images per epoch: the training split minus the holdout, or ``limit`` (default ``--train_limit``)."""
        _, labels = self.tfc.data.load_arrays(DATASET, "train")
        train, _ = self.tfc.data.stratified_holdout(labels, FLAGS.holdout_fraction)
        return min(len(train), limit or FLAGS.train_limit or len(train))

    def predicted_ms(self, model: Any) -> float | None:
        try:
            return self.table.predict(model).total_us / 1000
        except self.tfc.latency.TableError:  # another architecture than the table's
            return None

    # ------------------------------------------------------------------------------------------- latency

    def measure_once(self, name: str, models: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, float]:
        """ms per model in one interleaved session, kept in the work dir: a resumed run keeps its targets."""
        path = self.work / "measurements" / f"{cache_key(name, {**settings, 'device': self.fingerprint})}.json"
        if path.is_file():
            return json.loads(path.read_text())["ms"]
        folder = path.with_suffix("")
        paths = []
        for index, model in enumerate(models.values()):
            paths.append(folder / f"{index}.tflite")
            self.tfc.export.to_tflite(model, "float32", output=paths[-1])
        measured = self.device.side_by_side(paths, threads=1, runs=FLAGS.runs)
        ms = dict(zip(models, measured, strict=True))
        self.tfc.files.write_json(path, {"ms": ms, "runs": FLAGS.runs, "fingerprint": self.fingerprint})
        return ms


def _timed(run: Run, stage: str, work: Callable[[], Any]) -> Any:
    begin = time.monotonic()
    try:
        return work()
    finally:
        run.stage_seconds[stage] = round(run.stage_seconds.get(stage, 0.0) + time.monotonic() - begin, 1)


def main(argv: list[str]) -> None:
    del argv
    from tfcompress import plots

    plots.require_matplotlib()
    started = time.monotonic()
    run = Run()
    tfc = run.tfc
    budgets = sorted({float(b) for b in FLAGS.budgets}, reverse=True)

    # 1. the reference, trained; its latency measured once; the device's table for it
    reference_epochs = FLAGS.reference_epochs or FLAGS.epochs
    reference, reference_row, reference_folder = _timed(run, "train reference", lambda: run.trained(
        FLAGS.reference, lambda: run.build(FLAGS.reference), {"architecture": FLAGS.reference},
        epochs=reference_epochs))
    reference_key = reference_row["settings"]
    reference_ms = run.measure_once("reference", {"reference": reference}, reference_key)["reference"]
    table_path = Path(FLAGS.table) if FLAGS.table else run.work / f"table-{FLAGS.reference}.npz"
    run.table = _timed(run, "latency table", lambda: tfc.latency.load_or_build_table(
        reference, run.device, table_path, "float32"))
    reference_predicted = run.predicted_ms(reference)
    print(f"reference {FLAGS.reference}: {100 * reference_row['accuracy']:.2f} % (LiteRT), measured "
          f"{reference_ms:.3f} ms, predicted {reference_predicted:.3f} ms; budgets "
          + ", ".join(f"{b:g}× = {b * reference_ms:.3f} ms" for b in budgets), flush=True)
    finals: list[dict[str, Any]] = [{"method": "reference", "budget": None, "label": FLAGS.reference,
                                     "folder": str(reference_folder), **reference_row}]
    failures: list[dict[str, Any]] = []

    # 2a. the grid: measured next to the reference (untrained: float32 latency does not depend on the weights)
    grid = {entry: parse_grid_entry(entry) for entry in FLAGS.grid}
    grid_ms = run.measure_once("grid", {"reference": run.build(FLAGS.reference),
                                        **{entry: run.build(*spec) for entry, spec in grid.items()}},
                               {"grid": sorted(grid), "reference": FLAGS.reference, "runs": FLAGS.runs})
    grid_fractions = {entry: grid_ms[entry] / grid_ms["reference"] for entry in grid}
    largest = max(budgets)
    for entry, (name, kwargs) in grid.items():
        fraction = grid_fractions[entry]
        if not within_budget(fraction, largest, FLAGS.budget_tolerance):
            print(f"grid {entry}: {fraction:.2f}× the reference, over every budget: not trained", flush=True)
            continue
        try:
            _, row, folder = _timed(run, "train grid", lambda name=name, kwargs=kwargs, entry=entry: run.trained(
                entry, lambda: run.build(name, kwargs), {"architecture": entry}))
        except ValueError as error:  # a builder refusing its arguments
            failures.append({"method": "grid", "label": entry, "error": str(error)})
            continue
        finals.append({"method": "grid", "budget": None, "label": entry, "folder": str(folder),
                       "grid_fraction": fraction, **row})

    # 2b–e. each pruning method at each budget: its plan, then the architecture trained from scratch
    morphnet_trials: list[dict[str, Any]] = []
    for budget in budgets:
        target_ms = budget * reference_ms
        for method in FLAGS.methods:
            label = f"{METHOD_NAMES[method]} {budget:g}×"
            try:
                plan, search = _timed(run, f"search {method}", lambda method=method, budget=budget, target_ms=target_ms:
                                      find_plan(run, reference, reference_key, method, budget, target_ms,
                                                morphnet_trials))
            except ValueError as error:  # a method that cannot reach the budget says why; the others go on
                print(f"{label}: {error}", flush=True)
                failures.append({"method": method, "budget": budget, "label": label, "error": str(error)})
                continue
            model, row, folder = _timed(run, f"train {method}", lambda label=label, plan=plan, search=search:
                                        run.trained(label, lambda: run.fresh_from_plan(plan),
                                                    {"architecture": FLAGS.reference, "plan": search["plan_digest"]}))
            finals.append({"method": method, "budget": budget, "label": label, "folder": str(folder),
                           "predicted_ms": run.predicted_ms(model), "search": search, **row})

    # 3. MorphNet to a FLOPs target on the reference
    flops_result = None
    if FLAGS.morphnet_flops_target:
        target = FLAGS.morphnet_flops_target
        label = f"MorphNet (FLOPs) {target:g}"
        try:
            plan, search = _timed(run, "search morphnet_flops", lambda: morphnet_plan(
                run, reference, reference_key, "flops", target - FLAGS.morphnet_flops_tolerance,
                target + FLAGS.morphnet_flops_tolerance, target, []))
            model, row, folder = _timed(run, "train morphnet_flops", lambda: run.trained(
                label, lambda: run.fresh_from_plan(plan),
                {"architecture": FLAGS.reference, "plan": search["plan_digest"]}))
            finals.append({"method": "morphnet_flops", "budget": None, "label": label, "folder": str(folder),
                           "predicted_ms": run.predicted_ms(model), "search": search, **row})
            flops_fraction = plan["macs_after"] / plan["macs_before"]
            drop = 100 * (reference_row["accuracy"] - row["accuracy"])
            flops_result = {"target": target, "tolerance": FLAGS.morphnet_flops_tolerance,
                            "flops_fraction": flops_fraction,
                            "within_tolerance": abs(flops_fraction - target) <= FLAGS.morphnet_flops_tolerance + 1e-9,
                            "drop_points": drop, "max_drop_points": FLAGS.max_flops_drop,
                            "drop_met": drop <= FLAGS.max_flops_drop, "strength": search["strength"],
                            "threshold": search["threshold"], "threshold_moved": search["threshold_moved"]}
        except ValueError as error:
            print(f"{label}: {error}", flush=True)
            failures.append({"method": "morphnet_flops", "label": label, "error": str(error)})

    # 4. every final model in one interleaved session
    paths = [Path(row["folder"]) / "model.tflite" for row in finals]
    measured = _timed(run, "final latency session", lambda: run.device.side_by_side(
        paths, threads=1, runs=FLAGS.runs))
    for row, ms in zip(finals, measured, strict=True):
        row["measured_ms"] = ms
        row["fraction"] = ms / measured[0]
    finals[0]["predicted_ms"] = reference_predicted
    rows = [{k: v for k, v in row.items() if k not in ("settings", "folder")} for row in finals]
    verdicts = [budget_verdict(rows, budget, FLAGS.budget_tolerance) for budget in budgets]
    report = {
        "command": " ".join(["python benchmarks/architecture_search.py", *sys.argv[1:]]),
        "argv": sys.argv, "fingerprint": run.fingerprint,
        "flags": {flag.name: flag.value for flag in FLAGS.get_flags_for_module(sys.argv[0])},
        "reference": {"name": FLAGS.reference, "first_measured_ms": reference_ms, "epochs": reference_epochs},
        "budgets": budgets, "train_images": reference_row["train_images"] // reference_epochs,
        "table": {"path": str(table_path), "build_seconds": run.table.meta.get("build_seconds")},
        "grid_first_fractions": grid_fractions, "rows": rows, "failures": failures,
        "morphnet_trials": morphnet_trials, "morphnet_flops": flops_result, "verdicts": verdicts,
        "answer": overall_answer(verdicts), "stage_seconds": run.stage_seconds,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    write(report)


def find_plan(run: Run, reference: Any, reference_key: Mapping[str, Any], method: str, budget: float,
              target_ms: float, morphnet_trials: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The plan (JSON form) of ``method`` at ``budget`` and what its search cost, cached per (method, budget, its
    flags)."""
    tfc = run.tfc
    if method == "morphnet":
        return morphnet_plan(run, reference, reference_key, "latency", target_ms * 1000 * (1 - FLAGS.morphnet_window),
                             target_ms * 1000, target_ms * 1000, morphnet_trials)
    settings = {"reference": reference_key, "method": method, "budget": budget, "target_ms": round(target_ms, 6),
                "table": str(run.table.meta.get("created"))}
    if method == "netadapt":
        settings.update(short_term_steps=FLAGS.short_term_steps, init_red_fact=FLAGS.init_red_fact,
                        decay_rate=FLAGS.decay_rate, holdout_limit=FLAGS.holdout_limit)
    elif method == "uniform":
        settings.update(channel_multiple=FLAGS.channel_multiple)
    elif method == "fisher":
        settings.update(prune_every=FLAGS.fisher_prune_every, channels_per_prune=FLAGS.fisher_channels_per_prune)
    folder = run.work / "plans" / cache_key(f"{method}-{budget:g}", settings)
    if (folder / "search.json").is_file():
        return json.loads((folder / "plan.json").read_text()), json.loads((folder / "search.json").read_text())
    target = f"{target_ms:.6f}ms"
    run.keras.utils.set_random_seed(FLAGS.seed)
    begin = time.monotonic()
    search: dict[str, Any] = {}
    if method == "uniform":
        result = tfc.pruning.prune_channels(reference, "uniform", cost_fn=run.table.cost_fn(reference),
                                            target_latency=target, channel_multiple=FLAGS.channel_multiple)
    elif method == "netadapt":
        result = tfc.pruning.netadapt.netadapt(
            reference, run.train, run.holdout, table=run.table, target_latency=target,
            short_term_steps=FLAGS.short_term_steps, init_red_fact=FLAGS.init_red_fact, decay_rate=FLAGS.decay_rate,
            state_dir=folder / "state", progress=print)
        candidates = sum(len(row["candidates"]) for row in result.history)
        search.update(iterations=len(result.history), candidates=candidates,
                      training_steps=(candidates + 1) * FLAGS.short_term_steps)
    elif method == "fisher":
        result = tfc.pruning.fisher.fisher_prune(
            reference, run.train, target_latency=target, table=run.table, prune_every=FLAGS.fisher_prune_every,
            channels_per_prune=FLAGS.fisher_channels_per_prune, progress=False)
        search.update(prunes=len(result.history), training_steps=result.history[-1]["step"] if result.history else 0)
    else:
        raise ValueError(f"unknown method {method!r}")
    plan = result.plan.to_dict()
    search.update(seconds=round(time.monotonic() - begin, 1), plan_digest=cache_key("plan", plan),
                  predicted_ms=run.table.predict(result.model).total_us / 1000, target_ms=target_ms)
    tfc.files.write_json(folder / "plan.json", plan)
    tfc.files.write_json(folder / "search.json", search)
    return plan, search


def morphnet_plan(run: Run, reference: Any, reference_key: Mapping[str, Any], cost: str, low: float, high: float,
                  target: float, shared_trials: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """MorphNet's plan whose cost (predicted µs, or the FLOPs fraction) lands in [``low``, ``high``]: strength
    trials (each ``--morphnet_epochs`` of regularized training from the trained reference, cached), then the
    threshold of the kept trial moved to ``target`` only when no trial landed in the band."""
    tfc = run.tfc
    from tfcompress.pruning import morphnet

    graph = tfc.graph.ChannelGraph(reference)
    table = run.table if cost == "latency" else None
    images = FLAGS.morphnet_epochs * run._train_images(run.morphnet_limit or 0)
    thesis = morphnet.MorphNetRegularizer(reference, cost=cost, table=table, graph=graph).strength
    start = thesis * morphnet.THESIS_REGULARIZED_IMAGES / images
    trials: list[dict[str, Any]] = []
    while len(trials) < FLAGS.morphnet_trials:
        strength = morphnet.next_strength([(t["strength"], t["cost"]) for t in trials], low, high, start)
        if strength is None:
            break
        trials.append(morphnet_trial(run, reference, reference_key, cost, strength))
        print(f"MorphNet ({cost}) strength {strength:.3g}: cost {trials[-1]['cost']:.4g} (band {low:.4g}–{high:.4g})",
              flush=True)
    chosen = morphnet.pick_trial(trials, low, high)
    trained = tfc.export.load_keras_model(Path(chosen["folder"]) / "model.keras")
    regularizer = morphnet.MorphNetRegularizer(trained, cost=cost, table=table, threshold=FLAGS.morphnet_threshold)
    cost_of = _cost_function(regularizer, cost, run.table)
    threshold, moved = FLAGS.morphnet_threshold, not low <= chosen["cost"] <= high
    if moved:  # no strength landed in the band: the kept trial's threshold decides, as close to the target as fits
        threshold = morphnet.threshold_for({g: v.tolist() for g, v in regularizer.values().items()}, cost_of, target)
        regularizer.threshold = threshold
    plan = regularizer.plan()
    counts = {g: int(m.sum()) for g, m in regularizer.masks().items()}
    plan_dict = tfc.pruning.channels.plan_for_model(plan, reference).to_dict()
    search = {"cost": cost, "strength": chosen["strength"], "threshold": threshold, "threshold_moved": moved,
              "cost_value": cost_of(counts), "band": [low, high], "trials": len(trials),
              "training_epochs": len(trials) * FLAGS.morphnet_epochs, "plan_digest": cache_key("plan", plan_dict),
              "seconds": round(sum(t["seconds"] for t in trials), 1)}
    if cost == "latency":
        search["predicted_ms"] = cost_of(counts) / 1000
    for trial in trials:
        if trial not in shared_trials:
            shared_trials.append(trial)
    return plan_dict, search


def _cost_function(regularizer: Any, cost: str, table: Any) -> Callable[[dict[int, int]], float]:
    from tfcompress.pruning import morphnet

    if cost == "latency":
        return lambda counts: regularizer.latency_fn(counts)
    return morphnet.fraction_kept(regularizer, "flops")


def morphnet_trial(run: Run, reference: Any, reference_key: Mapping[str, Any], cost: str, strength: float
                   ) -> dict[str, Any]:
    """One MorphNet strength: regularized training of the trained reference, cached with its alive-channel cost
    (predicted µs, or the FLOPs fraction kept) at ``--morphnet_threshold``."""
    tfc = run.tfc
    from tfcompress.pruning import morphnet

    settings = {"reference": reference_key, "cost": cost, "strength": f"{strength:.6g}",
                "epochs": FLAGS.morphnet_epochs, "train_limit": FLAGS.morphnet_train_limit,
                "lr": FLAGS.morphnet_lr, "threshold": FLAGS.morphnet_threshold,
                "table": str(run.table.meta.get("created")) if cost == "latency" else None}
    folder = run.work / "morphnet" / cache_key(f"{cost}-{strength:.3g}", settings)
    if (folder / "trial.json").is_file():
        return json.loads((folder / "trial.json").read_text())
    run.keras.utils.set_random_seed(FLAGS.seed)
    steps = FLAGS.morphnet_epochs * int(run.morphnet_train.cardinality())
    optimizer = tfc.training.sgd(FLAGS.morphnet_lr, steps, "cosine", momentum=0.0, nesterov=False)
    begin = time.monotonic()
    result = morphnet.morphnet_prune(reference, run.morphnet_train, cost=cost, strength=strength,
                                     threshold=FLAGS.morphnet_threshold, table=run.table if cost == "latency" else None,
                                     epochs=FLAGS.morphnet_epochs, optimizer=optimizer,
                                     callbacks=[tfc.training.StopOnNonFinite("MorphNet")])
    seconds = time.monotonic() - begin
    tfc.files.save_model(result.trained, folder / "model.keras")
    last = result.history[-1]
    value = last["latency_ms"] * 1000 if cost == "latency" else last["macs_left"]
    trial = {"cost_kind": cost, "strength": strength, "cost": value, "macs_left": last["macs_left"],
             "channels_left": last["channels_left"], "kept": last["kept"], "seconds": round(seconds, 1),
             "folder": str(folder)}
    tfc.files.write_json(folder / "trial.json", trial)
    return trial


# ------------------------------------------------------------------------------------------------- report

COLUMNS = ("method", "budget", "measured ms", "× reference", "predicted ms", "params", "MACs", "LiteRT acc.",
           "Δ vs reference", "retrain", "search")


def write(report: dict[str, Any]) -> None:
    from tfcompress import files

    out = Path(FLAGS.output_dir)
    files.write_json(out / "architecture_search.json", report)
    plot(report, out / "architecture_search.png")
    fp, rows = report["fingerprint"], report["rows"]
    reference = rows[0]
    test_images = reference["test_images"]
    lines = [
        "# Pruning as architecture search: uniform width vs MorphNet vs NetAdapt vs Fisher vs a grid of small networks",
        "",
        f"Command: `{report['command']}` ({report['minutes']} min).  ",
        f"Host: {fp.get('cpu')} ({fp.get('machine')}, {fp.get('cores')} cores; ISA "
        f"{'/'.join(fp.get('isa') or [])}), {fp.get('runtime')} {fp.get('runtime_version', '')}, device "
        f"`{fp.get('device')}`, 1 thread, float32.  ",
        f"Data: Fashion-MNIST 32×32; every model trained from scratch for the same budget: {FLAGS.epochs} epoch(s) × "
        f"{report['train_images']:,} images, SGD Nesterov 0.9, cosine from {FLAGS.lr}, weight decay 5e-4, "
        f"augmentation (the reference: {report['reference']['epochs']} epoch(s)). Accuracy: LiteRT on "
        f"{test_images:,} test images.  ",
        f"Latency: every `.tflite` in one session, median of 3 interleaved passes × {FLAGS.runs} runs; × reference "
        f"is within that session. Budgets: {', '.join(f'{b:g}×' for b in report['budgets'])} of the reference's "
        f"measured latency ({report['reference']['first_measured_ms']:.3f} ms when the targets were set), met when "
        f"measured ≤ budget × {1 + FLAGS.budget_tolerance:g}. Pruning methods aim at the budget as the latency "
        f"table predicts it (table built in {report['table']['build_seconds']} s).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        budget = f"{row['budget']:g}×" if row.get("budget") else "–"
        predicted = f"{row['predicted_ms']:.3f}" if row.get("predicted_ms") is not None else "–"
        search = row.get("search")
        lines.append(" | ".join([
            f"| {row_name(row)}", budget, f"{row['measured_ms']:.3f}", f"{row['fraction']:.2f}×", predicted,
            f"{row['params']:,}", f"{row['macs'] / 1e6:.2f} M", f"{100 * row['accuracy']:.2f} %",
            f"{100 * (row['accuracy'] - reference['accuracy']):+.2f}", f"{row['retrain_s'] / 60:.1f} min",
            f"{search['seconds'] / 60:.1f} min |" if search else "– |"]))
    lines += ["", "## The answer", "", *[f"- {verdict['text']}" for verdict in report["verdicts"]], "",
              f"**{report['answer']}**", ""]
    flops = report.get("morphnet_flops")
    if flops:
        lines += [f"MorphNet with the FLOP cost on {report['reference']['name']}: "
                  f"{100 * flops['flops_fraction']:.1f} % of the FLOPs kept (target {100 * flops['target']:.0f} ± "
                  f"{100 * flops['tolerance']:.0f} %: "
                  f"{'met' if flops['within_tolerance'] else '**missed**'}), "
                  f"{flops['drop_points']:+.2f} points lost against the reference (target ≤ "
                  f"{flops['max_drop_points']:g}: {'met' if flops['drop_met'] else '**missed**'}); strength "
                  f"{flops['strength']:.3g}, threshold {flops['threshold']:.3g}"
                  f"{' (moved: no strength trial landed in the band)' if flops['threshold_moved'] else ''}.", ""]
    searches = [row for row in rows if row.get("search")]
    if searches:
        lines += ["## Searches", ""]
        for row in searches:
            search = row["search"]
            details = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in search.items()
                                if k not in ("plan_digest", "band"))
            lines.append(f"- {row['label']}: {details}")
        lines.append("")
    if report["failures"]:
        lines += ["## Did not finish", "", *[f"- {f['label']}: {f['error']}" for f in report["failures"]], ""]
    skipped = {entry: fraction for entry, fraction in report["grid_first_fractions"].items()
               if not any(row["method"] == "grid" and row["label"] == entry for row in rows)}
    if skipped:
        lines += ["Grid architectures over every budget (not trained): "
                  + ", ".join(f"{entry} ({fraction:.2f}×)" for entry, fraction in skipped.items()) + ".", ""]
    lines += ["Stage times: " + ", ".join(f"{stage} {seconds / 60:.1f} min"
                                          for stage, seconds in report["stage_seconds"].items()) + ".", "",
              "![accuracy vs measured latency](architecture_search.png)", ""]
    files.write_text(out / "architecture_search.md", "\n".join(lines))
    print("\n".join(lines))


def row_name(row: Mapping[str, Any]) -> str:
    """A row's name in tables: the architecture for the reference and the grid, the method for pruned models."""
    if row["method"] == "reference":
        return f"reference ({row['label']})"
    return f"grid: {row['label']}" if row["method"] == "grid" else METHOD_NAMES[row["method"]]


def plot(report: dict[str, Any], path: Path) -> None:
    """LiteRT accuracy against measured latency, a marker per method, the budgets as vertical lines."""
    from tfcompress import plots

    reference_ms = report["rows"][0]["measured_ms"]
    rows = [{**row, "name": row["label"].removeprefix("uniform width pruning").strip() or row["label"],
             "kind": METHOD_NAMES[row["method"]]} for row in report["rows"]]
    plots.accuracy_vs_latency(
        rows, path, x="measured_ms", y="accuracy", label="name", group="kind",
        title=f"Fashion-MNIST 32×32: pruned {report['reference']['name']} (retrained from scratch) vs a grid",
        xlabel=f"measured latency, ms ({report['fingerprint'].get('device')}, 1 thread, one session)",
        ylabel="LiteRT top-1 accuracy, %",
        vlines={f"{budget:g}× budget": budget * reference_ms for budget in report["budgets"]})


if __name__ == "__main__":
    app.run(main)
