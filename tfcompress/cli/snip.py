"""SNIP: prunes a zoo model at initialization from one batch, trains it with the mask fixed, reports sparsity.

    python scripts/snip.py --model=lenet5 --dataset=fashion_mnist --target_sparsity=0.95 --epochs=10 \
        --output=/tmp/lenet5_snip95.keras
    python scripts/snip.py --model=models/lenet5_fashion_mnist.keras --init=model --target_sparsity=0.9 \
        --epochs=2 --output=/tmp/lenet5_trained_snip90.keras   # saliency of a trained model's own weights

Lee, Ajanthan & Torr, ICLR 2019 (REFERENCE.md §4): variance-scaling init (BatchNorms fresh too), connection
sensitivity |g·w| on one batch of ``--batch_size`` training images, global top-κ, the mask applied to a fresh
init, SGD training with the reference's coupled L2 term (loss + wd/2·Σw², ``--weight_decay_mode``).
Prints the per-layer sparsity and the test error. Writes OUTPUT and OUTPUT.json (per-layer sparsity, test error,
pre-pass time, flags), both atomically. OUTPUT keeps the WeightMask layers, so that the next program keeps the
zeros (``scripts/prune.py`` fine-tunes with the masks; ``scripts/export.py --sparse`` strips them into plain
layers with zeros in place); ``--strip`` saves plain layers instead (loadable without tfcompress).
"""

from __future__ import annotations

import json
import time

from absl import flags

from tfcompress.cli.flags import define_builtin_dataset_flags, define_image_size_flag, define_json_flag

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "lenet5", "Zoo model name, e.g. lenet_300_100, lenet5, resnet20, or a .keras model "
                    "(with --init=model its own weights are scored, masked and trained on).")
flags.DEFINE_float("target_sparsity", 0.9, "Fraction of prunable weights removed, in [0, 1).")
flags.DEFINE_integer("prune_batches", 1, "Batches of --batch_size images the saliency is computed on.",
                     lower_bound=1)
flags.DEFINE_integer("epochs", 10, "Training epochs after pruning.", lower_bound=1)
flags.DEFINE_float("lr", 0.02, "Initial learning rate (LeNet-5 diverges at 0.1 with momentum 0.9; LeNet-300-100 "
                   "trains well at 0.1).", lower_bound=0.0)
flags.DEFINE_enum("schedule", "cosine", ["cosine", "step", "constant"], "Learning-rate schedule.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum (Nesterov).", lower_bound=0.0)
flags.DEFINE_float("weight_decay", 5e-4, "Weight decay wd on kernels (reference: 5e-4, its loss + 0.00025·Σw²).",
                   lower_bound=0.0)
flags.DEFINE_enum("weight_decay_mode", "coupled", ["coupled", "decoupled"],
                  "coupled: an L2 term wd/2·Σw² in the loss, its gradient going through the momentum (the "
                  "reference); decoupled: Keras' w ← w − lr·wd·w, which decays ~10× less at momentum 0.9.")
flags.DEFINE_enum("init", "variance_scaling", ["variance_scaling", "model"],
                  "Weights the saliency is computed on: a variance-scaling re-init (reference) or the model's own.")
flags.DEFINE_enum("train_init", None, ["fresh", "same"],
                  "Weights the mask is applied to: a fresh variance-scaling init (default with "
                  "--init=variance_scaling, as the reference) or the same weights (default with --init=model).")
flags.DEFINE_bool("prune_biases", True, "Biases compete in the global top-κ too (reference behaviour).")
flags.DEFINE_bool("allow_empty_layers", False, "Accept a sparsity that removes every connection of a layer.")
flags.DEFINE_bool("augment", False, "Random crop (pad 4) and horizontal flip while training.")
flags.DEFINE_integer("train_limit", None, "Train on the first N examples only (quick runs).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Random seed (initializations, pruning batch, shuffling).")
flags.DEFINE_bool("strip", False, "Save plain layers with the pruned weights at zero (loadable without tfcompress) "
                  "instead of the WeightMask layers that keep them at zero through further training.")
flags.DEFINE_string("output", None, "Output .keras path (WeightMask layers kept unless --strip).")
define_image_size_flag()
define_builtin_dataset_flags()
define_json_flag("model_args", "JSON keyword arguments for the zoo builder, e.g. '{\"width_multiplier\": 0.5}'.")
flags.FLAGS.set_default("batch_size", 100)  # the paper's pruning and training batch on MNIST
flags.mark_flag_as_required("output")
flags.register_validator("target_sparsity", lambda v: 0.0 <= v < 1.0,
                         message="--target_sparsity must be in [0, 1), e.g. 0.9 for 90 % of the weights removed")
flags.register_validator("output", lambda v: v is None or v.endswith(".keras"), message="--output must end in .keras")

_OWN_FLAGS = (
    "model", "model_args", "dataset", "data_dir", "image_size", "target_sparsity", "prune_batches", "batch_size",
    "epochs", "lr", "schedule", "momentum", "weight_decay", "weight_decay_mode", "init", "train_init", "prune_biases",
    "allow_empty_layers", "augment", "train_limit", "seed", "strip", "output",
)


def main(argv: list[str]) -> None:
    del argv
    import keras

    import tfcompress as tfc
    from tfcompress.cli.flags import load_model_for_dataset
    from tfcompress.pruning import snip, weight_masks

    from_file = FLAGS.model.endswith(".keras")
    inputs = [FLAGS.model] if from_file else []
    output = tfc.files.check_output(FLAGS.output, inputs=inputs)
    sidecar = tfc.files.check_output(tfc.files.sidecar_path(output), inputs=inputs)
    keras.utils.set_random_seed(FLAGS.seed)
    if from_file:
        if FLAGS.image_size is not None or json.loads(FLAGS.model_args):
            raise ValueError("--image_size and --model_args build a zoo model; a .keras --model has its own shape")
        model = load_model_for_dataset(FLAGS.model)
        if weight_masks.get_masks(model):
            raise ValueError(f"{FLAGS.model} already has WeightMask layers; give SNIP a model without them")
        options = tfc.data.pipeline_options_for(model.input_shape, FLAGS.dataset)
    else:
        options = {"image_size": FLAGS.image_size}
    common = {"batch_size": FLAGS.batch_size, "data_dir": FLAGS.data_dir, **options}
    prune_data = tfc.data.load(FLAGS.dataset, "train", shuffle=True, seed=FLAGS.seed, **common)  # checks options
    if not from_file:
        model = tfc.zoo.build(FLAGS.model, tfc.data.input_shape(FLAGS.dataset, **options),
                              tfc.data.get_spec(FLAGS.dataset).num_classes, **json.loads(FLAGS.model_args))
    result = snip.prune(
        model, prune_data, FLAGS.target_sparsity, init=FLAGS.init, train_init=FLAGS.train_init,
        prune_biases=FLAGS.prune_biases, num_batches=FLAGS.prune_batches, seed=FLAGS.seed,
        allow_empty_layers=FLAGS.allow_empty_layers,
    )
    train = tfc.data.load(FLAGS.dataset, "train", augment=FLAGS.augment, shuffle=True, seed=FLAGS.seed,
                          limit=FLAGS.train_limit, **common)
    test = tfc.data.load(FLAGS.dataset, "test", **common)
    optimizer = tfc.training.sgd(FLAGS.lr, FLAGS.epochs * int(train.cardinality()), FLAGS.schedule, FLAGS.momentum,
                                 FLAGS.weight_decay, weight_decay_mode=FLAGS.weight_decay_mode)
    tfc.training.compile_classifier(result.model, optimizer)
    start = time.time()
    result.model.fit(train, epochs=FLAGS.epochs, verbose=2, callbacks=[tfc.training.StopOnNonFinite()])
    train_seconds = time.time() - start

    metrics = tfc.training.evaluate(result.model, test)
    saved = tfc.export.strip(result.model) if FLAGS.strip else result.model
    layers = weight_masks.weight_sparsity(saved, prune_biases=FLAGS.prune_biases)
    tfc.files.save_model(saved, output)
    tfc.files.write_json(sidecar, {
        "model": FLAGS.model, "dataset": FLAGS.dataset, "test_accuracy": metrics["accuracy"],
        "test_error": 1.0 - metrics["accuracy"], "layer_sparsity": layers,
        "weight_masks": sorted(weight_masks.get_masks(saved)),
        "prepass_seconds": round(result.prepass_seconds, 4), "train_seconds": round(train_seconds, 1),
        "flags": {name: FLAGS[name].value for name in _OWN_FLAGS},
    })
    print(f"{'layer':<24} {'weights':>10} {'non-zero':>10} {'sparsity':>9}")
    for name, row in layers.items():
        print(f"{name:<24} {row['params']:>10,} {row['nonzero']:>10,} {100 * row['sparsity']:>8.2f}%")
    print(f"test error {100 * (1 - metrics['accuracy']):.2f} %  (SNIP pre-pass {result.prepass_seconds:.3f} s) "
          f"→ {output} ({'plain layers' if FLAGS.strip else 'WeightMask layers kept; --strip for plain ones'})")


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
