"""MicroNet counting of ternary layers (Becking's counting, efficientCNNs ``model_scoring/main_scoring.py``):
the counter of the ternary layers' specs, also applied to plain layers whose kernel holds ternary values.

**MicroNet counting of a ternary layer** (efficientCNNs ``model_scoring/main_scoring.py``; ``b`` = the
parameter bits, 16 in the challenge; parameters in 32-bit units):

* parameters: the cheapest of
  - masked: non-zeros at b bits + a 1-bit mask (:func:`tfcompress.specs.counting.sparse_params`);
  - 2-bit codes: ⌈(2·numel + 2·b)/32⌉ (a mask for +, a mask for −, two centroids);
  - mask + sign: ⌈(numel + nnz + 2·b)/32⌉ (a non-zero mask, then one sign bit per non-zero);
  - CSR: ⌈(nnz·(b+1) + (rows+1)·b + 2·b)/32⌉ (column index and sign per non-zero, row pointers);
  - CER: ⌈(nnz·b + 2·(rows+1)·b + 2·b)/32⌉;
  rows = output channels (the reference first removes dead channels; we do not);
* multiplications: 2 per output element (the partial sums of the + and − inputs times w_p and w_n);
* additions: the non-zero inputs of each output channel summed by a tree adder whose width starts at the
  multiplication width (16 bits), grows by one bit per level and stops at 32; each addition is weighted
  width/32 (:func:`tree_adder`). The reference starts its tree from vector_length − 1 operands (one addition
  fewer than a dot product of vector_length terms) and uses the layer's average non-zeros per channel; we
  count the exact non-zeros of each channel, so an output costs exactly nnz − 1 additions.
* bias and activation as for plain layers.

Layers in ECP mode (non-zeros at full precision) are counted like a sparse plain layer. The counter is
registered for the ternary layer classes; :func:`micronet_score` also applies it to plain layers whose kernel
holds ternary values (a stripped model).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tfcompress.keras_graph import Call, known_size
from tfcompress.specs import BASE_BITS, Count, Precision
from tfcompress.specs.counting import activation_name, activation_ops, dot_product_ops, sparse_params, weighted_ops

MAX_ADDER_BITS = 32


def effective_kernel(layer: keras.layers.Layer) -> np.ndarray:
    """The kernel the layer computes with: the ternary (or ECP-masked) kernel, or the plain kernel."""
    if hasattr(layer, "ternary_kernel"):
        return keras.ops.convert_to_numpy(layer.ternary_kernel())
    return keras.ops.convert_to_numpy(layer.kernel)


def is_ternary_kernel(kernel: np.ndarray) -> bool:
    """True when the kernel's values are {−a, 0, +b} or a subset (at most one value per sign).

    A ternary layer whose assignment has no zero (a small layer, or a low threshold) leaves {−a, +b}: it is
    ternary too. A subset without 0 only counts when values repeat, so that a plain kernel of one or two weights
    is not taken for ternary.
    """
    values = np.unique(kernel)
    if values.size > 3 or (values > 0).sum() > 1 or (values < 0).sum() > 1:
        return False
    return bool((values == 0).any()) or values.size < np.size(kernel)


# ----------------------------------------------------------------------------------------- MicroNet counting


def ternary_param_formats(numel: int, nonzero: int, rows: int, param_bits: int = 16) -> dict[str, float]:
    """Scoring parameters (32-bit units) of a ternary kernel in each storage format of the reference."""
    b = param_bits
    return {
        "masked": sparse_params(numel, nonzero, b),
        "2-bit codes": math.ceil((2 * numel + 2 * b) / BASE_BITS),
        "mask + sign": math.ceil((numel + nonzero + 2 * b) / BASE_BITS),
        "CSR": math.ceil((nonzero * (b + 1) + (rows + 1) * b + 2 * b) / BASE_BITS),
        "CER": math.ceil((nonzero * b + 2 * (rows + 1) * b + 2 * b) / BASE_BITS),
    }


def tree_adder(n_operands: int, start_bits: int = 16, max_bits: int = MAX_ADDER_BITS) -> tuple[int, int]:
    """(additions, Σ addition widths in bits) of summing ``n_operands`` values pairwise in a tree.

    Each level adds ⌊n/2⌋ pairs at the current width and leaves ⌈n/2⌉ values; the width starts at
    ``start_bits`` and grows by one bit per level up to ``max_bits``. E.g. 5 operands: 2 additions at 16 bits,
    1 at 17, 1 at 18 → (4, 67).
    """
    additions = bits = 0
    width = start_bits
    n = int(n_operands)
    while n > 1:
        pairs = n // 2
        additions += pairs
        bits += pairs * width
        n = math.ceil(n / 2)
        width = min(width + 1, max_bits)
    return additions, bits


def _bias_and_activation(call: Call, out_channels: int, n_outputs: int, precision: Precision) -> Count:
    layer = call.layer
    params = adds = 0.0
    if getattr(layer, "use_bias", False):
        params, adds = out_channels * precision.param_bits / BASE_BITS, n_outputs
    act_mults, act_adds = activation_ops(call, activation_name(layer), n_outputs)
    return Count(params=params, mults=act_mults, adds=adds + act_adds)


def count_ternary(call: Call, precision: Precision) -> Count:
    """MicroNet counter of a ternary (or ECP) Conv2D / DepthwiseConv2D / Dense call; see the module docstring."""
    kernel = effective_kernel(call.layer)
    n_outputs = known_size(call, call.output_shape)
    out_channels = int(np.prod(kernel.shape[-2:])) if isinstance(
        call.layer, keras.layers.DepthwiseConv2D) else int(kernel.shape[-1])
    per_channel_nonzero = np.count_nonzero(kernel.reshape(-1, out_channels), axis=0)
    numel, nonzero = int(kernel.size), int(per_channel_nonzero.sum())
    positions = n_outputs // out_channels
    extra = _bias_and_activation(call, out_channels, n_outputs, precision)
    extra_ops = weighted_ops(extra.mults, extra.adds, precision)

    if getattr(call.layer, "mode", "ternary") == "prune":
        mults, adds = dot_product_ops(nonzero / out_channels, n_outputs)
        return Count(
            params=sparse_params(numel, nonzero, precision.param_bits) + extra.params,
            mults=mults + extra.mults, adds=adds + extra.adds, note="ECP: sparse, full-precision non-zeros",
        )

    formats = ternary_param_formats(numel, nonzero, out_channels, precision.param_bits)
    best = min(formats, key=formats.get)
    additions = addition_bits = 0
    for operands, channels in zip(*np.unique(per_channel_nonzero, return_counts=True), strict=True):
        adds_c, bits_c = tree_adder(int(operands), start_bits=precision.mul_bits)
        additions += adds_c * int(channels)
        addition_bits += bits_c * int(channels)
    mults = 2 * n_outputs
    ops = mults * precision.mul_bits / BASE_BITS + addition_bits * positions / BASE_BITS + extra_ops
    return Count(
        params=formats[best] + extra.params, mults=mults + extra.mults, adds=additions * positions + extra.adds,
        ops=ops, note=f"ternary ({best}); tree adder",
    )


