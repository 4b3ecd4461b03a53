"""Strip training-only layers, convert to TFLite with post-training quantization, and report sizes.

Every compressed model leaves tfcompress through here: :func:`strip` turns tfcompress training layers (masks,
ternary and factorized layers: the ``strip`` rule of their spec, :mod:`tfcompress.specs`) and inference no-ops
(dropout, noise, augmentation) into plain Keras layers, then :func:`to_tflite` converts with
``tf.lite.TFLiteConverter``:

================  =====================================================================================
``float32``       no quantization
``float16``       weights stored as float16 (dequantized at load on CPUs)
``dynamic``       weights int8, activations float (dynamic-range quantization)
``int8``          full integer: weights and activations int8, calibrated on a representative dataset;
                  ``int8_io`` makes the model's input and output int8 too
================  =====================================================================================

``sparse=True`` adds ``EXPERIMENTAL_SPARSITY`` so that mostly-zero weights are stored in a sparse format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging as absl_logging
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # no public v2 API

from tfcompress import files, specs, training
from tfcompress.keras_graph import as_functional, iter_layers, replace_layers
from tfcompress.profile import kernel_weights

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")


class ConversionError(RuntimeError):
    """The TFLite converter failed; the message names the layers involved when it can."""


def _strip_rule(layer: keras.layers.Layer) -> Callable[..., Any] | None:
    spec = specs.spec_for(layer)
    return spec.strip if spec is not None else None


def strip(model: keras.Model) -> keras.Model:
    """Returns ``model`` with every layer whose spec has a strip rule replaced by plain Keras layers.

    A model with nothing to strip is returned as it is. Layers that are kept are shared with ``model`` (the
    result is meant for conversion, not for training).
    """
    if not any(_strip_rule(layer) for layer in iter_layers(model)):
        return model

    def replacement_for(layer: keras.layers.Layer) -> Callable[..., Any] | None:
        rule = _strip_rule(layer)
        return None if rule is None else (lambda *args, **kwargs: rule(layer, *args, **kwargs))

    return replace_layers(model, replacement_for, share_weights=True)  # a view for conversion only


# ------------------------------------------------------------------------------------------------ conversion


def load_keras_model(path: str | os.PathLike, custom_objects: dict[str, Any] | None = None) -> keras.Model:
    """Loads a ``.keras`` or HDF5 (``.h5``, Keras 2 or 3) model (safe mode, without its compile state) for any
    tfcompress program; ``custom_objects`` are the classes and functions its config names that Keras does not know.

    Every program that reads a model reads it here, so every one says the same thing about a file that is not
    one: what the file is instead (empty, a .tflite, a damaged archive, a SavedModel folder, ...), from its content,
    not its name. A subclassed model is refused: tfcompress edits the layer graph, which only a functional (or
    Sequential) model has.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a loadable functional Keras model (the message says what it is and what to do).
        training.NonFiniteError: a weight is NaN or infinite (the message names it).
    """
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        raise ValueError(f"{path} is a TensorFlow SavedModel, which has no Keras layer graph to compress; load the "
                         "model in the Keras that made it and save it with model.save('model.keras') (or .h5)")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a model file (.keras)")
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    kind = files.file_kind(path)
    if kind == "tflite":
        raise ValueError(f"{path} is already a .tflite flatbuffer; give the .keras model it was exported from")
    if kind not in ("keras", "hdf5"):  # .keras zips and legacy .h5 files
        raise ValueError(f"{path} could not be loaded as a Keras model: it is {files.KIND_NAMES[kind]}, not a "
                         ".keras file (a zip archive written by model.save)")
    if path.suffix not in (".keras", ".h5"):  # Keras itself insists on the suffix
        raise ValueError(f"{path} holds a Keras model but Keras loads only files named .keras; rename it")
    try:
        model = keras.models.load_model(path, compile=False, custom_objects=custom_objects)
    except Exception as error:  # zipfile, h5py and deserialization errors all mean "not a usable model"
        text = " ".join(str(error).split())
        hint = ("; it names a class or function Keras does not know: give the module that defines it with "
                "--custom_objects (custom_objects= in Python)" if "unknown" in text.lower() or "custom" in
                text.lower() else "")
        raise ValueError(f"{path} could not be loaded as a Keras model: {type(error).__name__}: {text[:400]}"
                         f"{hint}") from error
    if not isinstance(model, keras.Sequential) and not _is_functional(model):
        raise ValueError(f"{path} holds a subclassed model ({type(model).__name__}), whose layer graph Keras does not "
                         "record; rebuild it as a functional model (keras.Model(inputs, outputs)) with the same "
                         "layers and weights, and save that")
    training.check_finite(model, f"model file {str(path)!r}")
    return model


def _is_functional(model: keras.Model) -> bool:
    from keras.src.models.functional import Functional  # no public name for "a functional model" in Keras 3

    return isinstance(model, Functional)


def representative_samples(data: Any, num_samples: int) -> Iterator[np.ndarray]:
    """Yields up to ``num_samples`` single inputs (batch of 1, float32) from a dataset or an array.

    ``data`` may be a ``tf.data.Dataset`` of batches ``(x, y)`` or ``x``, a numpy array of inputs, or any
    iterable of such batches.
    """
    if isinstance(data, np.ndarray):
        data = [data]
    produced = 0
    for batch in data:
        inputs = batch[0] if isinstance(batch, tuple | list) else batch
        for sample in np.asarray(inputs, dtype=np.float32):
            yield sample[None]
            produced += 1
            if produced >= num_samples:
                return


def to_tflite(
    model: keras.Model,
    quantization: str = "float32",
    *,
    representative_data: Any = None,
    num_calibration_samples: int = 500,
    int8_io: bool = False,
    sparse: bool = False,
    output: str | os.PathLike | None = None,
) -> bytes:
    """Strips ``model`` and converts it to a ``.tflite`` flatbuffer; writes it atomically to ``output`` if given.

    Args:
        model: a functional or Sequential Keras model.
        quantization: "float32", "float16", "dynamic" or "int8" (full integer).
        representative_data: calibration inputs for "int8": a ``tf.data`` pipeline of batches, an array, or a
            function returning an iterator of input lists (the converter's ``representative_dataset``).
        num_calibration_samples: how many single examples calibrate the int8 ranges.
        int8_io: with "int8", make the model input and output int8 (else they stay float32).
        sparse: store mostly-zero weights in TFLite's sparse format (``EXPERIMENTAL_SPARSITY``).
        output: where to write the flatbuffer; never an existing model input.

    Raises:
        ValueError: an unknown quantization, int8 without calibration data, or int8_io without int8; a
            subclassed model.
        training.NonFiniteError: a weight is NaN or infinite (LiteRT would reproduce the NaN and parity
            would call it agreement).
        ConversionError: the converter failed; the message names the layers its error mentions.
    """
    as_functional(model)  # refuses a subclassed model by name: conversion traces its inputs
    training.check_finite(model, f"model {model.name!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if quantization == "int8" and representative_data is None:
        raise ValueError("int8 quantization needs representative_data (calibration inputs), e.g. the train split")
    if int8_io and quantization != "int8":
        raise ValueError("int8_io applies to quantization='int8' only")
    if num_calibration_samples < 1:
        raise ValueError(f"num_calibration_samples must be ≥ 1, got {num_calibration_samples}")
    plain = strip(model)
    with _quiet_tensorflow_logs():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen_inference_function(plain)], plain)
        # The function is frozen already: without this the converter saves and reloads the whole model as a
        # SavedModel first (4× slower, ResNet-20: 14 s instead of 3.6 s) for the same flatbuffer.
        converter.experimental_lower_to_saved_model = False
        optimizations = [tf.lite.Optimize.DEFAULT] if quantization != "float32" else []
        if sparse:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        converter.optimizations = optimizations
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            if callable(representative_data):  # yields the list of model inputs itself (several inputs)
                converter.representative_dataset = representative_data
            else:
                converter.representative_dataset = lambda: (
                    [sample] for sample in representative_samples(representative_data, num_calibration_samples)
                )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        try:
            flatbuffer = converter.convert()
        except Exception as error:
            raise ConversionError(_explain_conversion_error(plain, error)) from error
    if output is not None:
        files.write_bytes(output, flatbuffer)
    return flatbuffer


def _frozen_inference_function(model: keras.Model) -> Any:
    """The model's inference call (``training=False``) as a concrete function with weights folded in.

    Converting this is 3× faster on large models than going through ``model.export`` + a SavedModel
    (DenseNet121: 17 s instead of 56 s here) and gives the same flatbuffer contents; the batch dimension stays
    dynamic so that evaluation can feed large batches.
    """
    specs = [tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=t.name) for t in model.inputs]
    call = tf.function(lambda *inputs: model(inputs[0] if len(inputs) == 1 else list(inputs), training=False))
    return convert_variables_to_constants_v2(call.get_concrete_function(*specs))


def _layers_using_ops(model: keras.Model, op_types: set[str]) -> list[str]:
    """Names of the layers whose traced call contains one of ``op_types`` (the frozen graph lost the scopes)."""
    found = []
    for layer in iter_layers(model):
        if isinstance(layer, keras.Model | keras.layers.InputLayer):
            continue
        try:
            spec = keras.tree.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), layer.input)
            graph = tf.function(lambda x, layer=layer: layer(x, training=False)).get_concrete_function(spec).graph
        except Exception:  # a layer that cannot be traced alone (several call sites, odd inputs)
            continue
        if any(op.type in op_types for op in graph.get_operations()):
            found.append(layer.name)
    return found


@contextlib.contextmanager
def _quiet_tensorflow_logs() -> Iterator[None]:
    """Tracing and conversion log INFO lines per model; keep warnings only."""
    logger = logging.getLogger("tensorflow")
    level, verbosity = logger.level, absl_logging.get_verbosity()
    logger.setLevel(max(level, logging.WARNING))
    absl_logging.set_verbosity(min(verbosity, absl_logging.WARNING))  # absl: smaller is quieter
    try:
        yield
    finally:
        logger.setLevel(level)
        absl_logging.set_verbosity(verbosity)


def _explain_conversion_error(model: keras.Model, error: Exception) -> str:
    message = str(error)
    ops = sorted(set(re.findall(r"'tf\.(\w+)'", message)))
    mentioned = _layers_using_ops(model, set(ops)) if ops else []
    where = f"layer(s) {', '.join(repr(n) for n in mentioned)}" if mentioned else "a layer it did not name"
    hint = (
        "replace or remove that layer (use standard Keras layers, or give a training-only layer's spec a strip "
        "rule: tfcompress.specs.extend(LayerClass, strip=...))"
    )
    unsupported = f" unsupported op(s) {', '.join('tf.' + op for op in ops)};" if ops else ""
    return f"TFLite conversion failed in {where}:{unsupported} {hint}. Converter said: {message[:1500]}"


# -------------------------------------------------------------------------------------------------- sizes


@dataclasses.dataclass(frozen=True)
class SizeReport:
    """How big a model is on disk and how small its weights could be coded.

    Attributes:
        tflite_bytes: the flatbuffer's size.
        gzip_bytes: the flatbuffer gzipped (level 9): what zeros and repeated values buy on the wire.
        kernel_entropy_bits: Σ over kernels of numel · H(values), H the Shannon entropy of the kernel's
            empirical value distribution: the ideal entropy-coded size of the kernels. It is meaningful for
            sparse and ternary kernels; for dense float kernels, whose values are all distinct, it is just
            numel · log2(numel) and no real code reaches it.
        kernel_count: number of kernel weights counted in the entropy.
    """

    tflite_bytes: int
    gzip_bytes: int
    kernel_entropy_bits: float | None = None
    kernel_count: int | None = None

    @property
    def entropy_coded_bytes(self) -> float | None:
        return None if self.kernel_entropy_bits is None else self.kernel_entropy_bits / 8

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "entropy_coded_bytes": self.entropy_coded_bytes}


def entropy_bits(values: np.ndarray) -> float:
    """numel · H(values) in bits, H the entropy of the empirical distribution of ``values``."""
    _, counts = np.unique(values, return_counts=True)
    probabilities = counts / counts.sum()
    return float(-(counts * np.log2(probabilities)).sum())


def kernels(model: keras.Model) -> Iterable[tuple[str, np.ndarray]]:
    """(layer name, kernel) for every kernel of every layer, kernels as :func:`profile.kernel_weights` defines
    them (nested models are walked through their own layers, so nothing is counted twice)."""
    for layer in iter_layers(model):
        if not isinstance(layer, keras.Model):
            for kernel in kernel_weights(layer):
                yield layer.name, kernel


def size_report(flatbuffer: bytes | str | os.PathLike, model: keras.Model | None = None) -> SizeReport:
    """Sizes of a ``.tflite`` (bytes or path), plus the kernels' entropy-coded size when ``model`` is given."""
    payload = flatbuffer if isinstance(flatbuffer, bytes) else Path(flatbuffer).read_bytes()
    entropy = count = None
    if model is not None:
        stripped = strip(model)
        weights = [kernel for _, kernel in kernels(stripped)]
        entropy = sum(entropy_bits(w) for w in weights)
        count = sum(w.size for w in weights)
    return SizeReport(len(payload), len(gzip.compress(payload, compresslevel=9)), entropy, count)
