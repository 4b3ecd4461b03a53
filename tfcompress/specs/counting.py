"""Building blocks of MicroNet counting (google-research ``micronet_challenge/counting.py``), used by the
per-layer counters of the layer specs; :mod:`tfcompress.micronet` adds them up and scores a model.

A parameter, multiplication or addition at 32 bits counts one; at b bits it counts b/32.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfcompress.keras_graph import Call

# A full-precision parameter, multiplication or addition counts one (counting.py: bits_base = 32).
BASE_BITS = 32


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

    def __add__(self, other: Count) -> Count:
        if self.ops is not None or other.ops is not None:
            raise ValueError("counts with their own bit-weighted ops cannot be added; add mults and adds instead")
        return Count(self.params + other.params, self.mults + other.mults, self.adds + other.adds,
                     note="; ".join(filter(None, (self.note, other.note))))


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
    "elu": (3, 1),  # a comparison, exp(x) − 1, a multiplication by alpha
    "selu": (4, 1),
    "gelu": (4, 2),  # the tanh approximation, counted like a sigmoid and a few products
    "tanh": (2, 1),
    "silu": (3, 1),  # swish x / (1 + exp(−x)); Keras 3 names it silu
    "swish": (3, 1),
    "hard_silu": (3, 1),
    "hard_swish": (3, 1),
    "sigmoid": (2, 1),  # exp(x) / (1 + exp(x))
    "hard_sigmoid": (2, 1),
    "softmax": (2, 1),  # exp, the sum, a division
    "softplus": (2, 1),
}


def activation_name(layer: Any) -> str:
    activation = getattr(layer, "activation", None)
    return "linear" if activation is None else getattr(activation, "__name__", str(activation))


def activation_ops(call: Call, name: str, n_elements: int) -> tuple[float, float]:
    """(mults, adds) of applying the activation ``name`` to ``n_elements`` values."""
    if name not in ACTIVATION_OPS:
        raise ValueError(
            f"layer {call.name!r}: MicroNet counting has no rule for activation {name!r}; known: "
            f"{', '.join(sorted(ACTIVATION_OPS))}. Add its (mults, adds) per element to "
            "tfcompress.specs.counting.ACTIVATION_OPS."
        )
    mults, adds = ACTIVATION_OPS[name]
    return mults * n_elements, adds * n_elements
