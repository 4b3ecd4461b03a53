"""Ternarizes a trained model with EC2T, TTQ or entropy-constrained pruning (ECP), and reports what it buys.

    python scripts/ternarize.py --model=models/resnet20_fashion_mnist.keras --method=ec2t --epochs=20 \
        --retrain_epochs=15 --ini_c_divr=0.3 --lambda_max_divr=0.15 --output=runs/resnet20_ec2t.keras

Every convolution except the stem and the 1×1 projection shortcuts is ternarized, as in the EC2T reference
(``--layers`` to choose, ``--ternarize_shortcuts`` to include the shortcuts). EC2T and ECP train with Adam
(``--lr`` for the model and shadow weights, ``--centroid_lr`` for the centroids); their retrain phase starts from
the quantization epoch with the best accuracy on a stratified holdout of the training split
(``--holdout_fraction``, 0 = from the last epoch). TTQ trains with the official recipe (momentum SGD, lr 0.1
stepped, scales starting at 1) or, with ``--ttq_recipe=ec2t``, EC2T's Adam. ``--wn_gradient=reference`` uses the
EC2T reference code's sign of the w_n gradient (the exact one by default), so that a benchmark can show both.
``OUTPUT`` (.keras) keeps the ternary layers, which
compute with three values per layer, so that the next program keeps them ternary (``scripts/prune.py``
fine-tunes them with the assignment frozen; ``scripts/export.py`` strips them into plain layers whose kernels hold
the three values); ``--strip`` saves those plain layers instead (loadable without tfcompress). ``OUTPUT.json``
records the test accuracy before and after, per-layer sparsity and code entropy, the entropy-coded size and the
MicroNet score.

``--model`` may be any trained .keras model, channel-pruned ones included. Layers wrapped in WeightMask
(``scripts/snip.py``, a pruned sparse model) are unwrapped before they are ternarized (the ternary assignment
decides their zeros); the WeightMask layers of the other layers are kept, so their zeros stay zero in training.
"""

from __future__ import annotations

import time

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Trained .keras model to ternarize.")
flags.DEFINE_enum("method", "ec2t", ["ec2t", "ttq", "ecp"],
                  "ec2t: entropy-constrained ternarization; ttq: Trained Ternary Quantization (fixed threshold); "
                  "ecp: entropy-constrained pruning (non-zeros keep full precision).")
flags.DEFINE_integer("epochs", 20, "Quantization epochs (TTQ: training epochs).")
flags.DEFINE_integer("retrain_epochs", 15, "EC2T/ECP epochs with the assignment frozen (ignored by TTQ).",
                     lower_bound=0)
flags.DEFINE_float("ini_c_divr", 0.3, "Initial centroids w_p = |max W|·ini_c_divr, w_n = |min W|·ini_c_divr (> 0).")
flags.DEFINE_float("lambda_max_divr", 0.15, "Fraction of Λ_max applied (> 0); larger gives sparser layers.")
flags.DEFINE_float("ttq_threshold", 0.05, "TTQ threshold, a fraction of max|W| in (0, 1).")
flags.DEFINE_enum("ttq_recipe", "official", ["official", "ec2t"],
                  "TTQ training: official (czhu95/ternarynet: scales start at 1, momentum SGD lr 0.1 ÷10 at "
                  "82/164, 123/164, 150/164 of the epochs, L2 2e-4) or ec2t (EC2T's Adam, scales start at the "
                  "mean magnitudes: the former baseline).")
flags.DEFINE_enum("wn_gradient", "exact", ["exact", "reference"],
                  "Sign of the w_n gradient: exact (−Σ g over the −w_n weights) or reference (+Σ g, the EC2T "
                  "reference code's, with which its published numbers were obtained).")
flags.DEFINE_float("lr", None, "Initial learning rate (default: 1e-4 for the Adam of EC2T/ECP and of "
                   "--ttq_recipe=ec2t; 0.1 for the official TTQ SGD).")
flags.DEFINE_float("centroid_lr", 1e-5, "Adam learning rate of the centroids (EC2T/ECP, --ttq_recipe=ec2t).",
                   lower_bound=0.0)
flags.DEFINE_float("holdout_fraction", 0.1, "EC2T/ECP: stratified part of the training split kept out of "
                   "training; the retrain phase starts from the quantization epoch with the best accuracy on it "
                   "(the reference selects on its test split); used only with --retrain_epochs > 0. 0: no "
                   "holdout, retrain from the last epoch.")
flags.DEFINE_list("layers", None, "Layers to ternarize (default: every Conv2D except the stem and the 1×1 "
                  "projection shortcuts).")
flags.DEFINE_bool("ternarize_shortcuts", False, "Also ternarize the 1×1 projection shortcuts (the reference keeps "
                  "them full precision); only without --layers.")
flags.DEFINE_bool("augment", False, "Random crop (pad 4) and horizontal flip while training (only if they suit "
                  "your images: a flip is wrong for digits and text).")
flags.DEFINE_integer("train_limit", None, "Train on the first N examples only (quick runs).", lower_bound=1)
flags.DEFINE_enum("task", "cifar100", ["cifar100", "imagenet"], "MicroNet reference to score against.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_bool("strip", False, "Save plain layers whose kernels hold the three values (loadable without "
                  "tfcompress) instead of the ternary layers.")
flags.DEFINE_string("output", None, "Output .keras path (ternary layers kept unless --strip); OUTPUT.json beside it.")

from tfcompress.cli.flags import define_dataset_flags  # noqa: E402

define_dataset_flags(augment_flag=False)
flags.mark_flags_as_required(["model", "output"])
flags.register_validator("output", lambda v: v is None or v.endswith(".keras"), message="--output must end in .keras")
flags.register_validator("ini_c_divr", lambda v: v > 0, message="--ini_c_divr must be > 0 (reference 0.15–0.5)")
flags.register_validator("lambda_max_divr", lambda v: v > 0,
                         message="--lambda_max_divr must be > 0 (reference 0.125–0.175)")
flags.register_validator("ttq_threshold", lambda v: 0 < v < 1, message="--ttq_threshold must be in (0, 1)")
flags.register_validator("lr", lambda v: v is None or v > 0, message="--lr must be > 0")
flags.register_validator("holdout_fraction", lambda v: 0 <= v < 1, message="--holdout_fraction must be in [0, 1)")
flags.register_validator(
    "epochs", lambda v: v >= 1,
    message="--epochs must be ≥ 1: the retrain phase (--retrain_epochs) needs quantization epochs before it",
)


def main(argv: list[str]) -> None:
    del argv
    import keras
    import tensorflow as tf

    from tfcompress import export, files, training
    from tfcompress.cli import compression
    from tfcompress.cli.flags import dataset_for_model, load_model_for_dataset
    from tfcompress.quantization import ec2t, scoring, ternary, ttq

    output = files.check_output(FLAGS.output, inputs=[FLAGS.model])
    sidecar = files.check_output(files.sidecar_path(output), inputs=[FLAGS.model])
    model = load_model_for_dataset(FLAGS.model)  # refuses a dataset that does not fit the model
    print(f"{FLAGS.model}: compression layers {compression.describe(model)}")
    keras.utils.set_random_seed(FLAGS.seed)
    # EC2T's retrain phase starts from the best quantization epoch on a holdout; TTQ trains on everything.
    holdout = FLAGS.holdout_fraction if FLAGS.method != "ttq" and FLAGS.retrain_epochs else 0.0
    train = dataset_for_model(model.input_shape, "train", augment=FLAGS.augment, seed=FLAGS.seed,
                              limit=FLAGS.train_limit, holdout_fraction=holdout)
    validation = dataset_for_model(model.input_shape, "holdout", holdout_fraction=holdout) if holdout else None
    test = dataset_for_model(model.input_shape, "test")
    float_accuracy = training.evaluate(model, test)["accuracy"]

    source = model
    masked = compression.weight_masked(model)
    if masked:  # ternarize the plain layers under the chosen WeightMask layers; keep the other masks
        selected = FLAGS.layers or ternary.default_selection(compression.strip_weight_masks(model),
                                                             shortcuts=FLAGS.ternarize_shortcuts)
        unwrapped = sorted(set(selected) & set(masked))
        model = compression.strip_weight_masks(model, unwrapped)
        kept = sorted(set(masked) - set(unwrapped))
        print(f"WeightMask: {', '.join(unwrapped) or 'none'} unwrapped before ternarization (the ternary "
              f"assignment decides their zeros); {', '.join(kept) or 'none'} kept (their zeros stay zero)")
    layers = FLAGS.layers or (selected if masked else None)

    start = time.time()
    stop = [training.StopOnNonFinite(f"{FLAGS.method} training")]
    options = {"wn_gradient": FLAGS.wn_gradient, "ternarize_shortcuts": FLAGS.ternarize_shortcuts}
    if FLAGS.method == "ttq":
        scale_init = "ones" if FLAGS.ttq_recipe == "official" else "mean"
        tern = ttq.ternarize(model, FLAGS.ttq_threshold, layers, scale_init=scale_init, **options)
        unnormalized = ttq.layers_without_batch_norm(tern)
        if FLAGS.ttq_recipe == "official" and unnormalized:
            print(f"warning: {', '.join(unnormalized)} not followed by BatchNormalization: the official TTQ recipe "
                  "(scales 1.0, SGD lr 0.1) assumes it and may diverge; --ttq_recipe=ec2t is the alternative")
        history = ttq.train(tern, train, FLAGS.epochs, threshold=FLAGS.ttq_threshold, recipe=FLAGS.ttq_recipe,
                            learning_rate=FLAGS.lr, centroid_learning_rate=FLAGS.centroid_lr, verbose=2,
                            callbacks=stop)
    else:
        mode = "prune" if FLAGS.method == "ecp" else "ternary"
        tern = ec2t.ternarize(model, FLAGS.ini_c_divr, layers, mode=mode, **options)
        history = ec2t.train(tern, train, FLAGS.epochs, FLAGS.retrain_epochs, lambda_max_divr=FLAGS.lambda_max_divr,
                             learning_rate=FLAGS.lr or ec2t.LEARNING_RATE, centroid_learning_rate=FLAGS.centroid_lr,
                             validation_data=validation, verbose=2, callbacks=stop)
    train_seconds = time.time() - start

    plain = export.strip(tern)
    accuracy = training.evaluate(plain, test)["accuracy"]
    codes = scoring.code_report(tern)
    score = scoring.micronet_score(plain, task=FLAGS.task)
    float_score = scoring.micronet_score(source, task=FLAGS.task)
    saved = plain if FLAGS.strip else tern
    files.save_model(saved, output)

    print(f"{'layer':<28} {'weights':>9} {'sparsity':>9} {'P(−)':>6} {'P(+)':>6} {'entropy b/w':>11}")
    for row in codes["layers"]:
        p_n, _, p_p = row["probabilities"]
        print(f"{row['name']:<28} {row['numel']:>9,} {row['sparsity']:>9.1%} {p_n:>6.3f} {p_p:>6.3f} "
              f"{row['entropy_bits_per_weight']:>11.3f}")
    ratio = codes["model_float32_bits"] / codes["model_entropy_coded_bits"]
    print(f"ternary layers: sparsity {codes['ternary_sparsity']:.1%}, "
          f"{codes['ternary_bits_per_weight']:.3f} bits/weight; "
          f"model kernels entropy-coded {ratio:.1f}× smaller than float32")
    print(f"MicroNet score ({FLAGS.task}): {score.score:.5f} (float model {float_score.score:.5f}); "
          f"params {score.total.params / 1e6:.4g} M, ops {score.total.ops / 1e6:.4g} M")
    print(f"test accuracy {float_accuracy:.4f} → {accuracy:.4f} ({FLAGS.method}) → {output} "
          f"({'plain layers' if FLAGS.strip else 'compression layers kept: ' + compression.describe(saved)})")
    files.write_json(sidecar, {
        "model": str(FLAGS.model), "method": FLAGS.method, "dataset": FLAGS.dataset,
        "float_test_accuracy": float_accuracy, "test_accuracy": accuracy,
        "codes": codes, "micronet": {"score": score.score, "float_score": float_score.score,
                                     "params": score.total.params, "ops": score.total.ops},
        "compression_layers": compression.compression_layers(saved),
        "history": history, "train_seconds": round(train_seconds, 1),
        "flags": {name: FLAGS[name].value for name in _OWN_FLAGS}, "tensorflow": tf.__version__,
    })


_OWN_FLAGS = (
    "model", "method", "dataset", "epochs", "retrain_epochs", "ini_c_divr", "lambda_max_divr", "ttq_threshold",
    "ttq_recipe", "wn_gradient", "lr", "centroid_lr", "holdout_fraction", "layers", "ternarize_shortcuts",
    "augment", "train_limit", "batch_size", "task", "seed", "strip", "output",
)


def run() -> None:
    from tfcompress.cli import app as cli_app

    cli_app.run(main)


if __name__ == "__main__":
    run()
