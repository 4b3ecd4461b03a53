"""MorphNet: trains a .keras model with a resource-weighted sparsifying regularizer on its channels (Gordon et al.
2018, as the NetAdapt thesis used it), then removes the dead channels physically.

    python scripts/morphnet.py --model=models/resnet20_fashion_mnist.keras --epochs=10 --output=/tmp/r20_morph.keras
    python scripts/morphnet.py --model=M.keras --cost=latency --table=tables/m.npz --regularizer=gamma \
        --epochs=10 --finetune_epochs=10 --from_scratch --output=/tmp/m_morph.keras

``--regularizer``: group_lasso (the thesis's default: RMS of each channel's kernel slices) or gamma (|γ| of the
BatchNorms; every prunable group needs one). ``--cost``: flops (morph-net's FLOP regularizer) or latency (the
µs a table of ``--device`` predicts per channel; ``--table`` built there when missing). ``--strength`` defaults to
the thesis's 5e-8 per FLOP, and for latency to the same pressure per µs (see tfcompress/pruning/morphnet.py).
A channel is dead when its value is ≤ ``--threshold`` (1e-3). Then, as the other pruning scripts,
``--finetune_epochs`` fine-tunes the shrunk model (or retrains its structure ``--from_scratch``, the thesis's way).
``--expand_factor=1.8`` first widens every group (fresh weights), MorphNet's expand-then-shrink; the plan is
then one of the expanded model (``tfcompress.pruning.morphnet.expand(model, 1.8)``).

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
flags.DEFINE_integer("epochs", 10, "Training epochs with the regularizer.", lower_bound=1)
flags.DEFINE_string("tensorboard_dir", None, "Write per-epoch scalars (alive channels per group, regularizer, "
                    "FLOPs, predicted latency) here for TensorBoard (needs the tensorboard package).")
define_dataset_flags()
FLAGS.set_default("lr", 0.01)  # the thesis's MorphNet runs (REFERENCE.md §1.7)
flags.register_validator("strength", lambda v: v is None or v >= 0, message="--strength must be ≥ 0")
flags.register_validator("threshold", lambda v: v >= 0, message="--threshold must be ≥ 0")
flags.register_validator("expand_factor", lambda v: v is None or v >= 1, message="--expand_factor must be ≥ 1")
flags.register_multi_flags_validator(
    ["latency_fraction", "latency_ms"], lambda f: all(v is None for v in f.values()),
    message="MorphNet has no latency target: --strength sets the trade-off (larger removes more)")
flags.register_multi_flags_validator(
    ["cost", "table"], lambda f: f["cost"] != "latency" or f["table"] is not None,
    message="--cost=latency needs --table=T.npz (the device's latency table, built there when missing)")

_OWN_FLAGS = (
    "model", "output", "regularizer", "cost", "strength", "threshold", "expand_factor", "epochs", "device", "table",
    "precision", "lr", "finetune_epochs", "finetune_lr", "from_scratch", "train_limit", "seed", "threads", "runs",
    "dataset", "batch_size", "tensorboard_dir",
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
    device, table = latency_aim.device_and_table(model, needed=FLAGS.cost == "latency")
    regularizer = morphnet.MorphNetRegularizer(  # refuses gamma on a group without BN before any training
        model, FLAGS.regularizer, FLAGS.cost, strength=FLAGS.strength, threshold=FLAGS.threshold, table=table,
        precision=FLAGS.precision)
    print(f"MorphNet {FLAGS.regularizer}, {FLAGS.cost} cost, strength {regularizer.strength:.3g}, threshold "
          f"{FLAGS.threshold:g}: {len(regularizer.groups)} channel groups")
    train, _, test = latency_aim.splits(model)
    accuracy_before = tfc.training.evaluate(source, test)["accuracy"]
    print(f"{FLAGS.model}: accuracy {accuracy_before:.4f}")
    result = morphnet.morphnet_prune(
        model, train, regularizer=FLAGS.regularizer, cost=FLAGS.cost, strength=regularizer.strength,
        threshold=FLAGS.threshold, table=table, precision=FLAGS.precision, epochs=FLAGS.epochs,
        optimizer=tfc.training.finetune_sgd(FLAGS.lr), callbacks=callbacks,
        log_dir=f"{FLAGS.tensorboard_dir}/morphnet" if FLAGS.tensorboard_dir else None, verbose=1)
    print(result.plan.table())
    print(f"FLOPs {2 * result.plan.macs_before:,} → {2 * result.plan.macs_after:,}")
    final, report = latency_aim.finish(model, result.model, result.plan, train, test, device, table)
    latency_aim.write(output, final, {"source": FLAGS.model, "accuracy_before": accuracy_before,
                                      "strength": regularizer.strength, **report, **result.report()}, _OWN_FLAGS)
    print(f"accuracy {accuracy_before:.4f} → {latency_aim.final_accuracy(report):.4f} → {output}")


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
