"""Per-layer profile of a Keras model: parameters, non-zeros, distinct kernel values, sparsity, MACs.

``profile(model)`` walks the functional graph (recursing into nested functional and Sequential sub-models)
and returns a :class:`ModelProfile`: one :class:`LayerProfile` row per layer *call*, a total row, a JSON-able
``to_dict()`` and a printable ``table()``.

MACs (multiply-accumulates) are counted for the layers that do dot products, with the usual formulas
(e.g. He et al. 2016 count ResNet-20 at ≈ 41 M, LeNet-5 of Caffe is 2.29 M):

* convolution: k_h·k_w·(C_in/groups)·C_out·H_out·W_out (the kernel holds k_h·k_w·(C_in/groups)·C_out values);
* depthwise convolution: k_h·k_w·C_in·multiplier·H_out·W_out;
* separable convolution: its depthwise part plus a 1×1 convolution at the output resolution;
* transposed convolution: every input pixel scatters the whole kernel, k_h·k_w·C_in·C_out·H_in·W_in;
* dense: in·out (times the leading positions when applied to a sequence or image).

Every other layer (BatchNormalization, pooling, activations, Add, Concatenate, ...) counts 0 MACs here; the
MicroNet counting in :mod:`tfcompress.micronet` prices their additions and multiplications separately. A
layer type nobody registered keeps its parameter counts, gets 0 MACs and says so in its ``note``.

A new layer type is one entry in :data:`MAC_RULES` (or ``@register_macs(LayerClass)``); rules are looked up
along the class's MRO, so a subclass of ``Conv2D`` is counted as a convolution unless it registers its own.

Layers called more than once (shared layers) get one row per call: MACs are counted at every call, weights
(params, non-zeros, distinct values) only at the first call, so totals are not double counted. A nested model
is profiled through its own graph, so its inner shapes are those it was built with.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

__all__ = [
    "MAC_RULES",
    "ZERO_MAC_LAYERS",
    "LayerCall",
    "LayerProfile",
    "ModelProfile",
    "format_table",
    "input_positions",
    "kernel_weights",
    "known_size",
    "layer_calls",
    "lookup_rule",
    "output_positions",
    "profile",
    "register_macs",
]

Shape = tuple  # one tensor's shape without the batch dimension, e.g. (32, 32, 16); entries may be None

FLOAT32_BYTES = 4


@dataclasses.dataclass(frozen=True)
class LayerCall:
    """One call of a layer in a model's graph, with the static shapes it saw.

    Attributes:
        name: the layer name, prefixed by the enclosing sub-models (``"block/conv"``) and suffixed with
            ``#k`` for the k-th call (k ≥ 1) of a shared layer.
        layer: the Keras layer (or operation) called.
        input_shapes: shapes of the inputs, without the batch dimension.
        output_shapes: shapes of the outputs, without the batch dimension.
        inbound_layers: the layers that produced the inputs (an ``InputLayer`` for model inputs).
        first_call: False for the second and later calls of a shared layer: its weights are already counted.
    """

    name: str
    layer: Any
    input_shapes: tuple[Shape, ...]
    output_shapes: tuple[Shape, ...]
    inbound_layers: tuple[Any, ...]
    first_call: bool = True

    @property
    def input_shape(self) -> Shape:
        return self.input_shapes[0]

    @property
    def output_shape(self) -> Shape:
        return self.output_shapes[0]


def layer_calls(model: keras.Model) -> list[LayerCall]:
    """Every layer call of a functional or Sequential model, inputs first, sub-models expanded.

    Nested functional/Sequential models are replaced by their own layer calls (their ``InputLayer`` rows
    are dropped: they only repeat the caller's tensors). Subclassed sub-models cannot be traced and appear as
    one opaque call.

    Raises:
        ValueError: ``model`` is a subclassed model, or a Sequential model that was never built on an input.
    """
    graph = _functional_graph(model)
    if graph is None:
        raise ValueError(
            f"cannot profile {type(model).__name__} {model.name!r}: it has no functional graph. Use a functional "
            "or Sequential model built on keras.Input(...) (subclassed models cannot be traced)."
        )
    calls: list[LayerCall] = []
    _collect_calls(graph, prefix="", calls=calls, seen=set(), is_nested=False)
    return calls


def _functional_graph(model: Any) -> Any | None:
    # Sequential models keep their graph in a private Functional built on their first input shape.
    if isinstance(model, keras.Sequential):
        model = getattr(model, "_functional", None)
    if model is None or not hasattr(model, "_nodes_by_depth"):
        return None
    return model


def _collect_calls(graph: Any, prefix: str, calls: list[LayerCall], seen: set[int], is_nested: bool) -> None:
    # Keras has no public per-call API: a layer's ``_inbound_nodes`` also hold calls from other models, while a
    # Functional's ``_nodes_by_depth`` holds exactly the calls of its own graph, with their static shapes.
    # Depths count down from the outputs, so decreasing depth is a topological order; within one depth the
    # model's layer order keeps tables stable and readable.
    order = {id(op): index for index, op in enumerate(graph.operations)}
    call_index: dict[int, int] = {}
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        nodes = sorted(graph._nodes_by_depth[depth], key=lambda node: order.get(id(node.operation), 0))
        for node in nodes:
            op = node.operation
            if is_nested and isinstance(op, keras.layers.InputLayer):
                continue
            inner = _functional_graph(op) if isinstance(op, keras.Model) else None
            if inner is not None:
                _collect_calls(inner, f"{prefix}{op.name}/", calls, seen, is_nested=True)
                continue
            index = call_index.get(id(op), 0)
            call_index[id(op)] = index + 1
            calls.append(
                LayerCall(
                    name=f"{prefix}{op.name}" + (f"#{index}" if index else ""),
                    layer=op,
                    input_shapes=tuple(_shape(t) for t in node.input_tensors),
                    output_shapes=tuple(_shape(t) for t in node.outputs),
                    inbound_layers=tuple(parent.operation for parent in node.parent_nodes),
                    first_call=id(op) not in seen,
                )
            )
            seen.add(id(op))


def _shape(tensor: Any) -> Shape:
    return tuple(tensor.shape[1:])


# ---------------------------------------------------------------------------------------------------------
# MAC rules: layer class → function of the call giving its multiply-accumulates.

MacRule = Callable[[LayerCall], int]
MAC_RULES: dict[type, MacRule] = {}


def register_macs(*layer_classes: type) -> Callable[[MacRule], MacRule]:
    """Decorator registering a MAC rule ``rule(call) -> int`` for one or more layer classes."""

    def decorate(rule: MacRule) -> MacRule:
        for cls in layer_classes:
            MAC_RULES[cls] = rule
        return rule

    return decorate


def lookup_rule(registry: dict[type, Any], layer: Any) -> Any | None:
    """The registry entry of ``type(layer)`` or of its nearest registered base class; None if none."""
    for cls in type(layer).__mro__:
        if cls in registry:
            return registry[cls]
    return None


def known_size(call: LayerCall, shape: Shape) -> int:
    """Number of elements of ``shape``; raises ValueError naming the layer if a dimension is not fixed."""
    if any(dim is None for dim in shape):
        raise ValueError(
            f"layer {call.name!r} has an unknown dimension in shape {(None, *shape)}: build the model on a fixed "
            "input shape, e.g. keras.Input((32, 32, 3)), to count its operations."
        )
    return math.prod(shape)


def output_positions(call: LayerCall) -> int:
    """Number of spatial (or sequence) positions of the first output: H·W for a 4-D channels-last tensor."""
    shape = call.output_shape
    spatial = shape[1:] if getattr(call.layer, "data_format", "channels_last") == "channels_first" else shape[:-1]
    return known_size(call, spatial)


def input_positions(call: LayerCall) -> int:
    """Number of spatial (or sequence) positions of the first input."""
    shape = call.input_shape
    spatial = shape[1:] if getattr(call.layer, "data_format", "channels_last") == "channels_first" else shape[:-1]
    return known_size(call, spatial)


@register_macs(
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D, keras.layers.Dense,
)
def _kernel_at_every_output_position(call: LayerCall) -> int:
    # The kernel is k_h·k_w·(C_in/groups)·C_out (conv), k_h·k_w·C_in·multiplier (depthwise) or in·out (dense):
    # each of its values is used once per output position.
    return math.prod(call.layer.kernel.shape) * output_positions(call)


@register_macs(keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
def _separable(call: LayerCall) -> int:
    depthwise = math.prod(call.layer.depthwise_kernel.shape)
    pointwise = math.prod(call.layer.pointwise_kernel.shape)
    return (depthwise + pointwise) * output_positions(call)


@register_macs(keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
def _transposed(call: LayerCall) -> int:
    # Each input pixel is multiplied by the whole k_h·k_w·C_out·C_in kernel and scattered.
    return math.prod(call.layer.kernel.shape) * input_positions(call)


def _no_macs(call: LayerCall) -> int:
    return 0


# Layers that do no dot product. Their element-wise work is counted by tfcompress.micronet, not as MACs.
ZERO_MAC_LAYERS: tuple[type, ...] = (
    keras.layers.InputLayer,
    keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization,
    keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU,
    keras.layers.Softmax,
    keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
    keras.layers.AveragePooling1D, keras.layers.AveragePooling2D, keras.layers.AveragePooling3D,
    keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D, keras.layers.GlobalMaxPooling3D,
    keras.layers.Add, keras.layers.Subtract, keras.layers.Multiply, keras.layers.Average,
    keras.layers.Maximum, keras.layers.Minimum, keras.layers.Concatenate,
    keras.layers.Flatten, keras.layers.Reshape, keras.layers.Permute, keras.layers.RepeatVector,
    keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout, keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization, keras.layers.Identity,
    keras.layers.ZeroPadding1D, keras.layers.ZeroPadding2D, keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D, keras.layers.Cropping2D, keras.layers.Cropping3D,
    keras.layers.UpSampling1D, keras.layers.UpSampling2D, keras.layers.UpSampling3D,
    keras.layers.Rescaling,
)  # Dropout also covers SpatialDropout1D/2D/3D, its subclasses.
register_macs(*ZERO_MAC_LAYERS)(_no_macs)


# ---------------------------------------------------------------------------------------------------------
# Weight statistics.


def kernel_weights(layer: Any) -> list[np.ndarray]:
    """The layer's kernels (``kernel``, ``depthwise_kernel``, ``pointwise_kernel``, ...) as numpy arrays.

    A weight is a kernel when its name contains ``"kernel"``: Keras names the multiplicative weights of Conv*,
    Dense and EinsumDense that way, while biases, BatchNorm statistics and the like are not kernels.
    """
    return [keras.ops.convert_to_numpy(w) for w in getattr(layer, "weights", []) if "kernel" in w.name]


@dataclasses.dataclass
class LayerProfile:
    """One row of a :class:`ModelProfile` (also used for the total row).

    Attributes:
        name: layer name (see :class:`LayerCall`); ``"total"`` for the total row.
        layer_type: the layer's class name.
        output_shape: first output shape without the batch dimension.
        params: number of weights (trainable and not, as ``model.count_params()``).
        nonzero_params: weights that are not exactly 0.
        kernel_params: weights in kernels (see :func:`kernel_weights`).
        sparsity: fraction of kernel weights that are exactly 0 (0.0 without kernels).
        distinct_values: number of distinct values among the kernel weights (3 for a ternary kernel with
            zeros); in the total row, distinct values over all kernels together.
        macs: multiply-accumulates of one inference on one example.
        size_bytes: float32 storage of ``params``.
        note: why a count may be incomplete (unknown layer type, shared layer).
    """

    name: str
    layer_type: str
    output_shape: list[int | None]
    params: int = 0
    nonzero_params: int = 0
    kernel_params: int = 0
    sparsity: float = 0.0
    distinct_values: int = 0
    macs: int = 0
    size_bytes: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ModelProfile:
    """Per-layer and total counts of a model; see :func:`profile`."""

    model_name: str
    layers: list[LayerProfile]
    total: LayerProfile

    def to_dict(self) -> dict[str, Any]:
        """Plain ints, floats, strings and lists, ready for ``json.dumps``."""
        return {
            "model": self.model_name,
            "layers": [row.to_dict() for row in self.layers],
            "total": self.total.to_dict(),
        }

    def table(self) -> str:
        """A fixed-width text table, one line per layer call, then the total."""
        columns = ("layer", "type", "output", "params", "nonzero", "sparsity", "distinct", "MACs", "note")

        def cells(row: LayerProfile) -> tuple[str, ...]:
            has_kernel = row.kernel_params > 0
            shape = "×".join("?" if d is None else str(d) for d in row.output_shape) if row.output_shape else ""
            return (
                row.name, row.layer_type, shape, f"{row.params:,}", f"{row.nonzero_params:,}",
                f"{row.sparsity:.1%}" if has_kernel else "-", f"{row.distinct_values:,}" if has_kernel else "-",
                f"{row.macs:,}", row.note,
            )

        return format_table(columns, [cells(row) for row in self.layers], cells(self.total), left_aligned=3) + (
            f"\nsize {self.total.size_bytes:,} bytes as float32 ({self.total.size_bytes / 1e6:.3g} MB), "
            f"{self.total.macs / 1e6:.4g} M MACs"
        )


def format_table(
    columns: Sequence[str], rows: list[Sequence[str]], total: Sequence[str], left_aligned: int
) -> str:
    """A plain-text table (also used by :mod:`tfcompress.micronet`): columns sized to their content, the first
    ``left_aligned`` columns and the last one aligned left, numbers right; rules above and below the rows."""
    widths = [max(len(str(r[i])) for r in [columns, *rows, total]) for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, (value, width) in enumerate(zip(values, widths, strict=True)):
            left = i < left_aligned or i == len(columns) - 1
            parts.append(str(value).ljust(width) if left else str(value).rjust(width))
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    return "\n".join([line(columns), rule, *map(line, rows), rule, line(total)])


def profile(model: keras.Model) -> ModelProfile:
    """Counts parameters, non-zeros, distinct kernel values, sparsity and MACs of every layer call.

    Args:
        model: a built functional or Sequential Keras model with fixed input shape (nested functional and
            Sequential sub-models are expanded).

    Returns:
        A :class:`ModelProfile`; ``profile(model).total.macs`` is the MAC count of one example.

    Raises:
        ValueError: the model cannot be traced, or a counted layer has a dimension that is not fixed.

    Example:

    ```python
    report = tfcompress.profile.profile(tfcompress.zoo.build("lenet5", (28, 28, 1), 10))
    report.total.macs  # 2293000
    print(report.table())
    ```
    """
    rows: list[LayerProfile] = []
    kernel_uniques: list[np.ndarray] = []
    kernel_zeros = 0
    for call in layer_calls(model):
        row, uniques, zeros = _profile_call(call)
        rows.append(row)
        kernel_uniques.extend(uniques)
        kernel_zeros += zeros

    kernel_params = sum(row.kernel_params for row in rows)
    params = sum(row.params for row in rows)
    total = LayerProfile(
        name="total",
        layer_type="",
        output_shape=[],
        params=params,
        nonzero_params=sum(row.nonzero_params for row in rows),
        kernel_params=kernel_params,
        sparsity=kernel_zeros / kernel_params if kernel_params else 0.0,
        distinct_values=int(np.unique(np.concatenate(kernel_uniques)).size) if kernel_uniques else 0,
        macs=sum(row.macs for row in rows),
        size_bytes=params * FLOAT32_BYTES,
    )
    return ModelProfile(model_name=model.name, layers=rows, total=total)


def _profile_call(call: LayerCall) -> tuple[LayerProfile, list[np.ndarray], int]:
    """The row of one call, the distinct kernel values and the number of zero kernel weights."""
    layer = call.layer
    notes = []
    rule = lookup_rule(MAC_RULES, layer)
    if rule is None:
        macs = 0
        notes.append(f"no MAC rule for {type(layer).__name__}: MACs not counted")
    else:
        macs = int(rule(call))

    row = LayerProfile(
        name=call.name,
        layer_type=type(layer).__name__,
        output_shape=list(call.output_shape) if call.output_shapes else [],
        macs=macs,
    )
    uniques: list[np.ndarray] = []
    zeros = 0
    if not call.first_call:
        notes.append("shared layer: weights counted at its first call")
    else:
        weights = [keras.ops.convert_to_numpy(w) for w in getattr(layer, "weights", [])]
        kernels = kernel_weights(layer)
        row.params = int(sum(w.size for w in weights))
        row.nonzero_params = int(sum(np.count_nonzero(w) for w in weights))
        row.size_bytes = row.params * FLOAT32_BYTES
        row.kernel_params = int(sum(k.size for k in kernels))
        if kernels:
            zeros = int(sum(k.size - np.count_nonzero(k) for k in kernels))
            row.sparsity = float(zeros / row.kernel_params)
            # One layer's kernels share a code book when quantized, so count their distinct values together.
            values = np.unique(np.concatenate([k.ravel() for k in kernels]))
            row.distinct_values = int(values.size)
            uniques.append(values)
    row.note = "; ".join(notes)
    return row, uniques, zeros
