"""What the scripts that prune toward a latency on a device share (``netadapt.py``, ``fisher_prune.py``): the
device and its table (loaded, or built when missing), the target flags, the data splits, the long-term
fine-tune or retraining from scratch, and the final measurement next to the table's prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from absl import flags

from tfcompress.latency.devices import DEVICE_HELP

FLAGS = flags.FLAGS


def define_flags(table_required: bool) -> None:
    flags.DEFINE_string("model", None, "Input .keras model (logits output).")
    flags.DEFINE_string("output", None, "Output .keras path; OUTPUT.json beside it (plan, history, measurements).")
    flags.DEFINE_string("device", "litert", DEVICE_HELP)
    flags.DEFINE_string("table", None, "The device's latency table (T.npz); built there when missing "
                        "(scripts/latency_table.py builds one with more options)."
                        + ("" if table_required else " Needed for latency targets and latency-aware pruning."))
    flags.DEFINE_enum("precision", "float32", ["float32", "int8"], "The precision the latency is aimed at.")
    flags.DEFINE_float("latency_fraction", None, "Target: this fraction of the model's predicted latency, in (0, 1).")
    flags.DEFINE_float("latency_ms", None, "Target: this predicted latency in milliseconds.")
    flags.DEFINE_integer("threads", 1, "Inference threads on the device (tables and measurements).", lower_bound=1)
    flags.DEFINE_integer("runs", 50, "Timed inferences of the final measurement.", lower_bound=1)
    flags.DEFINE_float("holdout_fraction", 0.1, "Stratified part of the training split kept out of training "
                       "(NetAdapt compares candidates on it; seed 17 as the reference).")
    flags.DEFINE_integer("train_limit", None, "Train on the first N training examples only.", lower_bound=1)
    flags.DEFINE_float("lr", 8e-4, "Learning rate while pruning (SGD, momentum 0.9, weight decay 5e-4: the "
                       "thesis's).")
    flags.DEFINE_integer("finetune_epochs", 0, "Afterwards: fine-tune the pruned model this many epochs (SGD "
                         "cosine from --finetune_lr or less where the loss is too sharp for it, the best holdout "
                         "epoch kept), or with --from_scratch train the found architecture from a fresh "
                         "initialization this many epochs.", lower_bound=0)
    flags.DEFINE_bool("distill", True, "Fine-tune by knowledge distillation from the model before pruning (α 0.1 "
                      "on the labels, T 5), not on the labels alone; not with --from_scratch.")
    flags.DEFINE_float("finetune_lr", 0.01, "Learning rate of --finetune_epochs (0.1 suits --from_scratch).")
    flags.DEFINE_bool("from_scratch", False, "Retrain the found architecture from scratch (the thesis's best "
                      "results) instead of fine-tuning the pruned weights.")
    flags.DEFINE_integer("seed", 0, "Seed of initialization, shuffling and augmentation.")
    flags.mark_flags_as_required(["model", "output"])
    flags.register_validator("output", lambda v: v is None or v.endswith(".keras"),
                             message="--output must end in .keras")
    flags.register_validator("latency_fraction", lambda v: v is None or 0.0 < v < 1.0,
                             message="--latency_fraction is the fraction of the predicted latency kept: in (0, 1)")
    flags.register_validator("latency_ms", lambda v: v is None or v > 0, message="--latency_ms must be > 0")
    for name in ("lr", "finetune_lr"):
        flags.register_validator(name, lambda v: v > 0, message=f"--{name} must be > 0")
    flags.register_multi_flags_validator(
        ["from_scratch", "finetune_epochs"], lambda f: not f["from_scratch"] or f["finetune_epochs"] > 0,
        message="--from_scratch retrains for --finetune_epochs: give --finetune_epochs=N (N > 0)")
    flags.register_validator("holdout_fraction", lambda v: 0.0 < v < 1.0, message="--holdout_fraction: in (0, 1)")
    flags.register_multi_flags_validator(
        ["latency_fraction", "latency_ms"], lambda f: sum(v is not None for v in f.values()) <= 1,
        message="give --latency_fraction or --latency_ms, not both")
    if table_required:
        flags.mark_flag_as_required("table")


def latency_target() -> float | str | None:
    """The target as the library takes it: a fraction, or "X ms"."""
    if FLAGS.latency_ms is not None:
        return f"{FLAGS.latency_ms}ms"
    return FLAGS.latency_fraction


def device_and_table(model, *, needed: bool) -> tuple[Any, Any]:
    """The device, and its table for ``model``: loaded (and checked to be this device's) or built when missing.

    Raises:
        ValueError: the table is another device's, or has no entry for a layer of the model.
    """
    from tfcompress import latency

    device = latency.open_device(FLAGS.device)
    if FLAGS.table is None:
        if needed:
            raise ValueError("a latency target needs --table=T.npz (built there when missing)")
        return device, None
    return device, latency.load_or_build_table(model, device, FLAGS.table, FLAGS.precision, threads=FLAGS.threads)


def splits(model) -> tuple[Any, Any, Any]:
    """(train without the holdout, holdout, test) of ``--dataset``, shaped for the model."""
    from tfcompress.cli.flags import dataset_for_model

    shape = model.input_shape
    train = dataset_for_model(shape, "train", holdout_fraction=FLAGS.holdout_fraction, augment=True,
                              seed=FLAGS.seed, limit=FLAGS.train_limit)
    holdout = dataset_for_model(shape, "holdout", holdout_fraction=FLAGS.holdout_fraction)
    return train, holdout, dataset_for_model(shape, "test")


def finish(source, pruned, plan, train, test, device, table, holdout=None) -> tuple[Any, dict[str, Any]]:
    """Long-term fine-tune or retraining from scratch, then accuracy and the measured latency next to the
    table's prediction. Returns the final model (a new one when from scratch) and the report's fields.

    The fine-tune is the recipes' (``tfcompress.pipeline.stages.finetune``): by distillation from ``source``
    unless ``--distill=false``, the lr lowered where the loss is too sharp for it, the best ``holdout`` epoch
    kept (the starting weights included)."""
    import keras

    import tfcompress as tfc

    report: dict[str, Any] = {"accuracy_pruned": tfc.training.evaluate(pruned, test)["accuracy"]}
    if FLAGS.finetune_epochs and FLAGS.from_scratch:  # the plan applied to a fresh initialization
        pruned = plan.apply(keras.models.clone_model(source))
        steps = FLAGS.finetune_epochs * int(train.cardinality())
        tfc.training.compile_classifier(pruned, tfc.training.sgd(FLAGS.finetune_lr, steps, "cosine"))
        pruned.fit(train, epochs=FLAGS.finetune_epochs, verbose=2, callbacks=[tfc.training.StopOnNonFinite()])
    elif FLAGS.finetune_epochs:
        context = tfc.pipeline.Context(original=source, train=train, test=test, holdout=holdout, progress=print)
        tfc.pipeline.stages.finetune(pruned, context, FLAGS.finetune_epochs, FLAGS.finetune_lr,
                                     "original" if FLAGS.distill else None)
    if FLAGS.finetune_epochs:
        how = "from scratch" if FLAGS.from_scratch else "fine-tuned"
        report[f"accuracy_{how.replace(' ', '_').replace('-', '_')}"] = accuracy = (
            tfc.training.evaluate(pruned, test)["accuracy"])
        print(f"{how} {FLAGS.finetune_epochs} epochs: accuracy {accuracy:.4f}")
    result = tfc.latency.measure_model(pruned, device, FLAGS.precision, threads=FLAGS.threads, runs=FLAGS.runs)
    measured_ms = result.latency_ms
    report["measured_ms"] = measured_ms
    report["host"] = result.host
    if table is not None:
        predicted = table.predict(pruned, FLAGS.precision).ms
        report.update(predicted_ms=predicted, prediction_error=(predicted - measured_ms) / measured_ms)
        print(f"latency ({FLAGS.precision}, {device.name}): predicted {predicted:.3f} ms, measured "
              f"{measured_ms:.3f} ms ({100 * report['prediction_error']:+.1f} %)")
    else:
        print(f"latency ({FLAGS.precision}, {device.name}): measured {measured_ms:.3f} ms")
    return pruned, report


def final_accuracy(report: dict[str, Any]) -> float:
    return report.get("accuracy_fine_tuned", report.get("accuracy_from_scratch", report["accuracy_pruned"]))


def write(output: Path, model, report: dict[str, Any], own_flags: tuple[str, ...]) -> None:
    from tfcompress import files

    files.save_model(model, output)
    files.write_json(files.sidecar_path(output), {**report, "flags": {name: FLAGS[name].value for name in own_flags}})
