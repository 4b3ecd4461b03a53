"""MicroNet challenge scoring (NeurIPS 2019): parameters and math operations counted the challenge's way.

The rules are those of the challenge's reference counter (google-research ``micronet_challenge/counting.py``)
as the EC2T authors apply them to whole networks (Becking et al., ``efficientCNNs/model_scoring/
main_scoring.py``):

* **Parameters** are counted in 32-bit units: a weight stored in ``param_bits`` counts ``param_bits/32``.
  A sparse kernel (sparsity s) is stored as its ``numel·(1−s)`` non-zeros plus a 1-bit mask over all
  ``numel`` elements, ``numel·(1−s)·param_bits/32 + numel/32``. Biases are dense. One deviation from
  counting.py, which adds the mask whenever s > 0: a kernel is counted dense when that is smaller
  (s ≤ 1/param_bits), see :func:`sparse_params`; for any real pruning level the two agree.
* **BatchNorm** folds into the preceding layer: its scale into the kernel (free), its shift into one bias per
  channel (``param_bits/32`` each, one addition per output element). A BatchNorm directly after a layer that
  already has a bias (and no activation) merges into that bias and costs nothing more.
* **Convolution / dense**: ``vector_length = k²·c_in·(1−s)`` (``k²·(1−s)`` for depthwise), per output element
  ``vector_length`` multiplications and ``vector_length − 1`` additions; +1 addition per output for a bias.
* **Activations**, per element: ReLU 1 multiplication (a comparison on 16-bit inputs, which the challenge
  counts as a multiplication); swish 3 mult + 1 add; sigmoid 2 mult + 1 add — for ReLU / Activation layers and
  the ``activation=`` of Conv / Dense alike.
* **Global average pooling**: ``c`` multiplications and ``(HW−1)·c`` additions; **skip Add**: ``HW·c``
  additions per extra input; **Multiply** (squeeze-excitation scale): ``HW·c`` multiplications per extra input.
* **ops** = ``mults·mul_bits/32 + adds·add_bits/32`` (defaults 16 and 32 bit, as in the challenge);
  **score** = ``params/P_ref + ops/F_ref`` with CIFAR-100: WideResNet-28-10, 36.5 M params, 10.49 B ops;
  ImageNet: MobileNetV2-1.4, 6.9 M params, 1170 M ops.

Our extensions, for layers the reference counter has no rule for: max pooling costs ``k²−1`` comparisons
per output counted as multiplications (the ReLU convention), average pooling ``k²−1`` additions + 1
multiplication per output, global max pooling ``(HW−1)·c`` comparisons, softmax / hard-sigmoid like sigmoid,
hard-swish like swish, ReLU6 like ReLU, leaky ReLU 2 multiplications, ``Subtract`` like ``Add``,
``Maximum`` / ``Minimum`` like ``Multiply`` (comparisons), ``Average`` like ``Add`` + 1 multiplication per
element. Not implemented: Becking's removal of dead channels (all-zero filters) before counting. Layers
without a rule are refused with an error naming them.

**Which counting gives the reference 10.49 B ops** (WRN-28-10 on 32×32, 100 classes, everything at 32 bit):
the convolutions and the dense layer alone give 10.4842 B (mults 5.2434 B + adds 5.2408 B), quoted as
10.48 B and 0.055 % short; 2·MACs gives 10.4866 B (rounds to 10.49 B, 0.03 % short); adding to the first the
BatchNorm bias additions (2.31 M), ReLUs (2.31 M), skip additions (1.15 M), global average pool and dense
bias gives **10.48998 B**, 2·10⁻⁶ from 10.49 B. So the reference is the full counting above, BN and ReLU
included; the tests pin it to 10⁻⁴, which only that convention meets. Its parameters: 36.519 M in the
convolutions and dense layer + 8,976 folded BN biases = 36.528 M ≈ 36.5 M (Keras' ``count_params``, with
BN's four vectors per channel, says 36.555 M).

**Extension point** (e.g. a ternary layer's cheaper counting, Becking's 2 multiplications per output and
tree adder): a counter is ``counter(call, precision) -> Count``. Register one for a layer class with
``@register_counter(LayerClass)`` (looked up along the MRO, so subclasses inherit their base class's rule
unless they register their own), or pass ``overrides={"layer_name": counter}`` to :func:`score` for single
layers. :func:`sparse_params`, :func:`dot_product_ops`, :data:`ACTIVATION_OPS` and :func:`weighted_ops` are
the building blocks; a counter may return its own bit-weighted ``ops`` when its additions run at mixed widths.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from tfcompress.profile import (
    LayerCall,
    format_table,
    input_positions,
    known_size,
    layer_calls,
    lookup_rule,
    output_positions,
)

__all__ = [
    "ACTIVATION_OPS",
    "BASE_BITS",
    "COUNTERS",
    "REFERENCES",
    "Count",
    "MicroNetLayer",
    "MicroNetScore",
    "Precision",
    "Reference",
    "activation_ops",
    "dot_product_ops",
    "register_counter",
    "score",
    "sparse_params",
    "weighted_ops",
]

# A full-precision parameter, multiplication or addition counts one (counting.py: bits_base = 32).
BASE_BITS = 32


@dataclasses.dataclass(frozen=True)
class Reference:
    """The baseline a task's score is relative to."""

    model: str
    params: float
    ops: float


REFERENCES: dict[str, Reference] = {
    "cifar100": Reference("WideResNet-28-10", params=36.5e6, ops=10.49e9),
    "imagenet": Reference("MobileNetV2-1.4", params=6.9e6, ops=1170e6),
}


@dataclasses.dataclass(frozen=True)
class Precision:
    """Bit widths of stored parameters, multiplication inputs and accumulators (challenge: 16, 16, 32)."""

    param_bits: int = 16
    mul_bits: int = 16
    add_bits: int = 32

    def __post_init__(self) -> None:
        for name in ("param_bits", "mul_bits", "add_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 1 <= value <= BASE_BITS:
                raise ValueError(f"{name} must be an integer in [1, {BASE_BITS}], got {value!r}")


@dataclasses.dataclass(frozen=True)
class Count:
    """What a counter returns for one layer call.

    Attributes:
        params: scoring parameters, in 32-bit units (already weighted by ``param_bits/32``, masks included).
        mults: multiplications (raw count).
        adds: additions (raw count).
        ops: bit-weighted operations; None means ``mults·mul_bits/32 + adds·add_bits/32``. A counter sets it
            when its operations run at several widths (a tree adder's levels).
        note: how the layer was counted, when that is not obvious.
    """

    params: float = 0.0
    mults: float = 0.0
    adds: float = 0.0
    ops: float | None = None
    note: str = ""


Counter = Callable[[LayerCall, Precision], Count]
COUNTERS: dict[type, Counter] = {}


def register_counter(*layer_classes: type) -> Callable[[Counter], Counter]:
    """Decorator registering ``counter(call, precision) -> Count`` for layer classes (and their subclasses)."""

    def decorate(counter: Counter) -> Counter:
        for cls in layer_classes:
            COUNTERS[cls] = counter
        return counter

    return decorate


# ---------------------------------------------------------------------------------------------------------
# Building blocks (counting.py: get_sparse_size, the dot product of count_ops, get_flops_per_activation).


def sparse_params(numel: int, nonzero: int, param_bits: int) -> float:
    """Scoring parameters of a tensor: its non-zeros at ``param_bits`` plus a 1-bit mask over all elements, or
    all elements at ``param_bits`` (dense) when that is smaller, i.e. when sparsity ≤ 1/param_bits.

    counting.py adds the mask whenever sparsity > 0; storing such a tensor dense is also within the rules and
    smaller, and float32 initializers leave a few exact zeros in large kernels (WRN-28-10 typically has one or
    two), which would otherwise charge a dense model numel/32 per zero-containing layer.
    """
    dense_bits = numel * param_bits
    sparse_bits = nonzero * param_bits + numel
    return min(dense_bits, sparse_bits) / BASE_BITS


def dot_product_ops(vector_length: float, n_outputs: int) -> tuple[float, float]:
    """(mults, adds) of ``n_outputs`` dot products of length ``vector_length``: n and n−1 per output."""
    return vector_length * n_outputs, (vector_length - 1) * n_outputs


def weighted_ops(mults: float, adds: float, precision: Precision) -> float:
    """Bit-weighted operations (counting.py ``process_counts``): each op counts ``bits/32``."""
    return (mults * precision.mul_bits + adds * precision.add_bits) / BASE_BITS


# (mults, adds) per element, by Keras activation name.
ACTIVATION_OPS: dict[str, tuple[int, int]] = {
    "linear": (0, 0),
    "relu": (1, 0),
    "relu6": (1, 0),
    "leaky_relu": (2, 0),  # a comparison and a multiplication
    "silu": (3, 1),  # swish x / (1 + exp(−x)); Keras 3 names it silu
    "swish": (3, 1),
    "hard_silu": (3, 1),
    "hard_swish": (3, 1),
    "sigmoid": (2, 1),  # exp(x) / (1 + exp(x))
    "hard_sigmoid": (2, 1),
    "softmax": (2, 1),  # exp, the sum, a division
}


def activation_ops(call: LayerCall, name: str, n_elements: int) -> tuple[float, float]:
    """(mults, adds) of applying the activation ``name`` to ``n_elements`` values."""
    if name not in ACTIVATION_OPS:
        raise ValueError(
            f"layer {call.name!r}: MicroNet counting has no rule for activation {name!r}; known: "
            f"{', '.join(sorted(ACTIVATION_OPS))}. Add its (mults, adds) per element to "
            "tfcompress.micronet.ACTIVATION_OPS."
        )
    mults, adds = ACTIVATION_OPS[name]
    return mults * n_elements, adds * n_elements


def _activation_name(layer: Any) -> str:
    activation = getattr(layer, "activation", None)
    return "linear" if activation is None else getattr(activation, "__name__", str(activation))


def _channels(call: LayerCall, shape: tuple) -> int:
    return shape[0] if getattr(call.layer, "data_format", "channels_last") == "channels_first" else shape[-1]


def _kernel_stats(kernel: Any) -> tuple[int, int]:
    values = keras.ops.convert_to_numpy(kernel)
    return int(values.size), int(np.count_nonzero(values))


# ---------------------------------------------------------------------------------------------------------
# Counters.


def _bias_and_activation(call: LayerCall, n_outputs: int, precision: Precision) -> Count:
    layer = call.layer
    params = adds = 0.0
    if getattr(layer, "use_bias", False):
        params = _channels(call, call.output_shape) * precision.param_bits / BASE_BITS
        adds = n_outputs  # one bias addition per output element
    act_mults, act_adds = activation_ops(call, _activation_name(layer), n_outputs)
    return Count(params=params, mults=act_mults, adds=adds + act_adds)


def _plus(*counts: Count) -> Count:
    return Count(
        params=sum(c.params for c in counts), mults=sum(c.mults for c in counts), adds=sum(c.adds for c in counts)
    )


def _kernel_count(kernel: Any, out_channels: int, n_outputs: int, precision: Precision) -> Count:
    numel, nonzero = _kernel_stats(kernel)
    # counting.py: vector_length = k²·c_in·(1−s), i.e. the kernel's non-zeros per output channel.
    vector_length = nonzero / out_channels
    mults, adds = dot_product_ops(vector_length, n_outputs)
    return Count(params=sparse_params(numel, nonzero, precision.param_bits), mults=mults, adds=adds)


@register_counter(
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D, keras.layers.Dense,
)
def _count_conv_or_dense(call: LayerCall, precision: Precision) -> Count:
    n_outputs = known_size(call, call.output_shape)
    out_channels = _channels(call, call.output_shape)
    return _plus(
        _kernel_count(call.layer.kernel, out_channels, n_outputs, precision),
        _bias_and_activation(call, n_outputs, precision),
    )


@register_counter(keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
def _count_separable(call: LayerCall, precision: Precision) -> Count:
    layer = call.layer
    positions = output_positions(call)
    depthwise_channels = math.prod(layer.depthwise_kernel.shape[-2:])  # c_in · depth multiplier
    n_outputs = known_size(call, call.output_shape)
    return _plus(
        _kernel_count(layer.depthwise_kernel, depthwise_channels, positions * depthwise_channels, precision),
        _kernel_count(layer.pointwise_kernel, _channels(call, call.output_shape), n_outputs, precision),
        _bias_and_activation(call, n_outputs, precision),
    )


@register_counter(keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
def _count_transposed(call: LayerCall, precision: Precision) -> Count:
    numel, nonzero = _kernel_stats(call.layer.kernel)
    n_outputs = known_size(call, call.output_shape)
    # Every input pixel scatters its non-zero products; they are summed into the n_outputs outputs.
    mults = nonzero * input_positions(call)
    count = Count(params=sparse_params(numel, nonzero, precision.param_bits), mults=mults, adds=mults - n_outputs)
    return _plus(count, _bias_and_activation(call, n_outputs, precision))


# Layers whose bias a following BatchNormalization merges into.
_BIASED_LINEAR_LAYERS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
    keras.layers.Dense,
)


@register_counter(keras.layers.BatchNormalization)
def _count_batch_norm(call: LayerCall, precision: Precision) -> Count:
    producer = call.inbound_layers[0] if len(call.inbound_layers) == 1 else None
    if (
        isinstance(producer, _BIASED_LINEAR_LAYERS)
        and producer.use_bias
        and _activation_name(producer) == "linear"
    ):
        return Count(note=f"folded into the bias of {producer.name}")
    # Scale folds into the kernel; the shift is one bias per channel, added to every element.
    channels = _channels_of_axis(call)
    return Count(params=channels * precision.param_bits / BASE_BITS, adds=known_size(call, call.output_shape))


def _channels_of_axis(call: LayerCall) -> int:
    axis = call.layer.axis
    axes = axis if isinstance(axis, list | tuple) else [axis]
    # Layer axes count the batch dimension; our shapes do not.
    return math.prod(call.output_shape[a - 1 if a > 0 else a] for a in axes)


@register_counter(keras.layers.ReLU)
def _count_relu(call: LayerCall, precision: Precision) -> Count:
    leaky = bool(call.layer.negative_slope)
    return Count(mults=(2 if leaky else 1) * known_size(call, call.output_shape))


@register_counter(keras.layers.LeakyReLU)
def _count_leaky_relu(call: LayerCall, precision: Precision) -> Count:
    return Count(mults=ACTIVATION_OPS["leaky_relu"][0] * known_size(call, call.output_shape))


@register_counter(keras.layers.Activation)
def _count_activation(call: LayerCall, precision: Precision) -> Count:
    mults, adds = activation_ops(call, _activation_name(call.layer), known_size(call, call.output_shape))
    return Count(mults=mults, adds=adds)


@register_counter(keras.layers.Softmax)
def _count_softmax(call: LayerCall, precision: Precision) -> Count:
    mults, adds = activation_ops(call, "softmax", known_size(call, call.output_shape))
    return Count(mults=mults, adds=adds)


@register_counter(keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
                  keras.layers.GlobalAveragePooling3D)
def _count_global_average(call: LayerCall, precision: Precision) -> Count:
    positions, channels = input_positions(call), _channels(call, call.input_shape)
    return Count(mults=channels, adds=(positions - 1) * channels)


@register_counter(keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D)
def _count_global_max(call: LayerCall, precision: Precision) -> Count:
    positions, channels = input_positions(call), _channels(call, call.input_shape)
    return Count(mults=(positions - 1) * channels)


@register_counter(keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D)
def _count_average_pooling(call: LayerCall, precision: Precision) -> Count:
    window, n_outputs = math.prod(call.layer.pool_size), known_size(call, call.output_shape)
    return Count(mults=n_outputs, adds=(window - 1) * n_outputs)


@register_counter(keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D)
def _count_max_pooling(call: LayerCall, precision: Precision) -> Count:
    window, n_outputs = math.prod(call.layer.pool_size), known_size(call, call.output_shape)
    return Count(mults=(window - 1) * n_outputs)


@register_counter(keras.layers.Add, keras.layers.Subtract)
def _count_add(call: LayerCall, precision: Precision) -> Count:
    return Count(adds=(len(call.input_shapes) - 1) * known_size(call, call.output_shape))


@register_counter(keras.layers.Multiply, keras.layers.Maximum, keras.layers.Minimum)
def _count_multiply(call: LayerCall, precision: Precision) -> Count:
    return Count(mults=(len(call.input_shapes) - 1) * known_size(call, call.output_shape))


@register_counter(keras.layers.Average)
def _count_average(call: LayerCall, precision: Precision) -> Count:
    n_elements = known_size(call, call.output_shape)
    return Count(mults=n_elements, adds=(len(call.input_shapes) - 1) * n_elements)


@register_counter(keras.layers.Rescaling)
def _count_rescaling(call: LayerCall, precision: Precision) -> Count:
    n_elements = known_size(call, call.output_shape)
    scale, offset = np.asarray(call.layer.scale), np.asarray(call.layer.offset)
    return Count(mults=n_elements * bool(np.any(scale != 1)), adds=n_elements * bool(np.any(offset != 0)))


@register_counter(
    keras.layers.InputLayer, keras.layers.Concatenate, keras.layers.Flatten, keras.layers.Reshape,
    keras.layers.Permute, keras.layers.RepeatVector, keras.layers.Identity,
    keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
)
def _count_nothing(call: LayerCall, precision: Precision) -> Count:
    # Data movement, or identities at inference (dropout, noise): no arithmetic.
    return Count()


# ---------------------------------------------------------------------------------------------------------
# Scoring.


@dataclasses.dataclass
class MicroNetLayer:
    """One row of a :class:`MicroNetScore`: a layer call's scoring params, mults, adds and weighted ops."""

    name: str
    layer_type: str
    params: float = 0.0
    mults: float = 0.0
    adds: float = 0.0
    ops: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class MicroNetScore:
    """MicroNet counts of a model: per layer call, in total, and the challenge score for ``task``."""

    model_name: str
    task: str
    reference: Reference
    precision: Precision
    layers: list[MicroNetLayer]
    total: MicroNetLayer
    score: float

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers and strings, ready for ``json.dumps``."""
        return {
            "model": self.model_name,
            "task": self.task,
            "reference": dataclasses.asdict(self.reference),
            "precision": dataclasses.asdict(self.precision),
            "score": self.score,
            "total": self.total.to_dict(),
            "layers": [row.to_dict() for row in self.layers],
        }

    def table(self) -> str:
        """A fixed-width text table, one line per layer call, the total, and the score."""
        columns = ("layer", "type", "params", "mults", "adds", "ops", "note")

        def cells(row: MicroNetLayer) -> tuple[str, ...]:
            return (
                row.name, row.layer_type, f"{row.params:,.1f}", f"{row.mults:,.0f}", f"{row.adds:,.0f}",
                f"{row.ops:,.0f}", row.note,
            )

        p = self.precision
        ref = self.reference
        footer = (
            f"params {self.total.params / 1e6:.4g} M / {ref.params / 1e6:g} M + ops {self.total.ops / 1e6:.4g} M"
            f" / {ref.ops / 1e6:g} M = score {self.score:.4g}  ({self.task}, reference {ref.model}; bits: "
            f"params {p.param_bits}, mults {p.mul_bits}, adds {p.add_bits})"
        )
        rows = [cells(row) for row in self.layers]
        return format_table(columns, rows, cells(self.total), left_aligned=2) + "\n" + footer


def score(
    model: keras.Model,
    task: str = "cifar100",
    param_bits: int = 16,
    mul_bits: int = 16,
    add_bits: int = 32,
    overrides: Mapping[str, Counter] | None = None,
) -> MicroNetScore:
    """Counts a model the MicroNet-challenge way and scores it against the task's reference network.

    Args:
        model: a functional or Sequential Keras model with a fixed input shape.
        task: ``"cifar100"`` (reference WideResNet-28-10) or ``"imagenet"`` (MobileNetV2-1.4).
        param_bits: bits of a stored parameter (16: each counts ½).
        mul_bits: bits of a multiplication's inputs (16: each counts ½).
        add_bits: bits of an accumulator (32: each addition counts 1).
        overrides: counters for single layers, by layer name (or by the call's name, ``"sub/layer#1"``),
            taking precedence over the class registry :data:`COUNTERS`.

    Returns:
        A :class:`MicroNetScore`.

    Raises:
        ValueError: unknown task, bad bit widths, an override naming no layer, or a layer (or activation)
            without a counting rule — register one with :func:`register_counter`.

    Example:

    ```python
    result = tfcompress.micronet.score(model, task="cifar100")
    print(result.table())
    result.score  # params/36.5 M + ops/10.49 B
    ```
    """
    if task not in REFERENCES:
        raise ValueError(f"task must be one of {sorted(REFERENCES)}, got {task!r}")
    precision = Precision(param_bits=param_bits, mul_bits=mul_bits, add_bits=add_bits)
    overrides = dict(overrides or {})
    unused_overrides = set(overrides)

    rows = []
    for call in layer_calls(model):
        counter = overrides.get(call.name) or overrides.get(getattr(call.layer, "name", ""))
        if counter is not None:
            unused_overrides -= {call.name, call.layer.name}
        else:
            counter = lookup_rule(COUNTERS, call.layer)
        if counter is None:
            cls = type(call.layer).__name__
            raise ValueError(
                f"MicroNet counting has no rule for layer {call.name!r} ({cls}). Register one with "
                f"@tfcompress.micronet.register_counter({cls}) or pass overrides={{{call.layer.name!r}: counter}} "
                "to score()."
            )
        count = counter(call, precision)
        note = count.note
        params = count.params
        if not call.first_call:
            params = 0.0  # a shared layer's weights are stored once
            note = "; ".join(filter(None, [note, "shared layer: params counted at its first call"]))
        ops = count.ops if count.ops is not None else weighted_ops(count.mults, count.adds, precision)
        rows.append(
            MicroNetLayer(
                name=call.name, layer_type=type(call.layer).__name__, params=float(params),
                mults=float(count.mults), adds=float(count.adds), ops=float(ops), note=note,
            )
        )
    if unused_overrides:
        raise ValueError(f"overrides name no layer of {model.name!r}: {sorted(unused_overrides)}")

    total = MicroNetLayer(
        name="total", layer_type="",
        params=sum(r.params for r in rows), mults=sum(r.mults for r in rows),
        adds=sum(r.adds for r in rows), ops=sum(r.ops for r in rows),
    )
    reference = REFERENCES[task]
    value = total.params / reference.params + total.ops / reference.ops
    return MicroNetScore(
        model_name=model.name, task=task, reference=reference, precision=precision, layers=rows, total=total,
        score=float(value),
    )
