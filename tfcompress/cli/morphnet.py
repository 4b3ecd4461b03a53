"""MorphNet: trains a .keras model with a resource-weighted sparsifying regularizer on its channels (Gordon et al.
2018, as the NetAdapt thesis used it), then removes the dead channels physically.

    python scripts/morphnet.py --model=models/resnet20_fashion_mnist.keras --epochs=10 --output=/tmp/r20_morph.keras
    python scripts/morphnet.py --model=M.keras --cost=latency --table=tables/m.npz --regularizer=gamma \
        --epochs=10 --finetune_epochs=10 --from_scratch --output=/tmp/m_morph.keras

``--regularizer``: group_lasso (the thesis's default: RMS of each channel's kernel slices) or gamma (|γ| of the
BatchNorms; every prunable group needs one). ``--cost``: flops (morph-net's FLOP regularizer) or latency (the
µs a table of ``--device`` predicts per channel; ``--table`` built there when missing). ``--strength`` defaults to
the thesis's 5e-8 per FLOP, and for latency to the same pressure per µs (see tfcompress/pruning/morphnet.py).
A channel is dead when its value is ≤ ``--threshold`` (1e-3; with a target: when the run shrank it below a hundredth
of its value). Then, as the other pruning scripts,
``--finetune_epochs`` fine-tunes the shrunk model (or retrains its structure ``--from_scratch``, the thesis's way).
``--expand_factor=1.8`` first widens every group (fresh weights), MorphNet's expand-then-shrink; the plan is
then one of the expanded model (``tfcompress.pruning.morphnet.expand(model, 1.8)``).

**A target instead of a strength**: ``--target_flops=0.5`` (or ``--target_params``, or ``--latency_fraction`` /
``--latency_ms`` with ``--table``) searches the strength — guarded runs of at most ``--epochs`` that end once they
reach the target, ×4 until the target is bracketed, then bisection on the log scale, at most ``--trials`` — and keeps
the run that lands within ``--tolerance`` of it (else the closest, its threshold moved to the target). Every run is
guarded: holdout accuracy is checked four times an epoch; a run that loses more than ``--max_accuracy_drop`` points
goes on from its last weights within the limit at half the strength, and the third time stops there. A result at
chance accuracy is not written without ``--allow_worse``.

    python scripts/morphnet.py --model=models/resnet20_fashion_mnist.keras --target_flops=0.5 --epochs=2 \
        --train_limit=20000 --finetune_epochs=2 --output=/tmp/r20_half.keras

Prints the channels of every group before and after and the MACs (FLOPs = 2 × MACs); writes OUTPUT (.keras) and
OUTPUT.json (the plan, re-appliable to a fresh model with tfcompress.pruning.apply_plan; per-epoch history;
accuracies; predicted and measured latency).
"""

from __future__ import annotations

import importlib.util

from absl import flags

from tfcompress.cli import latency_aim
from tfcompress.cli.flags import define_dataset_flags

FLAGS = flags.FLAGS
latency_aim.define_flags(table_required=False)
flags.DEFINE_enum("regularizer", "group_lasso", ["group_lasso", "gamma"], "Channel value regularized: group "
                  "lasso of the kernel slices (RMS) or |γ| of the BatchNorms.")
flags.DEFINE_enum("cost", "flops", ["flops", "latency"], "What a channel's regularization is weighted by: FLOPs, "
                  "or the latency --table predicts.")
flags.DEFINE_float("strength", None, "Regularization strength (default: 5e-8 per FLOP, the thesis's; with "
                   "--cost=latency the same pressure per µs).")
flags.DEFINE_float("threshold", 1e-3, "A channel is dead when its value is ≤ this (the thesis's 1e-3).")
flags.DEFINE_float("expand_factor", None, "First widen every prunable group by this factor with a fresh "
                   "initialization (MorphNet's expand step; the thesis's mult_fact 1.8), then regularize it down.")
flags.DEFINE_integer("epochs", 10, "Training epochs with the regularizer (with a target: each trial's most; it "
                     "ends at the target).", lower_bound=1)
flags.DEFINE_float("target_flops", None, "Target: keep this fraction of the FLOPs, in (0, 1); the strength is "
                   "searched (--strength is then the first one tried).")
flags.DEFINE_float("target_params", None, "Target: keep this fraction of the parameters, in (0, 1).")
flags.DEFINE_float("tolerance", 0.05, "A target is met within ± this fraction of it (0.05: ±5 %).")
flags.DEFINE_integer("trials", 6, "Strength trials of a target at most.", lower_bound=1)
flags.DEFINE_float("max_accuracy_drop", 10.0, "Guard: a regularized run whose holdout accuracy falls more than this "
                   "many points stops, with its last weights within the limit.", lower_bound=0.0)
flags.DEFINE_bool("allow_worse", False, "Write the result even at chance accuracy.")
flags.DEFINE_string("tensorboard_dir", None, "Write per-epoch scalars (alive channels per group, regularizer, "
                    "FLOPs, predicted latency) here for TensorBoard (needs the tensorboard package).")
define_dataset_flags()
FLAGS.set_default("lr", 0.01)  # the thesis's MorphNet runs (REFERENCE.md §1.7)
flags.register_validator("strength", lambda v: v is None or v >= 0, message="--strength must be ≥ 0")
flags.register_validator("threshold", lambda v: v >= 0, message="--threshold must be ≥ 0")
flags.register_validator("expand_factor", lambda v: v is None or v >= 1, message="--expand_factor must be ≥ 1")
for _name in ("target_flops", "target_params"):
    flags.register_validator(_name, lambda v: v is None or 0 < v < 1, message=f"--{_name} is a fraction in (0, 1)")
flags.register_validator("tolerance", lambda v: 0 < v < 1, message="--tolerance is a fraction in (0, 1)")
flags.register_multi_flags_validator(
    ["target_flops", "target_params", "latency_fraction", "latency_ms"],
    lambda f: sum(v is not None for v in f.values()) <= 1,
    message="give one target: --target_flops, --target_params, --latency_fraction or --latency_ms")
flags.register_multi_flags_validator(
    ["latency_fraction", "latency_ms", "table"],
    lambda f: (f["latency_fraction"] is None and f["latency_ms"] is None) or f["table"] is not None,
    message="a latency target needs --table=T.npz (the device's latency table, built there when missing)")
flags.register_multi_flags_validator(
    ["cost", "table"], lambda f: f["cost"] != "latency" or f["table"] is not None,
    message="--cost=latency needs --table=T.npz (the device's latency table, built there when missing)")

#: holdout images the accuracy guard checks (four times an epoch)
GUARD_IMAGES = 2048

_OWN_FLAGS = (
    "model", "output", "regularizer", "cost", "strength", "threshold", "expand_factor", "epochs", "device", "table",
    "precision", "lr", "finetune_epochs", "finetune_lr", "distill", "from_scratch", "train_limit", "seed", "threads",
    "runs", "dataset", "batch_size", "tensorboard_dir", "target_flops", "target_params", "latency_fraction",
    "latency_ms", "tolerance", "trials", "max_accuracy_drop", "allow_worse", "holdout_fraction",
)


def main(argv: list[str]) -> None:
    del argv
    import keras

    import tfcompress as tfc
    from tfcompress.cli.flags import load_model_for_dataset
    from tfcompress.pruning import morphnet

    output = tfc.files.check_output(FLAGS.output, inputs=[FLAGS.model])
    tfc.files.check_output(tfc.files.sidecar_path(output), inputs=[FLAGS.model])
    callbacks = [tfc.training.StopOnNonFinite("MorphNet")]
    if FLAGS.tensorboard_dir:
        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--tensorboard_dir needs TensorBoard: pip install tensorboard")
        tfc.files.check_output_folder(FLAGS.tensorboard_dir)
        callbacks.append(keras.callbacks.TensorBoard(FLAGS.tensorboard_dir))
    keras.utils.set_random_seed(FLAGS.seed)
    model = load_model_for_dataset(FLAGS.model)
    source = model
    if FLAGS.expand_factor:
        model = morphnet.expand(source, FLAGS.expand_factor)
        print(f"expanded ×{FLAGS.expand_factor:g} (fresh initialization): {source.count_params():,} → "
              f"{model.count_params():,} params")
    measure, target = _target()
    device, table = latency_aim.device_and_table(model, needed=FLAGS.cost == "latency" or measure == "latency")
    cost = "latency" if measure == "latency" else FLAGS.cost
    regularizer = morphnet.MorphNetRegularizer(  # refuses gamma on a group without BN before any training
        model, FLAGS.regularizer, cost, strength=FLAGS.strength, threshold=FLAGS.threshold, table=table,
        precision=FLAGS.precision)
    if FLAGS.latency_ms is not None:  # the target as the fraction of the model's predicted latency it is
        target = FLAGS.latency_ms / (regularizer.predicted(regularizer.full)["latency_ms"])
        if not 0 < target < 1:
            raise ValueError(f"--latency_ms={FLAGS.latency_ms:g} is not below the model's predicted "
                             f"{FLAGS.latency_ms / target:.3f} ms: nothing to prune for")
    train, holdout, test = latency_aim.splits(model)
    holdout = holdout.take(-(-GUARD_IMAGES // FLAGS.batch_size))  # the guard's checks: a few thousand images suffice
    accuracy_before = tfc.training.evaluate(source, test)["accuracy"]
    print(f"{FLAGS.model}: accuracy {accuracy_before:.4f}")
    if target is None:
        print(f"MorphNet {FLAGS.regularizer}, {cost} cost, strength {regularizer.strength:.3g}, threshold "
              f"{FLAGS.threshold:g}: {len(regularizer.groups)} channel groups")
        result = morphnet.morphnet_prune(
            model, train, regularizer=FLAGS.regularizer, cost=cost, strength=regularizer.strength,
            threshold=FLAGS.threshold, table=table, precision=FLAGS.precision, epochs=FLAGS.epochs,
            optimizer=tfc.training.finetune_sgd(FLAGS.lr), callbacks=callbacks,
            log_dir=f"{FLAGS.tensorboard_dir}/morphnet" if FLAGS.tensorboard_dir else None, verbose=1,
            holdout=holdout, max_accuracy_drop=FLAGS.max_accuracy_drop)
        strength = regularizer.strength
        if result.guard.collapsed:
            print(f"stopped: holdout accuracy fell more than {FLAGS.max_accuracy_drop:g} points "
                  f"({' → '.join(f'{a:.4f}' for a in result.guard.scores)}); the last weights within it are kept")
    else:
        print(f"MorphNet {FLAGS.regularizer}, {cost} cost, to {target:.3g} of the {measure} (± "
              f"{100 * FLAGS.tolerance:g} %): {len(regularizer.groups)} channel groups")
        result = morphnet.morphnet_to_target(
            model, train, target=target, measure=measure, holdout=holdout, max_accuracy_drop=FLAGS.max_accuracy_drop,
            tolerance=FLAGS.tolerance, trials=FLAGS.trials, epochs=FLAGS.epochs, lr=FLAGS.lr, strength=FLAGS.strength,
            regularizer=FLAGS.regularizer, table=table, precision=FLAGS.precision, seed=FLAGS.seed)
        strength = result.search["strength"]
        print(f"{measure} kept {result.search['kept']:.3f} (target {target:g}) at strength {strength:.3g}: channels "
              f"shrunk below {result.search['relative_threshold']:.3g} of their value removed")
    print(result.plan.table())
    print(f"FLOPs {2 * result.plan.macs_before:,} → {2 * result.plan.macs_after:,}")
    final, report = latency_aim.finish(model, result.model, result.plan, train, test, device, table, holdout)
    accuracy = latency_aim.final_accuracy(report)
    # at chance: a model that was well above it (10 points) kept less than a tenth of its margin
    chance = 1 / max(2, int(final.output_shape[-1]))
    margin = accuracy_before - chance
    if margin >= 0.1 and accuracy - chance < 0.1 * margin and not FLAGS.allow_worse:
        raise ValueError(f"the result is at chance accuracy ({accuracy:.4f}; the model had {accuracy_before:.4f}): "
                         f"not written. A target (--target_flops=0.5) instead of --strength, a smaller --strength or "
                         f"--lr, or --allow_worse to write it anyway")
    latency_aim.write(output, final, {"source": FLAGS.model, "accuracy_before": accuracy_before,
                                      "strength": strength, **report, **result.report()}, _OWN_FLAGS)
    print(f"accuracy {accuracy_before:.4f} → {accuracy:.4f} → {output}")


def _target() -> tuple[str, float | None]:
    """What the flags aim at: (measure, fraction kept), the fraction None without a target (or given in ms)."""
    if FLAGS.target_flops is not None:
        return "flops", FLAGS.target_flops
    if FLAGS.target_params is not None:
        return "params", FLAGS.target_params
    if FLAGS.latency_fraction is not None or FLAGS.latency_ms is not None:
        return "latency", FLAGS.latency_fraction
    return "flops", None


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
