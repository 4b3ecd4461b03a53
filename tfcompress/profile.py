"""Per-layer profile of a Keras model: parameters, non-zeros, distinct kernel values, sparsity, MACs.

``profile(model)`` walks the functional graph (:class:`tfcompress.keras_graph.GraphWalk`: nested models inlined,
operation nodes included) and returns a :class:`ModelProfile`: one :class:`LayerProfile` row per layer *call*,
a total row, a JSON-able ``to_dict()`` and a printable ``table()``.

MACs come from the layer specs' one rule (:class:`tfcompress.specs.DotProduct`: every kernel value used once per
position), the same rule as the channel graph's cost and the MicroNet counts (e.g. He et al. 2016 count
ResNet-20 at ≈ 41 M, LeNet-5 of Caffe is 2.29 M). Layers without dot products count 0 MACs; the MicroNet
counting in :mod:`tfcompress.micronet` prices their additions and multiplications. A layer type without a spec
keeps its parameter counts, gets 0 MACs and says so in its ``note``. Values (non-zeros, distinct values,
sparsity) are read as the layer computes with them: a weight-masked kernel with its zeros, a ternary layer's
three values.

Layers called more than once (shared layers) get one row per call: MACs are counted at every call, weights
(params, non-zeros, distinct values) only at the first call, so totals are not double counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.keras_graph import Call, GraphWalk
from tfcompress.specs import effective_values, kernels, spec_for

__all__ = ["LayerProfile", "ModelProfile", "format_table", "kernel_weights", "profile"]

FLOAT32_BYTES = 4


def kernel_weights(layer: Any) -> list[np.ndarray]:
    """The layer's kernels (its spec's ``kernels``, through wrappers) as it computes with them."""
    with effective_values(layer):
        return [keras.ops.convert_to_numpy(variable) for variable in kernels(layer)]


@dataclasses.dataclass
class LayerProfile:
    """One row of a :class:`ModelProfile` (also used for the total row).

    Attributes:
        name: layer name (see :class:`tfcompress.keras_graph.Call`); ``"total"`` for the total row.
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
    for call in GraphWalk(model).calls:
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


def _profile_call(call: Call) -> tuple[LayerProfile, list[np.ndarray], int]:
    """The row of one call, the distinct kernel values and the number of zero kernel weights."""
    layer = call.layer
    notes = []
    spec = spec_for(layer)
    if spec is None:
        macs = 0
        notes.append(f"no spec for {type(layer).__name__}: MACs not counted")
    else:
        macs = sum(dot.positions * int(np.prod(dot.variable.shape)) for dot in spec.dot_products(call))

    row = LayerProfile(
        name=call.name,
        layer_type=type(layer).__name__,
        output_shape=list(call.output_shape) if call.output_shapes else [],
        macs=macs,
    )
    uniques: list[np.ndarray] = []
    zeros = 0
    if call.index:
        notes.append("shared layer: weights counted at its first call")
    else:
        with effective_values(layer):
            weights = [keras.ops.convert_to_numpy(w) for w in getattr(layer, "weights", [])]
        kernel_values = kernel_weights(layer)
        row.params = int(sum(w.size for w in weights))
        row.nonzero_params = int(sum(np.count_nonzero(w) for w in weights))
        row.size_bytes = row.params * FLOAT32_BYTES
        row.kernel_params = int(sum(k.size for k in kernel_values))
        if kernel_values:
            zeros = int(sum(k.size - np.count_nonzero(k) for k in kernel_values))
            row.sparsity = float(zeros / row.kernel_params)
            # One layer's kernels share a code book when quantized, so count their distinct values together.
            values = np.unique(np.concatenate([k.ravel() for k in kernel_values]))
            row.distinct_values = int(values.size)
            uniques.append(values)
    row.note = "; ".join(notes)
    return row, uniques, zeros
