"""Size and MicroNet score of ternary models: code entropy, entropy-coded bits, and the MicroNet score with
Becking's ternary counting (:mod:`tfcompress.quantization.ternary_counting`).

**Entropy.** A ternary layer stores one code per weight (−, 0, +) and two centroids. Its ideal entropy-coded
size is numel·H(codes) bits (:func:`tfcompress.export.entropy_bits`) plus the two centroids at 32 bits.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfcompress import export, micronet, specs
from tfcompress.keras_graph import iter_layers
from tfcompress.quantization import ternary
from tfcompress.quantization.ternary_counting import count_ternary, is_ternary_kernel
from tfcompress.specs import BASE_BITS

# ------------------------------------------------------------------------------------------------- entropy


@dataclasses.dataclass
class LayerCodes:
    """Code statistics of one ternary layer.

    Attributes:
        name: layer name.
        numel: kernel weights.
        probabilities: (P_−, P_0, P_+) of the codes.
        sparsity: P_0.
        entropy_bits_per_weight: H(codes).
        entropy_coded_bits: numel·H + 2·32 (the two centroids in float32).
        float32_bits: 32·numel.
    """

    name: str
    numel: int
    probabilities: tuple[float, float, float]
    sparsity: float
    entropy_bits_per_weight: float
    entropy_coded_bits: float
    float32_bits: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def layer_codes(layer: ternary.TernaryMixin) -> LayerCodes:
    """Code statistics of a ternary layer (its current assignment)."""
    codes = np.sign(layer.assignment.numpy()).ravel()
    numel = codes.size
    probabilities = tuple(float(np.mean(codes == c)) for c in (-1, 0, 1))
    bits = export.entropy_bits(codes)
    return LayerCodes(
        name=layer.name, numel=numel, probabilities=probabilities, sparsity=probabilities[1],
        entropy_bits_per_weight=bits / numel, entropy_coded_bits=bits + 2 * BASE_BITS, float32_bits=BASE_BITS * numel,
    )


def code_report(model: keras.Model) -> dict[str, Any]:
    """Per-layer :class:`LayerCodes` of the model's ternary layers, and totals.

    Totals: ``ternary_*`` over the ternary layers; ``model_*`` over every kernel of the model, the other
    kernels counted at 32 bits per weight (float32), so ``float32_bits / entropy_coded_bits`` is the size ratio
    of the model's kernels to float32.
    """
    rows = [layer_codes(layer) for layer in ternary.ternary_layers(model)]
    ternary_names = {row.name for row in rows}
    other_weights = sum(
        kernel.size for name, kernel in export.kernels(model) if name not in ternary_names
    )
    ternary_numel = sum(r.numel for r in rows)
    ternary_coded = sum(r.entropy_coded_bits for r in rows)
    zeros = sum(r.sparsity * r.numel for r in rows)
    return {
        "layers": [r.to_dict() for r in rows],
        "ternary_weights": ternary_numel,
        "ternary_sparsity": zeros / ternary_numel if ternary_numel else 0.0,
        "ternary_entropy_coded_bits": ternary_coded,
        "ternary_bits_per_weight": ternary_coded / ternary_numel if ternary_numel else 0.0,
        "model_kernel_weights": ternary_numel + other_weights,
        "model_float32_bits": BASE_BITS * (ternary_numel + other_weights),
        "model_entropy_coded_bits": ternary_coded + BASE_BITS * other_weights,
    }




def micronet_score(model: keras.Model, task: str = "cifar100", **kwargs: Any) -> micronet.MicroNetScore:
    """``micronet.score`` with ternary counting for ternary layers and for plain Conv2D / DepthwiseConv2D /
    Dense layers whose kernel holds ternary values (a stripped ternary model).

    As in ``micronet.score``, dead channels (all-zero output channels, which ternarization leaves behind) are
    removed before counting, as the reference scorer does; pass ``remove_dead_channels=False`` to keep them.
    """
    overrides = {
        layer.name: count_ternary for layer in iter_layers(model)
        if getattr(specs.SPECS.lookup(layer, exact=True), "ternary", None) is not None
        and is_ternary_kernel(keras.ops.convert_to_numpy(layer.kernel))
    }
    return micronet.score(model, task=task, overrides={**overrides, **kwargs.pop("overrides", {})}, **kwargs)
