"""Tucker / SVD decomposition with a sparse residual (tf-hybrid-pruning's method) of any .keras model.

    python scripts/decompose.py --model=models/resnet20_fashion_mnist.keras --data_free --compression_factor=0.5 \
        --finetune_epochs=1 --output=/tmp/resnet20_tucker.keras
    python scripts/decompose.py --model=models/resnet20_fashion_mnist.keras --max_acc_loss=0.02 \
        --structure=block_8x8 --output=/tmp/resnet20_tucker_eval.keras      # evaluation-led (the default)
    python scripts/decompose.py --model=M.keras --data_free --cost=latency --device=litert --output=O.keras

Each Conv1D/2D/3D becomes 1×1 → k×k core → 1×1 (+ a parallel k×k convolution holding the sparse residual), each
pointwise convolution and Dense layer two layers (truncated SVD); depthwise convolutions are left as they are.
``--data_free`` chooses ranks and densities from the kernels alone (``--compression_factor``: the mean fraction
of each layer's cost kept); without it, from the accuracy on a holdout split of the training data
(``--max_acc_loss``, a fraction: 0.02 = 2 points, shared by the layers). Prints the per-layer ranks, densities,
MACs and params before and after, and the test accuracy before, after, and after ``--finetune_epochs``.
Writes OUTPUT (plain Keras layers) and OUTPUT.json (per-layer choices, profile, accuracies, flags), atomically.
"""

from __future__ import annotations

import math

from absl import flags

from tfcompress.cli.flags import define_dataset_flags
from tfcompress.latency.devices import DEVICE_HELP

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Input .keras model (logits output).")
flags.DEFINE_string("output", None, "Output .keras path; OUTPUT.json beside it.")
flags.DEFINE_bool("data_free", False, "Choose ranks and densities from the kernels alone (the reference's "
                  "fixed_params); default: evaluation-led on a holdout split (fixed_loss).")
flags.DEFINE_float("compression_factor", 0.5, "Data-free: the mean fraction of each layer's cost kept, in (0, 1).")
flags.DEFINE_float("max_acc_loss", 0.02, "Evaluation-led: total holdout accuracy loss allowed, a fraction "
                   "(0.02 = 2 points; the reference's default), shared equally by the layers.")
flags.DEFINE_string("structure", "unstructured", "Grouping of the sparse residual's entries: unstructured, filter, "
                    "channel or block_AxB (e.g. block_8x8).")
flags.DEFINE_float("sparsity_weight", 4.0, "MACs one sparse non-zero costs (reference: 4); inf: no sparse "
                   "residual (LiteRT runs one as a dense convolution: it adds latency and dense-stored params).")
flags.DEFINE_enum("cost", "macs", ["macs", "latency"], "What a candidate costs: its MACs, or its latency "
                  "measured alone on --device (LiteRT runs a sparse residual densely: measure).")
flags.DEFINE_string("device", "litert", DEVICE_HELP + " Used by --cost=latency and --measure.")
flags.DEFINE_enum("precision", "float32", ["float32", "int8"], "Precision of latency measurements.")
flags.DEFINE_integer("threads", 1, "Inference threads for latency measurements.", lower_bound=1)
flags.DEFINE_bool("measure", False, "Measure the model's latency on --device before and after.")
flags.DEFINE_list("layers", None, "Names of the layers to split (default: every layer that can be split).")
flags.DEFINE_float("holdout_fraction", 0.1, "Evaluation-led: stratified part of the training split the accuracy "
                   "is measured on (never trained on by --finetune_epochs).")
flags.DEFINE_integer("holdout_limit", 1000, "Evaluation-led: at most this many holdout images (each candidate "
                     "is one evaluation: fewer is faster, noisier).", lower_bound=1)
flags.DEFINE_integer("finetune_epochs", 0, "Fine-tune the decomposed model this many epochs (SGD, cosine).",
                     lower_bound=0)
flags.DEFINE_float("finetune_lr", 0.01, "Learning rate of --finetune_epochs.")
flags.DEFINE_integer("train_limit", None, "Fine-tune on the first N training examples only.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of shuffling and augmentation.")
define_dataset_flags()
flags.mark_flags_as_required(["model", "output"])
flags.register_validator("output", lambda v: v is None or v.endswith(".keras"), message="--output must end in .keras")
flags.register_validator("compression_factor", lambda v: 0.0 < v < 1.0,
                         message="--compression_factor is the mean fraction of each layer's cost kept: in (0, 1)")
flags.register_validator("max_acc_loss", lambda v: 0.0 <= v < 1.0,
                         message="--max_acc_loss is a fraction in [0, 1): 0.02 allows 2 points")
flags.register_validator("sparsity_weight", lambda v: v > 0, message="--sparsity_weight must be > 0")
flags.register_validator("holdout_fraction", lambda v: 0.0 < v < 1.0, message="--holdout_fraction: in (0, 1)")
flags.register_validator("finetune_lr", lambda v: v > 0, message="--finetune_lr must be > 0")

_OWN_FLAGS = (
    "model", "output", "data_free", "compression_factor", "max_acc_loss", "structure", "sparsity_weight", "cost",
    "device", "precision", "threads", "measure", "layers", "holdout_fraction", "holdout_limit", "finetune_epochs",
    "finetune_lr", "train_limit", "seed", "dataset", "batch_size",
)


def main(argv: list[str]) -> None:
    del argv
    import keras
    import numpy as np

    import tfcompress as tfc
    from tfcompress.cli.flags import data_report, dataset_for_model, has_data, load_model_for_dataset

    output = tfc.files.check_output(FLAGS.output, inputs=[FLAGS.model])
    tfc.decomposition.Structure.parse(FLAGS.structure)  # a bad structure fails before any work
    model = load_model_for_dataset(FLAGS.model)
    keras.utils.set_random_seed(FLAGS.seed)
    shape = model.input_shape
    if not FLAGS.data_free or FLAGS.finetune_epochs:
        dataset_for_model(shape, "test")  # refuses, before any work, a model that has no data
    test = dataset_for_model(shape, "test") if has_data() else None  # data-free without data: no accuracy
    holdout = None
    if not FLAGS.data_free:
        batches = dataset_for_model(shape, "holdout", holdout_fraction=FLAGS.holdout_fraction).unbatch()
        images, labels = zip(*batches.take(FLAGS.holdout_limit).as_numpy_iterator(), strict=True)
        holdout = (np.stack(images), np.stack(labels))
    result = tfc.decomposition.decompose(
        model, method="data_free" if FLAGS.data_free else "evaluation", compression_factor=FLAGS.compression_factor,
        max_acc_loss=FLAGS.max_acc_loss, holdout=holdout, structure=FLAGS.structure,
        sparsity_weight=FLAGS.sparsity_weight, cost=FLAGS.cost, device=FLAGS.device, precision=FLAGS.precision,
        threads=FLAGS.threads, layers=FLAGS.layers, progress=print,
    )
    print(result.table())
    decomposed = result.model
    report = {"before": _measurements(tfc, model, test)}
    report["decomposition"] = {"seconds": round(result.seconds, 2), "settings": result.settings,
                               "layers": [choice.to_dict() for choice in result.layers]}
    report["after"] = _measurements(tfc, decomposed, test)
    if test is not None:
        print(f"decomposed in {result.seconds:.1f} s: test accuracy {report['before']['accuracy']:.4f} → "
              f"{report['after']['accuracy']:.4f}")
    if FLAGS.finetune_epochs:
        train = dataset_for_model(shape, "train", holdout_fraction=FLAGS.holdout_fraction, augment=True,
                                  shuffle=True, seed=FLAGS.seed, limit=FLAGS.train_limit)
        steps = FLAGS.finetune_epochs * int(train.cardinality())
        tfc.training.compile_classifier(decomposed, tfc.training.sgd(FLAGS.finetune_lr, steps, "cosine"))
        decomposed.fit(train, epochs=FLAGS.finetune_epochs, verbose=2, callbacks=[tfc.training.StopOnNonFinite()])
        report["after"]["accuracy_fine_tuned"] = tfc.training.evaluate(decomposed, test)["accuracy"]
        print(f"fine-tuned {FLAGS.finetune_epochs} epochs: test accuracy {report['after']['accuracy_fine_tuned']:.4f}")
    for stage, subject in (("before", model), ("after", decomposed)):
        if FLAGS.measure:
            latency = tfc.latency.measure_model(subject, FLAGS.device, FLAGS.precision, threads=FLAGS.threads)
            report[stage]["latency_ms"] = latency.latency_ms
            report[stage]["host"] = latency.host
    _print_totals(report)
    tfc.files.save_model(decomposed, output)
    tfc.files.write_json(tfc.files.sidecar_path(output),
                         {**report, **data_report(),
                          "flags": {name: _json_value(FLAGS[name].value) for name in _OWN_FLAGS}})
    print(f"→ {output}")


def _json_value(value):
    return "inf" if isinstance(value, float) and math.isinf(value) else value  # --sparsity_weight=inf


def _measurements(tfc, model, test) -> dict:
    """Accuracy, and what the deployed float32 .tflite stores (params, bytes) and executes (dense MACs)."""
    total = tfc.profile.profile(model).total
    accuracy = tfc.training.evaluate(model, test)["accuracy"] if test is not None else None
    size = tfc.export.size_report(tfc.export.to_tflite(model))
    return {"accuracy": accuracy, "params": total.params, "nonzero_params": total.nonzero_params,
            "macs": total.macs, "tflite_bytes": size.tflite_bytes, "gzip_bytes": size.gzip_bytes}


def _print_totals(report: dict) -> None:
    """The deployed model's numbers — what the .tflite stores and LiteRT executes — then the headline from them."""
    before, after = report["before"], report["after"]
    print("the deployed model (float32 .tflite; a sparse residual is stored and run dense):")
    for key, label in (("params", "params (stored)"), ("nonzero_params", "non-zero params"),
                       ("macs", "MACs (executed, dense)"), ("tflite_bytes", ".tflite bytes"),
                       ("gzip_bytes", ".tflite gzip bytes"),
                       ("latency_ms", f"latency ms ({FLAGS.precision}, {FLAGS.device})")):
        if key in after:
            print(f"{label:<34} {before[key]:>14,.3f} → {after[key]:>14,.3f}  ×{after[key] / before[key]:.3f}"
                  if key == "latency_ms" else
                  f"{label:<34} {before[key]:>14,} → {after[key]:>14,}  ×{after[key] / max(before[key], 1):.3f}")
    params, macs = after["params"] / before["params"], after["macs"] / max(before["macs"], 1)
    verdict = "smaller and cheaper" if params < 1 and macs < 1 else "NOT smaller or cheaper as deployed"
    print(f"deployed: params ×{params:.3f}, MACs ×{macs:.3f}: {verdict}"
          + ("" if params < 1 and macs < 1 else " — its residuals run dense in LiteRT; --sparsity_weight=inf "
             "decomposes without them, --cost=latency prices them by measurement"))


def run() -> None:
    from tfcompress.cli import app

    app.run(main)


if __name__ == "__main__":
    run()
