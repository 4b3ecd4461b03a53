"""What the programs share about models that carry compression layers (weight masks, ternary layers).

The scripts pass models to each other as .keras files: ``snip.py`` writes WeightMask layers, ``ternarize.py``
ternary layers, and ``prune.py`` / ``ternarize.py`` / ``export.py`` / ``score.py`` read them. These helpers
name what a model carries, strip weight masks where a step needs plain layers, and turn the exact zeros of
plain layers into weight masks (so that training keeps them).
"""

from __future__ import annotations

from collections.abc import Collection

import keras
import numpy as np

from tfcompress import specs
from tfcompress.keras_graph import iter_layers, replace_layers
from tfcompress.pruning import weight_masks
from tfcompress.quantization import ternary


def compression_layers(model: keras.Model) -> dict[str, list[str]]:
    """{class name: layer names} of the tfcompress layers ``model`` carries (those ``export.strip`` replaces)."""
    found: dict[str, list[str]] = {}
    for layer in iter_layers(model):
        spec = specs.spec_for(layer)
        if spec is not None and spec.strip is not None and type(layer).__module__.startswith("tfcompress"):
            found.setdefault(type(layer).__name__, []).append(layer.name)
    return found


def describe(model: keras.Model) -> str:
    """``"2 WeightMask (conv1, conv2), 1 TernaryConv2D (conv2)"``, or ``"none"``."""
    found = compression_layers(model)
    return ", ".join(f"{len(names)} {kind} ({', '.join(names)})" for kind, names in found.items()) or "none"


def weight_masked(model: keras.Model) -> dict[str, tuple[str, ...]]:
    """{layer name: masked weight names} of the model's WeightMask layers."""
    return {layer.name: tuple(layer.masked_weights) for layer in iter_layers(model)
            if isinstance(layer, weight_masks.WeightMask)}


def strip_weight_masks(model: keras.Model, names: Collection[str] | None = None) -> keras.Model:
    """``model`` with its WeightMask layers (those in ``names``; all if None) replaced by the plain layers they
    wrap, pruned weights at zero in place; other layers (ternary ones included) are kept. A new model, sharing
    no layer with ``model``; ``model`` itself if there is nothing to strip."""
    chosen = set(weight_masked(model) if names is None else names) & set(weight_masked(model))
    if not chosen:
        return model
    strip = specs.spec_for(weight_masks.WeightMask).strip

    def replacement_for(layer: keras.layers.Layer):
        if not isinstance(layer, weight_masks.WeightMask) or layer.name not in chosen:
            return None
        return lambda *args, **kwargs: strip(layer, *args, **kwargs)

    return replace_layers(model, replacement_for)


def zero_masks(model: keras.Model, weights: dict[str, Collection[str]]) -> weight_masks.Masks:
    """Masks that keep every exact zero of the named weights ({layer name: weight names}) at zero."""
    layers = {layer.name: layer for layer in iter_layers(model)}
    return {name: {weight: np.asarray(getattr(layers[name], weight).numpy()) != 0 for weight in per}
            for name, per in weights.items()}


def plain_prunable_zeros(model: keras.Model) -> tuple[float, dict[str, tuple[str, ...]]]:
    """Fraction of exact zeros in the prunable kernels of the layers that are not weight-masked yet (0.0 when
    there is none), and {layer: weights holding zeros} of those layers (kernels and biases)."""
    masked = weight_masked(model)
    ternary_names = {layer.name for layer in ternary.ternary_layers(model)}
    zeros = total = 0
    holding: dict[str, tuple[str, ...]] = {}
    try:
        prunable = weight_masks.prunable_weights(model, prune_biases=True)
    except ValueError:  # no prunable layer at all
        return 0.0, {}
    layers = {layer.name: layer for layer in iter_layers(model)}
    for name, per in prunable.items():
        if name in masked or name in ternary_names:
            continue
        spec = weight_masks.prunable_spec(layers[name])
        values = {weight: np.asarray(variable.numpy()) for weight, variable in per.items()}
        for weight, value in values.items():
            if weight in spec.kernels:
                zeros += int(value.size - np.count_nonzero(value))
                total += int(value.size)
        with_zeros = tuple(weight for weight, value in values.items() if np.count_nonzero(value) < value.size)
        if with_zeros:
            holding[name] = with_zeros
    return (zeros / total if total else 0.0), holding


def masked_sparsity(model: keras.Model) -> dict[str, float | int]:
    """Zeros held by the WeightMask layers' masked weights: {"params", "zeros", "sparsity"} (0 params if none)."""
    params = zeros = 0
    for layer in iter_layers(model):
        if isinstance(layer, weight_masks.WeightMask):
            for mask in layer.get_masks().values():
                params += int(mask.size)
                zeros += int(mask.size - np.count_nonzero(mask))
    return {"params": params, "zeros": zeros, "sparsity": zeros / params if params else 0.0}
