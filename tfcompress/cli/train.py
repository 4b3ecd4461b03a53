"""Trains a zoo model (or continues a saved one) with SGD + Nesterov; checkpoints every epoch.

    python scripts/train.py --model=resnet20 --dataset=fashion_mnist --image_size=32 --epochs=30 \
        --output=models/resnet20_fashion_mnist.keras

Writes ``OUTPUT`` (.keras, without optimizer state) and ``OUTPUT.json`` (test accuracy, params, flags, time),
both atomically. ``OUTPUT.ckpt/`` holds the last epoch's weights and optimizer state (and the one before, in
case a kill truncates the latest) until both outputs are written, so that a run killed at any point, even
after its last epoch, loses at most the epoch under way: ``--resume`` continues from it. A loss or weights
that turn NaN stop the run with an error naming the epoch and batch.

With ``--teacher=T.keras`` the model is trained by knowledge distillation from T (:class:`tfcompress.distill.
Distiller`: ``--alpha`` × the labels' cross-entropy + (1 − ``--alpha``) × T² × the cross-entropy of the teacher's
outputs softened by ``--temperature``); ``scripts/distill.py`` is this program with ``--teacher`` required, e.g.
to fine-tune a pruned model from its original:

    python scripts/distill.py --init_model=/tmp/pruned.keras --teacher=models/resnet20_fashion_mnist.keras \
        --epochs=5 --lr=0.01 --output=/tmp/pruned_kd.keras
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

from absl import app, flags, logging

from tfcompress.cli.flags import define_builtin_dataset_flags, define_image_size_flag, define_json_flag

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name, e.g. lenet5, resnet20, wrn-40-2, mobilenet_v2, micronet.")
flags.DEFINE_string("init_model", None, "A .keras model to continue training instead of building --model.")
flags.DEFINE_enum("channels", None, ["1", "3"], "Repeat grayscale to 3 channels with 3.")
flags.DEFINE_integer("epochs", 10, "Training epochs.", lower_bound=1)
flags.DEFINE_float("lr", 0.1, "Initial learning rate.", lower_bound=0.0)
flags.DEFINE_enum("schedule", "cosine", ["cosine", "step", "constant"], "Learning-rate schedule.")
flags.DEFINE_float("weight_decay", 5e-4, "Decoupled weight decay on kernels.", lower_bound=0.0)
flags.DEFINE_float("momentum", 0.9, "SGD momentum (Nesterov).", lower_bound=0.0)
flags.DEFINE_bool("augment", True, "Random crop (pad 4) and horizontal flip.")
flags.DEFINE_float("holdout", 0.0, "Fraction of the training split held out (not trained on).")
flags.DEFINE_integer("train_limit", None, "Train on the first N examples only (quick runs).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Random seed (weights, shuffling, augmentation).")
flags.DEFINE_string("output", None, "Output .keras path.")
flags.DEFINE_bool("resume", False, "Continue an interrupted run from OUTPUT.ckpt/.")
flags.DEFINE_string("teacher", None, "A trained .keras model to distil from (same input and classes).")
flags.DEFINE_float("alpha", 0.1, "Distillation: weight of the labels' cross-entropy; 1 − alpha weighs the "
                   "teacher's (thesis code default 0.1; its report's best 0.2).")
flags.DEFINE_float("temperature", 5.0, "Distillation temperature T (thesis code default 5; its report's best 2).")

define_image_size_flag()
define_builtin_dataset_flags()
define_json_flag("model_args", "JSON keyword arguments for the zoo builder, e.g. '{\"width_multiplier\": 0.5}'.")
flags.mark_flag_as_required("output")
flags.register_validator("holdout", lambda v: 0.0 <= v < 1.0, message="--holdout must be in [0, 1)")
flags.register_validator("output", lambda v: v is None or v.endswith(".keras"), message="--output must end in .keras")
flags.register_validator("alpha", lambda v: 0.0 <= v <= 1.0, message="--alpha must be in [0, 1]")
flags.register_validator("temperature", lambda v: v > 0, message="--temperature must be > 0")
flags.register_multi_flags_validator(
    ["model", "init_model"], lambda f: bool(f["model"]) != bool(f["init_model"]),
    message="give exactly one of --model (build from the zoo) or --init_model (continue a .keras file)",
)


def main(argv: list[str]) -> None:
    del argv
    import keras

    import tfcompress as tfc

    inputs = [FLAGS.init_model, FLAGS.teacher]
    output = tfc.files.check_output(FLAGS.output, inputs=inputs)
    sidecar = tfc.files.check_output(tfc.files.sidecar_path(output), inputs=inputs)
    checkpoint_dir = tfc.files.check_output_folder(output.with_name(output.name + ".ckpt"))
    if checkpoint_dir.exists() and not FLAGS.resume:
        raise app.UsageError(
            f"{checkpoint_dir} holds an interrupted run: pass --resume to continue it, or delete the folder."
        )
    if FLAGS.resume and not checkpoint_dir.exists():
        raise app.UsageError(f"--resume given but there is no checkpoint at {checkpoint_dir}")

    keras.utils.set_random_seed(FLAGS.seed)
    spec = tfc.data.get_spec(FLAGS.dataset)
    channels = int(FLAGS.channels) if FLAGS.channels else None
    if FLAGS.init_model:  # a dynamic (None, None, C) input stays dynamic; the data come at the dataset's size
        model = tfc.export.load_keras_model(FLAGS.init_model)
        options = tfc.data.pipeline_options_for(model.input_shape, FLAGS.dataset)
    else:
        options = {"image_size": FLAGS.image_size, "channels": channels}
    common = {"batch_size": FLAGS.batch_size, "data_dir": FLAGS.data_dir, **options}
    train = tfc.data.load(  # before building: the data options are checked first
        FLAGS.dataset, "train", holdout_fraction=FLAGS.holdout, augment=FLAGS.augment, seed=FLAGS.seed,
        limit=FLAGS.train_limit, **common,
    )
    test = tfc.data.load(FLAGS.dataset, "test", **common)
    if not FLAGS.init_model:
        shape = tfc.data.input_shape(FLAGS.dataset, **options)
        model = tfc.zoo.build(FLAGS.model, shape, spec.num_classes, **json.loads(FLAGS.model_args))
    student = model
    if FLAGS.teacher:  # what fit trains; `student` is what is evaluated and saved
        teacher = tfc.export.load_keras_model(FLAGS.teacher)
        model = tfc.distill.Distiller(student, teacher, alpha=FLAGS.alpha, temperature=FLAGS.temperature)
        logging.info("distilling from %s (alpha %g, T %g)", FLAGS.teacher, FLAGS.alpha, FLAGS.temperature)
    steps_per_epoch = int(train.cardinality())
    optimizer = tfc.training.sgd(
        FLAGS.lr, FLAGS.epochs * steps_per_epoch, FLAGS.schedule, FLAGS.momentum, FLAGS.weight_decay
    )
    if FLAGS.teacher:
        model.compile(optimizer)
    else:
        tfc.training.compile_classifier(model, optimizer)
    student.summary(print_fn=logging.info)

    resumed_from_epoch = _restore_point(model, checkpoint_dir) if FLAGS.resume else 0
    if resumed_from_epoch:
        logging.info("resuming %s after epoch %d", checkpoint_dir, resumed_from_epoch)
    # Kept when fit ends (Keras deletes it then): the model is not saved yet. Removed below, once it is.
    backup = keras.callbacks.BackupAndRestore(str(checkpoint_dir), double_checkpoint=True, delete_checkpoint=False)
    start = time.time()
    try:  # StopOnNonFinite first: a diverged epoch must not become the checkpoint
        history = model.fit(train, epochs=FLAGS.epochs, validation_data=test, verbose="auto", shuffle=False,
                            callbacks=[tfc.training.StopOnNonFinite(), backup])  # tf.data shuffles
    except tfc.training.NonFiniteError as error:
        kept = _checkpoint_epoch(checkpoint_dir)
        raise tfc.training.NonFiniteError(f"{error}. {checkpoint_dir} keeps epoch {kept}: --resume continues from "
                                          "it (with the new flags), or delete it" if kept else str(error)) from None
    train_seconds = time.time() - start

    metrics = tfc.training.evaluate(student, test)
    tfc.files.save_model(student, output)
    report = {
        "model": FLAGS.model or Path(FLAGS.init_model).name,
        "dataset": FLAGS.dataset,
        "input_shape": list(student.input_shape[1:]),
        "test_accuracy": metrics["accuracy"],
        "test_loss": metrics["loss"],
        "params": student.count_params(),
        "trainable_params": sum(int(w.numpy().size) for w in student.trainable_weights),
        "epochs": FLAGS.epochs,
        "resumed_from_epoch": resumed_from_epoch,
        "train_seconds_this_run": round(train_seconds, 1),
        "history": {k: [round(float(x), 5) for x in v] for k, v in history.history.items()},
        "flags": {name: FLAGS[name].value for name in _OWN_FLAGS},
        "versions": {"tensorflow": _tf_version(), "keras": keras.__version__, "tfcompress": tfc.__version__},
        "host": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "file_bytes": output.stat().st_size,
    }
    tfc.files.write_json(sidecar, report)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # only now: both outputs are written
    print(f"test accuracy {metrics['accuracy']:.4f}  params {report['params']:,}  → {output}")


_OWN_FLAGS = (
    "model", "init_model", "model_args", "dataset", "data_dir", "image_size", "channels", "epochs", "batch_size",
    "lr", "schedule", "weight_decay", "momentum", "augment", "holdout", "train_limit", "seed", "output", "resume",
    "teacher", "alpha", "temperature",
)


def _checkpoint_epoch(checkpoint_dir: Path) -> int:
    try:
        return int(json.loads((checkpoint_dir / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _restore_point(model, checkpoint_dir: Path) -> int:
    """The epoch ``checkpoint_dir`` resumes after, checked by loading it into ``model`` (compiled); 0 when
    nothing was saved yet. A latest checkpoint that a kill truncated is replaced by the previous one
    (``double_checkpoint``), as ``BackupAndRestore`` would do for some errors but not for all (a truncated JSON).

    Raises:
        ValueError: neither checkpoint loads (the message says why, and what to do).
    """
    weights, metadata = checkpoint_dir / "latest.weights.h5", checkpoint_dir / "training_metadata.json"
    previous = (Path(f"{weights}.bkp"), Path(f"{metadata}.bkp"))
    if not any(path.exists() for path in (weights, metadata, *previous)):
        return 0  # killed before the first epoch ended
    if not model.optimizer.built:  # the checkpoint holds the optimizer state too
        model.optimizer.build(model.trainable_variables)
    problems = []
    for attempt in ("latest", "previous"):
        if attempt == "previous":  # Keras loads only files named *.weights.h5: the copy takes the latest's name
            if not all(path.exists() for path in previous):
                break
            shutil.copyfile(previous[0], weights)
            shutil.copyfile(previous[1], metadata)
        try:
            epoch = int(json.loads(metadata.read_text())["epoch"])
            model.load_weights(weights)
            return epoch
        except Exception as error:  # h5py, JSON and shape errors alike: this copy is not usable
            problems.append(f"{attempt}: {type(error).__name__}: {' '.join(str(error).split())[:160]}")
    raise ValueError(f"--resume: the checkpoint in {checkpoint_dir} is damaged ({'; '.join(problems)}); delete the "
                     "folder to train from the start")


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def run() -> None:
    from tfcompress.cli import app as cli_app

    cli_app.run(main)


if __name__ == "__main__":
    run()
