"""Running ``.tflite`` models in LiteRT: predictions, accuracy, and parity with the Keras model.

Inference goes through ``ai_edge_litert.interpreter`` (``tf.lite.Interpreter`` is deprecated). int8 inputs
and outputs are quantized and dequantized with the tensors' scale and zero point, so callers always pass
and get float arrays, whatever the export mode.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfcompress import files, training
from tfcompress import progress as progress_bars
from tfcompress.training import NonFiniteError

# A TFLite model is a FlatBuffer whose file identifier (bytes 4..8) is "TFL3" (schema.fbs: file_identifier).
TFLITE_IDENTIFIER = b"TFL3"


def read_tflite(source: bytes | str | os.PathLike) -> bytes:
    """The flatbuffer bytes of ``source`` (bytes or a path), checked to really be a ``.tflite``."""
    if isinstance(source, bytes):
        payload, name, what = source, "the given bytes", ""
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"TFLite file {str(path)!r} does not exist")
        payload, name, what = path.read_bytes(), str(path), f" but {files.describe_file(path)}"
    if payload[4:8] != TFLITE_IDENTIFIER:
        raise ValueError(f"{name} is not a TFLite flatbuffer (no 'TFL3' identifier){what}; export one with "
                         "scripts/export.py")
    return payload


def open_interpreter(flatbuffer: bytes, num_threads: int = 1) -> tuple[Interpreter, str]:
    """A LiteRT interpreter for ``flatbuffer`` with XNNPACK (the default delegate) when it can run the model,
    else with the built-in kernels only; returns it with ``"xnnpack"`` or ``"builtin"``.

    XNNPACK in ai-edge-litert 2.3 fails to prepare sparse-encoded *quantized* kernels ("failed to delegate
    FULLY_CONNECTED node"), which the built-in kernels run; one probe invocation decides.
    """
    interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
    try:
        interpreter.allocate_tensors()
        interpreter.invoke()  # on zeros: a delegate that cannot prepare a node fails here
        return interpreter, "xnnpack"
    except RuntimeError as error:
        if "delegate" not in str(error).lower():
            raise
        logging.warning("XNNPACK cannot run this model (%s); using LiteRT's built-in kernels", str(error)[:120])
    interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter, "builtin"


class TFLiteModel:
    """A ``.tflite`` model in a LiteRT interpreter, called like a Keras model on float numpy batches.

    Args:
        source: path or flatbuffer bytes.
        num_threads: interpreter threads (XNNPACK).
        batch_size: inputs are fed in batches of this size (the input tensor is resized once).
    """

    def __init__(self, source: bytes | str | os.PathLike, num_threads: int = 1, batch_size: int = 256):
        self.flatbuffer = read_tflite(source)
        self.interpreter, self.kernels = open_interpreter(self.flatbuffer, num_threads)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise ValueError(f"expected a model with one image input, got {len(inputs)} inputs")
        self._input = inputs[0]
        self._outputs = sorted(outputs, key=_output_position)  # the Keras model's order
        self._output = self._outputs[0]
        self.batch_size = batch_size if self._input["shape_signature"][0] == -1 else int(self._input["shape"][0])
        self._allocated_batch = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._input["shape"][1:])

    @property
    def output_width(self) -> int:
        """The last dimension of the (first) output (a classifier's class count)."""
        return int(self._output["shape"][-1])

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(self._output["dtype"])

    def _allocate(self, batch: int) -> None:
        if self._allocated_batch != batch:
            self.interpreter.resize_tensor_input(self._input["index"], [batch, *self.input_shape])
            self.interpreter.allocate_tensors()
            self._allocated_batch = batch

    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        if self.input_dtype == np.float32:
            return x.astype(np.float32)
        scale, zero_point = self._input["quantization"]
        info = np.iinfo(self.input_dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(self.input_dtype)

    @staticmethod
    def _dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
        if np.dtype(detail["dtype"]) == np.float32:
            return y
        scale, zero_point = detail["quantization"]
        return (y.astype(np.float32) - zero_point) * scale

    def predict(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Float outputs for a float input batch of any size: an array, or a list in the Keras model's order for a
        model with several outputs."""
        x = np.asarray(x, dtype=np.float32)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"input shape {x.shape[1:]} does not match the model's {self.input_shape}")
        results = []
        for start in range(0, len(x), self.batch_size):
            chunk = x[start : start + self.batch_size]
            if self._input["shape_signature"][0] == -1:
                self._allocate(len(chunk))
                feed = chunk
            else:  # fixed batch: pad the last chunk
                self._allocate(self.batch_size)
                feed = np.concatenate([chunk, np.zeros((self.batch_size - len(chunk), *chunk.shape[1:]), np.float32)])
            self.interpreter.set_tensor(self._input["index"], self._quantize_input(feed))
            self.interpreter.invoke()
            results.append([self._dequantize_output(self.interpreter.get_tensor(detail["index"])[: len(chunk)], detail)
                            for detail in self._outputs])
        outputs = [np.concatenate(head) for head in zip(*results, strict=True)]
        return outputs[0] if len(outputs) == 1 else outputs


def _output_position(detail: dict) -> tuple[int, str]:
    """Where an output of a converted function stands among the Keras model's outputs: the k of ``Identity_k`` or
    ``StatefulPartitionedCall:k`` (the interpreter lists them in tensor order, not the model's)."""
    match = re.fullmatch(r"(?:.*Identity(?:_(\d+))?|.*:(\d+))", detail["name"])
    if match is None:
        return (1 << 30, detail["name"])
    return (int(match.group(1) or match.group(2) or 0), detail["name"])


def _batch_count(dataset: Any) -> int | None:
    """Batches in ``dataset`` when known and finite (a bar's total), else None."""
    if isinstance(dataset, tf.data.Dataset):
        count = int(dataset.cardinality())
        return count if count >= 0 else None  # tf.data.INFINITE_CARDINALITY -1, UNKNOWN_CARDINALITY -2
    try:
        return len(dataset)
    except TypeError:
        return None


def _batches(dataset: Any, limit: int | None, desc: str | None = None, enable: bool = True):
    """The dataset's (x, y) batches as arrays, cut at ``limit`` examples; with ``desc``, a progress bar counts
    them."""
    seen = 0
    with progress_bars.bar(_batch_count(dataset), desc or "", unit="batch", enable=enable and desc is not None) as bar:
        for x, y in dataset:
            x = np.asarray(x)
            y = tuple(np.asarray(head) for head in y) if isinstance(y, tuple | list) else np.asarray(y)
            if limit is not None:
                if bar.n == 0 and bar.total is not None and len(x):  # the batches the limit leaves
                    bar.set_total(min(bar.total, -(-limit // len(x))))
                x = x[: limit - seen]
                y = tuple(head[: len(x)] for head in y) if isinstance(y, tuple) else y[: len(x)]
            yield x, y
            seen += len(x)
            bar.update(1)
            if limit is not None and seen >= limit:
                return


def evaluate_tflite(model: TFLiteModel | bytes | str | os.PathLike, dataset: tf.data.Dataset,
                    limit: int | None = None, *, progress: bool = True) -> dict[str, float]:
    """Top-1 accuracy of a ``.tflite`` model on a batched dataset of ``(image, label)``.

    ``progress``: a bar with ETA where :mod:`tfcompress.progress` draws bars (a terminal); False: never.
    """
    runner = model if isinstance(model, TFLiteModel) else TFLiteModel(model)
    correct = total = 0
    outputs_seen, targets_seen = [], []
    for x, y in _batches(dataset, limit, "LiteRT evaluation", progress):
        outputs = runner.predict(x)
        for head in heads(outputs):
            _check_finite_outputs(head, "the LiteRT model", total)
        if isinstance(y, tuple):  # the original's outputs, one array per head: fidelity, not accuracy
            outputs_seen.append(heads(outputs))
            targets_seen.append(y)
        else:
            correct += int(np.sum(np.argmax(outputs, axis=-1) == y))
        total += len(x)
    if outputs_seen:
        return training.fidelity(outputs_seen, targets_seen)
    return {"accuracy": correct / total, "score": correct / total, "examples": total}


def _check_finite_outputs(outputs: np.ndarray, who: str, offset: int = 0) -> None:
    """Raises NonFiniteError when an output is NaN or infinite (argmax of NaN is 0: a silent wrong answer)."""
    finite = np.isfinite(outputs).reshape(len(outputs), -1).all(axis=1)
    if not finite.all():
        raise NonFiniteError(f"{who} outputs NaN or infinity for {int((~finite).sum())} examples (the first is "
                             f"example {offset + int(np.argmin(finite))})")


@dataclasses.dataclass(frozen=True)
class Parity:
    """How closely a ``.tflite`` reproduces its Keras model on the same inputs.

    Attributes:
        max_abs_diff: largest |output_keras − output_tflite| over every output.
        relative_max_abs_diff: the largest, over the outputs, of an output's ``max_abs_diff`` divided by the range
            of its Keras values (max − min): the scale-free number the float bound (≤ 1e-4) applies to.
        top1_agreement: fraction of inputs where both pick the same class on the first output (the int8 bound is
            ≥ 0.99; 1.0 for a first output of width 1).
        keras_accuracy, tflite_accuracy: top-1 accuracy of each on the labels (None when the targets are not class
            labels, e.g. the original's outputs of a model with several heads).
        examples: inputs compared.
        per_output_relative_diff: each output's relative max abs diff (one entry per output).
    """

    max_abs_diff: float
    relative_max_abs_diff: float
    top1_agreement: float
    keras_accuracy: float | None
    tflite_accuracy: float | None
    examples: int
    per_output_relative_diff: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["per_output_relative_diff"] = list(self.per_output_relative_diff)
        return values


def heads(outputs: Any) -> list[np.ndarray]:
    """A model's outputs as a list of arrays in the model's order, for one output or several."""
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    return [np.asarray(head) for head in outputs] if isinstance(outputs, list | tuple) else [np.asarray(outputs)]


def parity(keras_model: keras.Model, tflite: TFLiteModel | bytes | str | os.PathLike, dataset: tf.data.Dataset,
           limit: int | None = None, *, progress: bool = True) -> Parity:
    """Compares Keras and LiteRT outputs of the same model on a dataset's inputs, every output (``progress`` as in
    :func:`evaluate_tflite`)."""
    runner = tflite if isinstance(tflite, TFLiteModel) else TFLiteModel(tflite)
    keras_batches, lite_batches, labels = [], [], []
    for x, y in _batches(dataset, limit, "LiteRT parity", progress):
        keras_batches.append(heads(keras_model(x, training=False)))
        lite_batches.append(heads(runner.predict(x)))
        labels.append(y)
    reference = [np.concatenate(head) for head in zip(*keras_batches, strict=True)]
    lite = [np.concatenate(head) for head in zip(*lite_batches, strict=True)]
    for head, (expected, got) in enumerate(zip(reference, lite, strict=True)):
        name = f" (output {head})" if len(reference) > 1 else ""
        _check_finite_outputs(expected, f"the Keras model {keras_model.name!r}{name}")  # NaN == NaN: "agreement"
        _check_finite_outputs(got, f"the LiteRT model{name}")
    diffs = [float(np.max(np.abs(expected - got))) for expected, got in zip(reference, lite, strict=True)]
    relative = [diff / (float(expected.max() - expected.min()) or 1.0) for diff, expected in zip(diffs, reference,
                                                                                                  strict=True)]
    first_ref, first_lite = reference[0], lite[0]
    agreement = (float(np.mean(np.argmax(first_ref, -1) == np.argmax(first_lite, -1))) if first_ref.shape[-1] > 1
                 else 1.0)
    class_labels = None if isinstance(labels[0], tuple) else np.concatenate(labels)
    return Parity(
        max_abs_diff=max(diffs),
        relative_max_abs_diff=max(relative),
        top1_agreement=agreement,
        keras_accuracy=None if class_labels is None else float(np.mean(np.argmax(first_ref, -1) == class_labels)),
        tflite_accuracy=None if class_labels is None else float(np.mean(np.argmax(first_lite, -1) == class_labels)),
        examples=len(first_ref),
        per_output_relative_diff=tuple(relative),
    )
