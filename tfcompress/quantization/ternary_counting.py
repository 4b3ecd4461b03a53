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
  numel and rows = the kernel's live output channels (see dead channels below);
* multiplications: 2 per output element (the partial sums of the + and − inputs times w_p and w_n);
* additions: the non-zero inputs of each output channel summed by a tree adder whose width starts at the
  multiplication width (16 bits), grows by one bit per level and stops at 32; each addition is weighted
  width/32 (:func:`tree_adder`). Here we keep a deliberate difference: the reference runs one tree per output
  channel on the layer's *average* non-zeros per channel, starting from vector_length − 1 operands (so one
  addition short of a dot product of vector_length terms); we run each channel's tree on its *exact*
  non-zeros, so an output costs exactly nnz − 1 additions. That is more exact than the reference, higher or
  lower depending on how the non-zeros spread over the channels;
* bias and activation as for plain layers.

**Dead channels.** :func:`tfcompress.micronet.score` removes channels that are dead in the whole model
before counting. An output channel of this layer whose ternary kernel slice is all zero but which stays in the
model (it is added into a residual stream that other layers keep alive) costs nothing here, as in the
reference (``count_convs`` takes it off c_out): no storage (numel and rows are the live channels'), no
multiplication, no addition, no bias or activation per output — its output is the constant bias, which the
layers reading it can absorb. Like the reference, the storage formats do not pay for recording which output
channels are live (one bit per channel).

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
    """True when the kernel holds at most three values, {−w_n, 0, +w_p} or a subset.

    The scales are learned without a sign constraint (TTQ's official code has none), so a scale that went
    negative gives two values of one sign: still three values, still ternary. A ternary layer whose assignment
    has no zero (a small layer, or a low threshold) leaves two: ternary too. A subset without 0 only counts when
    values repeat, so that a plain kernel of one or two weights is not taken for ternary.
    """
    values = np.unique(kernel)
    if values.size > 3 or (values.size == 3 and not (values == 0).any()):
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
    out_channels = int(np.prod(kernel.shape[-2:])) if isinstance(
        call.layer, keras.layers.DepthwiseConv2D) else int(kernel.shape[-1])
    positions = known_size(call, call.output_shape) // out_channels
    per_channel_nonzero = np.count_nonzero(kernel.reshape(-1, out_channels), axis=0)
    live = int(np.count_nonzero(per_channel_nonzero))  # all-zero output channels cost nothing (module doc)
    numel, nonzero = kernel.size // out_channels * live, int(per_channel_nonzero.sum())
    n_outputs = positions * live
    extra = _bias_and_activation(call, live, n_outputs, precision)
    extra_ops = weighted_ops(extra.mults, extra.adds, precision)
    dead_note = f"; {out_channels - live} dead output channels not counted" if live < out_channels else ""

    if getattr(call.layer, "mode", "ternary") == "prune":
        mults, adds = dot_product_ops(nonzero / max(live, 1), n_outputs)
        return Count(
            params=sparse_params(numel, nonzero, precision.param_bits) + extra.params,
            mults=mults + extra.mults, adds=adds + extra.adds, note="ECP: sparse, full-precision non-zeros" + dead_note,
        )

    formats = ternary_param_formats(numel, nonzero, live, precision.param_bits)
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
        ops=ops, note=f"ternary ({best}); tree adder{dead_note}",
    )
