"""The tensorflow-model-optimization side of ``benchmarks/baselines.py``, in a process of its own.

    TF_USE_LEGACY_KERAS=1 python benchmarks/baselines_tfmot.py --job=WORK/resnet20/budget-…/tfmot/job.json

tfmot works only on legacy Keras 2 (``tf_keras``) and importing it switches the whole process to it, so it never
runs in a process that holds Keras 3 models: ``baselines.py`` writes the model as a plain description
(``architecture.json``: each layer's class, config and inputs, in topological order) and its weights
(``weights.npz``) and starts this program, which

1. rebuilds the architecture with ``tf_keras`` layers, sets the same weights and checks the outputs on a batch
   against Keras 3's (``parity.json``; it stops when they differ by more than the job's tolerance);
2. converts the rebuilt model to a float32 ``.tflite`` (a check that both converters give the same model);
3. for each sparsity: ``prune_low_magnitude`` with ``PolynomialDecay`` from 0 to the sparsity over the first
   ``pruning_end_fraction`` of the fine-tune, then ``strip_pruning``; ``.tflite`` float32 dense, float32 with
   ``EXPERIMENTAL_SPARSITY`` and int8 post-training quantization;
4. quantization-aware training (``quantize_model``) with the same fine-tune, converted to int8.

Fine-tuning is the one of tfcompress's ``finetune`` stage: SGD, Nesterov momentum 0.9, cosine decay from ``lr``,
decoupled weight decay 5e-4 on kernels, on the same ``tfcompress.data`` pipeline (the job gives its arguments).
Every variant's ``.tflite`` files and its JSON row (Keras accuracy, sparsity, seconds) are written to the job's
folder as it finishes; a variant whose row holds the job's key is not run again, so a killed run resumes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("job", None, "job.json written by benchmarks/baselines.py.", required=True)

# Keras 3 configuration keys with no tf_keras counterpart that are harmless at these values (LoRA, quantization
# of Keras 3's own); any other unknown key stops the rebuild.
_DEFAULT_VALUES = (None, False, 0, "", (), [], {})


def main(argv: list[str]) -> None:
    del argv
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        sys.exit("baselines_tfmot.py: run with TF_USE_LEGACY_KERAS=1 (benchmarks/baselines.py does): tfmot needs "
                 "legacy tf_keras")
    logging.set_verbosity(logging.WARNING)  # tf_keras logs every SavedModel the converter writes at INFO
    job = json.loads(Path(FLAGS.job).read_text())
    run_job(job)


def run_job(job: dict[str, Any]) -> None:
    """Runs every variant of ``job`` not finished before; each writes its row (a JSON file) last."""
    import numpy as np
    import tf_keras

    folder = Path(job["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    architecture = json.loads(Path(job["architecture"]).read_text())
    with np.load(job["weights"]) as archive:
        weights = {key: archive[key] for key in archive.files}
    parity = check_parity(architecture, weights, job["parity"], job["parity_tolerance"])
    write_json(folder / "parity.json", {**parity, "versions": versions()})
    if not parity["passed"]:
        sys.exit(f"baselines_tfmot.py: the tf_keras rebuild of {architecture['name']} differs from the Keras 3 model "
                 f"by {parity['max_abs_diff']:.3g} (tolerance {job['parity_tolerance']:g}) on {parity['examples']} "
                 "examples: weights were not transferred faithfully")
    print(f"tf_keras rebuild of {architecture['name']}: outputs within {parity['max_abs_diff']:.2g} of Keras 3",
          flush=True)
    if job.get("parity_only"):
        return

    data = load_data_module(Path(job["repo"]))
    train = data.load(**job["data"]["train"])
    test = data.load(**job["data"]["test"])
    with np.load(job["calibration"]) as archive:
        calibration = archive["images"].astype(np.float32)
    steps_per_epoch = int(train.cardinality())
    total_steps = job["finetune_epochs"] * steps_per_epoch

    def fresh_model() -> tf_keras.Model:
        tf_keras.utils.set_random_seed(job["seed"])
        return rebuild(architecture, weights)

    def done(name: str) -> dict[str, Any] | None:
        try:
            saved = json.loads((folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None
        files_present = all((folder / variant["tflite"]).is_file() for variant in saved.get("variants", []))
        return saved if saved.get("key") == job["key"] and files_present else None

    if done("rebuild") is None:
        model = fresh_model()
        write_tflite(folder / "rebuild_float32.tflite", convert(model))
        write_json(folder / "rebuild.json", {"key": job["key"], "variants": [{
            "name": "rebuild", "technique": "tf_keras rebuild (no compression)", "precision": "float32",
            "tflite": "rebuild_float32.tflite", "keras_accuracy": accuracy(model, test),
            **weight_counts(model)}]})

    for sparsity in job["sparsities"]:
        name = f"prune_{sparsity:g}"
        if done(name) is not None:
            print(f"tfmot {name}: done before", flush=True)
            continue
        print(f"tfmot {name}: prune_low_magnitude to {sparsity:.0%}, {job['finetune_epochs']} epoch(s) × "
              f"{steps_per_epoch} steps", flush=True)
        tick = time.monotonic()
        stripped, schedule = prune_and_finetune(fresh_model(), train, sparsity, total_steps, job)
        seconds = time.monotonic() - tick
        keras_accuracy = accuracy(stripped, test)
        counts = weight_counts(stripped)
        variants = []
        for suffix, technique, precision, options in (
                ("float32", "magnitude pruning (dense .tflite)", "float32", {}),
                ("float32_sparse", "magnitude pruning (EXPERIMENTAL_SPARSITY .tflite)", "float32", {"sparse": True}),
                ("int8", "magnitude pruning + int8 PTQ", "int8", {"calibration": calibration})):
            path = f"{name}_{suffix}.tflite"
            write_tflite(folder / path, convert(stripped, **options))
            variants.append({"name": f"{name}_{suffix}", "technique": technique, "precision": precision,
                             "target_sparsity": sparsity, "tflite": path, "keras_accuracy": keras_accuracy,
                             **counts})
        write_json(folder / f"{name}.json", {"key": job["key"], "schedule": schedule,
                                             "train_seconds": round(seconds, 1), "variants": variants})

    if job["qat"] and done("qat") is None:
        print(f"tfmot qat: quantize_model, {job['finetune_epochs']} epoch(s) × {steps_per_epoch} steps", flush=True)
        tick = time.monotonic()
        import tensorflow_model_optimization as tfmot

        quantized = tfmot.quantization.keras.quantize_model(fresh_model())
        compile_for_finetune(quantized, total_steps, job)
        quantized.fit(train, epochs=job["finetune_epochs"], verbose=2)
        seconds = time.monotonic() - tick
        write_tflite(folder / "qat_int8.tflite", convert(quantized, optimize=True))
        write_json(folder / "qat.json", {"key": job["key"], "train_seconds": round(seconds, 1), "variants": [{
            "name": "qat_int8", "technique": "quantization-aware training (int8)", "precision": "int8",
            "tflite": "qat_int8.tflite", "keras_accuracy": accuracy(quantized, test),
            **weight_counts(fresh_model())}]})


# ------------------------------------------------------------------------------------------------ rebuilding


def rebuild(architecture: Mapping[str, Any], weights: Mapping[str, Any]) -> Any:
    """The functional ``tf_keras.Model`` that ``architecture`` (see ``baselines.describe_architecture``) describes,
    each layer built from its Keras 3 config and given its weights.

    Raises:
        ValueError: a layer class tf_keras does not have, a config option it does not know (at a non-default
            value), or weights of another shape (the message names the layer).
    """
    import tf_keras

    tensors: dict[str, Any] = {}
    for entry in architecture["layers"]:
        name, class_name, config = entry["name"], entry["class_name"], dict(entry["config"])
        if class_name == "InputLayer":
            tensors[name] = tf_keras.Input(shape=config["batch_shape"][1:], dtype=config.get("dtype") or "float32",
                                           name=name)
            continue
        cls = getattr(tf_keras.layers, class_name, None)
        if not isinstance(cls, type):
            raise ValueError(f"layer {name!r}: tf_keras has no layer class {class_name!r} (strip tfcompress layers "
                             "before comparing with tfmot)")
        layer = cls(**tf_keras_config(cls, config, name))
        inputs = [tensors[source] for source in entry["inputs"]]
        tensors[name] = layer(inputs if entry["as_list"] else inputs[0])
        arrays = [weights[key] for key in entry["weights"]]
        expected = [tuple(w.shape) for w in layer.weights]
        if [tuple(a.shape) for a in arrays] != expected:
            raise ValueError(f"layer {name!r} ({class_name}): tf_keras weights {expected}, Keras 3 weights "
                             f"{[tuple(a.shape) for a in arrays]}")
        layer.set_weights(arrays)
    outputs = [tensors[name] for name in architecture["outputs"]]
    return tf_keras.Model([tensors[name] for name in architecture["inputs"]],
                          outputs[0] if len(outputs) == 1 else outputs, name=architecture["name"])


def tf_keras_config(cls: type, config: Mapping[str, Any], layer_name: str) -> dict[str, Any]:
    """``config`` reduced to the constructor arguments of the tf_keras class ``cls``.

    Initializers are left out (the weights are set after building, and Keras 3 initializer configs carry
    arguments tf_keras does not take); a Keras 3 option tf_keras does not know is dropped at its default value
    (LoRA rank, Keras 3 quantization) and refused otherwise.
    """
    accepted = {"name", "trainable", "dtype"}
    for klass in cls.__mro__:  # e.g. BatchNormalization passes renorm_* on to its base class as **kwargs
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    kept = {}
    for key, value in config.items():
        if key.endswith("_initializer"):
            continue
        if key in accepted:
            kept[key] = value
        elif not any(value == default and type(value) is type(default) for default in _DEFAULT_VALUES):
            raise ValueError(f"layer {layer_name!r} ({cls.__name__}): option {key}={value!r} has no tf_keras "
                             "counterpart")
    return kept


def check_parity(architecture: Mapping[str, Any], weights: Mapping[str, Any], parity_path: str | os.PathLike,
                 tolerance: float) -> dict[str, Any]:
    """Rebuilds the model and compares its float32 outputs with the Keras 3 outputs saved in ``parity_path``."""
    import numpy as np

    model = rebuild(architecture, weights)
    with np.load(parity_path) as archive:
        inputs, expected = archive["inputs"], archive["outputs"]
    outputs = np.asarray(model(inputs, training=False))
    difference = float(np.max(np.abs(outputs - expected)))
    return {"max_abs_diff": difference, "tolerance": tolerance, "passed": bool(difference <= tolerance),
            "examples": len(inputs), "max_abs_output": float(np.max(np.abs(expected)))}


# ---------------------------------------------------------------------------------------- training, tfmot


def compile_for_finetune(model: Any, total_steps: int, job: Mapping[str, Any]) -> None:
    """tfcompress's fine-tune optimizer (``training.sgd``) in tf_keras: SGD, Nesterov momentum 0.9, cosine decay
    from ``lr`` to 0 over the fine-tune, decoupled weight decay on kernels only (not biases, γ, β)."""
    import tf_keras

    schedule = tf_keras.optimizers.schedules.CosineDecay(job["lr"], decay_steps=max(1, total_steps), alpha=0.0)
    optimizer = tf_keras.optimizers.SGD(learning_rate=schedule, momentum=0.9, nesterov=True,
                                        weight_decay=job["weight_decay"] or None)
    if job["weight_decay"]:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(optimizer=optimizer, loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


def pruning_schedule(sparsity: float, total_steps: int, end_fraction: float) -> dict[str, int | float]:
    """``PolynomialDecay`` arguments: from 0 at step 0 to ``sparsity`` at ``end_fraction`` of the fine-tune.

    The mask is updated every ``frequency`` steps: tfmot's default 100, but at least 10 updates on a short
    fine-tune; ``end_step`` is a multiple of it, else the last update would fall short of the target.
    """
    target_end = max(1, int(end_fraction * total_steps))
    frequency = max(1, min(100, target_end // 10))
    end_step = max(frequency, target_end // frequency * frequency)
    return {"initial_sparsity": 0.0, "final_sparsity": float(sparsity), "begin_step": 0, "end_step": end_step,
            "frequency": frequency}


def prune_and_finetune(model: Any, train: Any, sparsity: float, total_steps: int,
                       job: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """tfmot magnitude pruning of every Conv2D and Dense during the fine-tune; the stripped model and schedule."""
    import tensorflow_model_optimization as tfmot

    schedule = pruning_schedule(sparsity, total_steps, job["pruning_end_fraction"])
    pruned = tfmot.sparsity.keras.prune_low_magnitude(
        model, pruning_schedule=tfmot.sparsity.keras.PolynomialDecay(**schedule))
    compile_for_finetune(pruned, total_steps, job)
    pruned.fit(train, epochs=job["finetune_epochs"], verbose=2, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(pruned), schedule


def accuracy(model: Any, test: Any) -> float:
    """Top-1 accuracy of a tf_keras model's logits on the batched test split."""
    import numpy as np

    correct = total = 0
    for images, labels in test:
        logits = np.asarray(model(images, training=False))
        correct += int(np.sum(np.argmax(logits, axis=-1) == np.asarray(labels)))
        total += len(labels)
    return correct / total


def weight_counts(model: Any) -> dict[str, Any]:
    """Parameters, non-zero parameters, and the sparsity of the Conv2D/Dense kernels (what tfmot prunes)."""
    import numpy as np

    params = nonzero = kernel_size = kernel_zeros = 0
    for layer in model.layers:
        for weight in layer.weights:
            values = np.asarray(weight)
            params += values.size
            nonzero += int(np.count_nonzero(values))
            if weight.name.split("/")[-1].startswith("kernel"):
                kernel_size += values.size
                kernel_zeros += int(values.size - np.count_nonzero(values))
    return {"params": params, "nonzero_params": nonzero,
            "kernel_sparsity": round(kernel_zeros / kernel_size, 4) if kernel_size else None}


def convert(model: Any, *, sparse: bool = False, calibration: Any = None, optimize: bool = False) -> bytes:
    """A ``.tflite`` of a tf_keras model: float32 (``EXPERIMENTAL_SPARSITY`` if ``sparse``), full-integer int8
    calibrated on ``calibration`` (float input and output, as ``tfcompress.export.to_tflite``), or a QAT model
    (``optimize``: its ranges are learnt)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = []
    if calibration is not None or optimize:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if calibration is not None:
        converter.representative_dataset = lambda: ([sample[None]] for sample in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


# ---------------------------------------------------------------------------------------------- plumbing


def load_data_module(repo: Path) -> Any:
    """``tfcompress/data.py`` alone: the same pipelines as the main process. ``import tfcompress`` would load
    Keras 3 (and refuses under TF_USE_LEGACY_KERAS); the data module needs only TensorFlow and NumPy."""
    name = "_tfcompress_data_for_tfmot"
    spec = importlib.util.spec_from_file_location(name, repo / "tfcompress" / "data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def versions() -> dict[str, str]:
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    return {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__,
            "tensorflow_model_optimization": getattr(tfmot, "__version__", "?")}


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that replaces it when the block ends without error (tfcompress.files
    imports Keras 3, so not here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    os.unlink(temporary)  # written anew below: the usual permissions, not mkstemp's 0600
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_json(path: Path, payload: Any) -> None:
    with _atomic(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=1) + "\n")


def write_tflite(path: Path, flatbuffer: bytes) -> None:
    with _atomic(path) as temporary:
        temporary.write_bytes(flatbuffer)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
