"""Fisher pruning: trains a .keras model while masking, every ``--prune_every`` steps, the channel whose removal
costs least loss (Theis et al. 2018) — per microsecond saved on the device with ``--table`` (the thesis's
"improved Fisher") — until a target; then removes the channels physically.

    python scripts/fisher_prune.py --model=models/resnet20_fashion_mnist.keras --table=tables/resnet20.npz \
        --latency_fraction=0.5 --prune_every=100 --finetune_epochs=10 --output=/tmp/resnet20_fisher.keras
    python scripts/fisher_prune.py --model=M.keras --target_channels=0.6 --output=/tmp/m_fisher.keras

Targets (one): ``--latency_fraction`` / ``--latency_ms`` (predicted by ``--table``, built on ``--device`` when
missing), ``--target_channels`` or ``--target_macs`` (fractions of the original kept). Defaults are the thesis's
(REFERENCE.md §1.1): one channel every 100 steps of SGD lr 8e-4, momentum 0.9, weight decay 5e-4.
``--channels_per_prune`` reaches a target in fewer steps. The one-pass Fisher importance is
``scripts/prune.py --importance=fisher``.

Writes OUTPUT (.keras) and OUTPUT.json: the plan, the prune history, accuracies, predicted and measured latency.
"""

from __future__ import annotations

from absl import flags

from tfcompress.cli import latency_aim
from tfcompress.cli.flags import define_dataset_flags

FLAGS = flags.FLAGS
latency_aim.define_flags(table_required=False)
flags.DEFINE_float("target_channels", None, "Target: keep this fraction of the prunable channels, in (0, 1].")
flags.DEFINE_float("target_macs", None, "Target: keep this fraction of the MACs, in (0, 1].")
flags.DEFINE_integer("prune_every", 100, "Training steps between two prunes.", lower_bound=1)
flags.DEFINE_integer("channels_per_prune", 1, "Channels masked at each prune.", lower_bound=1)
flags.DEFINE_bool("latency_aware", None, "Pick by saliency per µs saved (default: on with --table).")
flags.DEFINE_integer("max_steps", None, "Give up (error) after this many training steps.", lower_bound=1)
define_dataset_flags()
for _target in ("target_channels", "target_macs"):
    flags.register_validator(_target, lambda v: v is None or 0.0 < v <= 1.0,
                             message=f"--{_target} is the fraction of the original kept: in (0, 1]")
flags.register_multi_flags_validator(
    ["target_channels", "target_macs", "latency_fraction", "latency_ms"],
    lambda f: sum(v is not None for v in f.values()) == 1,
    message="give one target: --target_channels, --target_macs, --latency_fraction or --latency_ms")

_OWN_FLAGS = (
    "model", "output", "device", "table", "precision", "latency_fraction", "latency_ms", "target_channels",
    "target_macs", "prune_every", "channels_per_prune", "latency_aware", "max_steps", "lr", "finetune_epochs",
    "finetune_lr", "distill", "from_scratch", "train_limit", "seed", "threads", "runs", "dataset", "batch_size",
)


def main(argv: list[str]) -> None:
    del argv
    import keras

    import tfcompress as tfc
    from tfcompress.cli.flags import load_model_for_dataset

    output = tfc.files.check_output(FLAGS.output, inputs=[FLAGS.model])
    tfc.files.check_output(tfc.files.sidecar_path(output), inputs=[FLAGS.model])
    keras.utils.set_random_seed(FLAGS.seed)
    model = load_model_for_dataset(FLAGS.model)
    target_latency = latency_aim.latency_target()
    if FLAGS.latency_aware and FLAGS.table is None:
        raise ValueError("--latency_aware needs --table=T.npz (built there when missing)")
    device, table = latency_aim.device_and_table(model, needed=target_latency is not None)
    train, holdout, test = latency_aim.splits(model)
    accuracy_before = tfc.training.evaluate(model, test)["accuracy"]
    print(f"{FLAGS.model}: accuracy {accuracy_before:.4f}")
    result = tfc.pruning.fisher.fisher_prune(
        model, train, target_channels=FLAGS.target_channels, target_macs=FLAGS.target_macs,
        target_latency=target_latency, table=table, precision=FLAGS.precision, latency_aware=FLAGS.latency_aware,
        prune_every=FLAGS.prune_every, channels_per_prune=FLAGS.channels_per_prune, max_steps=FLAGS.max_steps,
        optimizer=tfc.training.finetune_sgd(FLAGS.lr), callbacks=[tfc.training.StopOnNonFinite("Fisher pruning")],
        verbose=1)
    print(result.plan.table())
    final, report = latency_aim.finish(model, result.model, result.plan, train, test, device, table, holdout)
    latency_aim.write(output, final, {"source": FLAGS.model, "accuracy_before": accuracy_before, **report,
                                      **result.report()}, _OWN_FLAGS)
    print(f"accuracy {accuracy_before:.4f} → {latency_aim.final_accuracy(report):.4f}; {len(result.history)} "
          f"prunes → {output}")


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
