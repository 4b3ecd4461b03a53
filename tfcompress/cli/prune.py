"""Prunes channels of a .keras model physically (dependency-aware), optionally fine-tunes, and saves it.

    python scripts/prune.py --model=models/resnet20_fashion_mnist.keras --criterion=l1 --target_macs=0.5 \
        --finetune_epochs=2 --output=/tmp/resnet20_l1_50.keras

Prints every channel group's count before and after and the profile (params, MACs); writes OUTPUT (.keras),
and OUTPUT.json with the kept channel counts and indices per group (to retrain the architecture from scratch,
as the NetAdapt work recommends), accuracy before/after and the flags.
"""

from __future__ import annotations

from absl import flags

from tfcompress.cli.flags import define_dataset_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Input .keras model.")
flags.DEFINE_enum("criterion", "l1", ["l1", "l2", "bn", "random", "uniform"], "Channel importance criterion.")
flags.DEFINE_float("target_macs", None, "Keep at most this fraction of the original MACs.")
flags.DEFINE_float("target_params", None, "Keep at most this fraction of the original parameters.")
flags.DEFINE_float("ratio", None, "Remove this fraction of the prunable channels.")
flags.DEFINE_enum("scope", None, ["global", "local"], "Rank channels globally or inside each group.")
flags.DEFINE_integer("channel_multiple", 1, "Round every kept channel count up to a multiple of this (8 suits "
                     "SIMD kernels such as XNNPACK's).", lower_bound=1)
flags.DEFINE_integer("finetune_epochs", 0, "Fine-tune epochs after pruning (SGD, cosine).", lower_bound=0)
flags.DEFINE_float("lr", 0.01, "Fine-tuning learning rate.", lower_bound=0.0)
flags.DEFINE_integer("train_limit", None, "Fine-tune on the first N training examples only.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed (random criterion, shuffling).")
flags.DEFINE_string("output", None, "Output .keras path.")
define_dataset_flags()
flags.mark_flags_as_required(["model", "output"])
flags.register_validator("output", lambda v: v is None or v.endswith(".keras"), message="--output must end in .keras")
flags.register_multi_flags_validator(
    ["target_macs", "target_params", "ratio"], lambda f: sum(v is not None for v in f.values()) == 1,
    message="give exactly one of --target_macs, --target_params, --ratio",
)


def main(argv: list[str]) -> None:
    del argv
    import keras

    import tfcompress as tfc
    from tfcompress.cli.flags import dataset_for_model

    output = tfc.files.check_output(FLAGS.output, inputs=[FLAGS.model])
    keras.utils.set_random_seed(FLAGS.seed)
    model = tfc.export.load_keras_model(FLAGS.model)
    test = dataset_for_model(model.input_shape, "test")
    accuracy_before = tfc.training.evaluate(model, test)["accuracy"]
    small, plan = tfc.pruning.prune_channels(
        model, FLAGS.criterion, ratio=FLAGS.ratio, target_macs=FLAGS.target_macs,
        target_params=FLAGS.target_params, scope=FLAGS.scope, seed=FLAGS.seed, channel_multiple=FLAGS.channel_multiple,
    )
    print(plan.table())
    accuracy_pruned = tfc.training.evaluate(small, test)["accuracy"]
    accuracy_finetuned = None
    if FLAGS.finetune_epochs:
        train = dataset_for_model(small.input_shape, "train", augment=True, seed=FLAGS.seed, limit=FLAGS.train_limit)
        steps = FLAGS.finetune_epochs * int(train.cardinality())
        tfc.training.compile_classifier(small, tfc.training.sgd(FLAGS.lr, steps, "cosine"))
        small.fit(train, epochs=FLAGS.finetune_epochs, verbose="auto", shuffle=False)  # shuffled by tf.data
        accuracy_finetuned = tfc.training.evaluate(small, test)["accuracy"]
    print(tfc.profile.profile(small).table())
    tfc.files.save_model(small, output)
    tfc.files.write_json(output.with_name(output.name + ".json"), {
        "source": FLAGS.model,
        "accuracy_before": accuracy_before,
        "accuracy_pruned": accuracy_pruned,
        "accuracy_finetuned": accuracy_finetuned,
        **plan.to_dict(),
        "flags": {name: FLAGS[name].value for name in (
            "model", "criterion", "target_macs", "target_params", "ratio", "scope", "channel_multiple",
            "finetune_epochs", "lr",
            "train_limit", "seed", "dataset", "output")},
    })
    finetuned = f", fine-tuned {FLAGS.finetune_epochs} epochs {accuracy_finetuned:.4f}" if accuracy_finetuned else ""
    print(f"accuracy {accuracy_before:.4f} → pruned {accuracy_pruned:.4f}{finetuned}; "
          f"MACs ×{plan.macs_after / plan.macs_before:.3f}, params ×{plan.params_after / plan.params_before:.3f} "
          f"→ {output}")


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
