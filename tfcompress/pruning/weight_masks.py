"""Unstructured weight masks: a Keras wrapper that keeps pruned weights at exactly zero, and masks from scores.

:class:`WeightMask` wraps a Conv2D, DepthwiseConv2D or Dense layer (any class whose spec is ``maskable``) and holds
one non-trainable 0/1 mask per pruned weight (the kernel, and the bias when biases are pruned). Pruned
weights stay zero through training with any optimizer, for two reasons that together leave no gap:

* the forward pass uses ``w ⊙ m``, so the gradient of a pruned weight is 0 (Adam's and momentum's buffers of
  pruned weights stay 0, as in SNIP's ``w_final = mask * weights_ap``);
* the masked variable carries a constraint that re-applies ``w ← w ⊙ m`` after every optimizer step, so
  momentum accumulated *before* a weight was pruned (gradual pruning, pruning a trained model), or any
  decoupled weight decay, cannot revive it.

At export, :func:`tfcompress.export.strip` turns a :class:`WeightMask` into the plain wrapped layer with zeros
in place (registered below). Masks are plain data, ``{layer name: {weight name: bool array}}``
(:data:`Masks`), so that SNIP, random and magnitude pruning share :func:`masks_from_scores` and
:func:`apply_masks`.

Which layers may be masked, and which of their variables are kernels and biases, is their spec's business
(:class:`tfcompress.specs.LayerSpec`: ``maskable``, ``kernels``, ``biases``); WeightMask's own spec delegates to
the wrapped layer's and ties each mask to its variable, so channel surgery slices masks with their kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from tfcompress import specs
from tfcompress.keras_graph import as_functional, iter_layers, replace_layers

# {layer name: {weight attribute name ("kernel", "bias"): array}}; bool arrays for masks, floats for scores.
Masks = dict[str, dict[str, np.ndarray]]
Scores = dict[str, dict[str, np.ndarray]]
SCOPES = ("global", "local")


def prunable_spec(layer: keras.layers.Layer) -> specs.LayerSpec | None:
    """The spec of a layer weight masks may wrap (of the wrapped layer for a :class:`WeightMask`), or None."""
    spec = specs.spec_for(specs.unwrap(layer))
    return spec if spec is not None and spec.maskable else None


def _maskable_classes() -> list[str]:
    return sorted(cls.__name__ for cls, spec in specs.SPECS.registered().items() if spec.maskable)


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """Returns ``sparsity`` as a float if it is in [0, 1), else raises a ValueError saying what is accepted."""
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ValueError(
            f"{name} must be in [0, 1) — the fraction of prunable weights removed, e.g. 0.9 — got {sparsity!r}"
        )
    return value


class _KeepMasked(keras.constraints.Constraint):
    """Re-applies the mask after each optimizer step (then the variable's own constraint, if it had one)."""

    def __init__(self, mask: keras.Variable, previous: Callable[[Any], Any] | None) -> None:
        self.mask = mask
        self.previous = previous

    def __call__(self, w: Any) -> Any:
        w = self.previous(w) if self.previous is not None else w
        return keras.ops.multiply(w, keras.ops.cast(self.mask, w.dtype))


@keras.saving.register_keras_serializable(package="tfcompress")
class WeightMask(keras.layers.Wrapper):
    """Keeps a fixed set of a layer's weights at zero: computes ``layer`` with ``w ⊙ m`` for each masked ``w``.

    Args:
        layer: a built or unbuilt Conv2D, DepthwiseConv2D or Dense layer (a class whose spec is ``maskable``).
        masked_weights: attribute names of the weights to mask, e.g. ``("kernel",)`` or ``("kernel", "bias")``.
            Default: the layer type's kernels.
        **kwargs: base layer arguments (``name``, ...).

    Input and output shapes are those of ``layer``. Masks start at all ones; :meth:`set_masks` changes them and
    zeroes the pruned weights. The masks are non-trainable weights, one per masked weight, in the order of
    ``masked_weights``.

    Example::

        masked = WeightMask(keras.layers.Dense(10), masked_weights=("kernel",))
        y = masked(x)
        masked.set_masks({"kernel": np.abs(masked.layer.kernel.numpy()) > 0.01})
    """

    def __init__(self, layer: keras.layers.Layer, masked_weights: tuple[str, ...] | list[str] | None = None,
                 **kwargs: Any) -> None:
        spec = specs.spec_for(layer)
        if spec is None or not spec.maskable or isinstance(layer, WeightMask):
            raise ValueError(
                f"WeightMask cannot wrap {type(layer).__name__} {layer.name!r}: maskable layer types are "
                f"{_maskable_classes()} (register a spec with maskable=True for another)"
            )
        masked_weights = tuple(masked_weights) if masked_weights is not None else spec.kernels
        allowed = spec.kernels + spec.biases
        unknown = [name for name in masked_weights if name not in allowed]
        if unknown or not masked_weights:
            raise ValueError(
                f"masked_weights of {layer.name!r} must be a non-empty subset of {allowed}, got {masked_weights}"
            )
        super().__init__(layer, **kwargs)
        self.masked_weights = masked_weights
        self.masks: list[keras.Variable] = []

    def build(self, input_shape: Any = None) -> None:
        super().build(input_shape)
        self.masks = []
        for name in self.masked_weights:
            variable = self.target(name)
            mask = self.add_weight(name=f"{name}_mask", shape=variable.shape, initializer="ones",
                                   trainable=False, dtype=variable.dtype)
            previous = variable.constraint
            if isinstance(previous, _KeepMasked):  # re-wrapping a layer: replace our constraint, keep the user's
                previous = previous.previous
            variable.constraint = _KeepMasked(mask, previous)
            self.masks.append(mask)
        self.built = True

    def target(self, name: str) -> keras.Variable:
        """The wrapped layer's variable ``name`` ("kernel", "bias"); refuses LoRA-enabled or quantized layers."""
        variable = getattr(self.layer, name, None)
        if not isinstance(variable, keras.Variable):
            raise ValueError(
                f"layer {self.layer.name!r} has no plain variable {name!r} to mask (got "
                f"{type(variable).__name__}); LoRA-enabled, quantized or bias-free layers cannot be masked there"
            )
        return variable

    def call(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        # The wrapped layer reads each masked variable as w ⊙ m (Keras's stateless-call mechanism); gradients
        # flow to w through the product, so pruned weights get zero gradient.
        mapping = [(self.target(name), self.target(name) * mask)
                   for name, mask in zip(self.masked_weights, self.masks, strict=True)]
        with keras.StatelessScope(state_mapping=mapping):
            return self.layer(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_masks(self) -> dict[str, np.ndarray]:
        """{weight name: bool mask}."""
        return {name: np.asarray(mask.numpy()) != 0 for name, mask in zip(self.masked_weights, self.masks, strict=True)}

    def set_masks(self, masks: Mapping[str, np.ndarray]) -> None:
        """Assigns new masks (for some or all masked weights) and zeroes the weights they prune."""
        for name, value in masks.items():
            if name not in self.masked_weights:
                raise ValueError(f"{self.name!r} masks {self.masked_weights}, not {name!r}")
            mask = self.masks[self.masked_weights.index(name)]
            value = np.asarray(value)
            if value.shape != tuple(mask.shape):
                raise ValueError(
                    f"mask for {self.name!r}/{name} has shape {value.shape}, the weight has {tuple(mask.shape)}"
                )
            mask.assign(value.astype(mask.dtype))
            variable = self.target(name)
            variable.assign(variable * mask)

    def masked_values(self) -> list[np.ndarray]:
        """The wrapped layer's weights (in ``layer.weights`` order) with the masks applied."""
        masks = {id(self.target(name)): mask for name, mask in zip(self.masked_weights, self.masks, strict=True)}
        return [np.asarray(w.numpy()) * (masks[id(w)].numpy() if id(w) in masks else 1) for w in self.layer.weights]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "masked_weights": list(self.masked_weights)}

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> WeightMask:
        # Like any layer's from_config, give an unbuilt layer: the wrapped layer's build shape would fix its
        # input channels, and a copy may be called on fewer (channel surgery). Loading builds it from ours.
        layer = {key: value for key, value in config["layer"].items() if key != "build_config"}
        return super().from_config({**config, "layer": layer}, custom_objects)


def _strip_weight_mask(layer: WeightMask, inputs: Any, *args: Any, **kwargs: Any) -> Any:
    """A fresh copy of the wrapped layer holding ``w ⊙ m``: zeros in place, no mask left."""
    plain = type(layer.layer).from_config(layer.layer.get_config())
    outputs = plain(inputs, *args, **kwargs)
    plain.set_weights(layer.masked_values())
    return outputs


specs.register(WeightMask, spec=specs.wrapper_spec(
    lambda layer: layer.layer,
    companions=lambda layer: [(mask, layer.target(name)) for name, mask in zip(
        layer.masked_weights, layer.masks, strict=True)],
    effective=lambda layer: specs.stateless([(layer.target(name), layer.target(name) * mask) for name, mask in zip(
        layer.masked_weights, layer.masks, strict=True)]),
    strip=_strip_weight_mask,
))


# ------------------------------------------------------------------------------------------- model helpers


def prunable_weights(model: keras.Model, prune_biases: bool = False) -> dict[str, dict[str, keras.Variable]]:
    """{layer name: {weight name: variable}} of every prunable layer of ``model`` (in nested models too).

    For a :class:`WeightMask` the wrapped layer's variables are given, under the wrapper's name. Biases are
    included when ``prune_biases`` is true and the layer has one.
    """
    weights: dict[str, dict[str, keras.Variable]] = {}
    for layer in iter_layers(model):
        spec = prunable_spec(layer)
        if spec is None:
            continue
        inner = layer.layer if isinstance(layer, WeightMask) else layer
        names = spec.kernels + (spec.biases if prune_biases else ())
        found = {name: getattr(inner, name) for name in names if isinstance(getattr(inner, name, None), keras.Variable)}
        if found:
            weights[layer.name] = found
    if not weights:
        raise ValueError(
            f"model {model.name!r} has no prunable layers ({_maskable_classes()}); "
            "nothing to prune"
        )
    return weights


def masks_from_scores(
    scores: Scores, sparsity: float, *, scope: str = "global", allow_empty_layers: bool = False
) -> Masks:
    """Keeps the highest-scoring weights: globally the top κ = round(N·(1 − sparsity)) of all N scored weights,
    or per layer the top round(N_l·(1 − sparsity)) of each layer's N_l.

    Exactly κ weights are kept (ties broken by position). Raises ValueError for a sparsity outside [0, 1), and,
    unless ``allow_empty_layers``, when a layer would keep no kernel weight at all: an empty layer disconnects
    the network and its output becomes constant.
    """
    sparsity = check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    groups = [scores] if scope == "global" else [{name: weights} for name, weights in scores.items()]
    masks: Masks = {name: {} for name in scores}
    for group in groups:
        entries = [(layer, weight, np.asarray(values))
                   for layer, per in group.items() for weight, values in per.items()]
        flat = np.concatenate([values.ravel() for _, _, values in entries]).astype(np.float64)
        kappa = round(flat.size * (1.0 - sparsity))
        keep = np.zeros(flat.size, dtype=bool)
        if kappa:
            # Stable sort on −score: exactly κ kept, ties go to the earlier position, deterministic.
            keep[np.argsort(-flat, kind="stable")[:kappa]] = True
        offset = 0
        for layer, weight, values in entries:
            masks[layer][weight] = keep[offset:offset + values.size].reshape(values.shape)
            offset += values.size
    if not allow_empty_layers:
        _refuse_empty_layers(masks, sparsity)
    return masks


def _refuse_empty_layers(masks: Masks, sparsity: float) -> None:
    # A layer that keeps no kernel weight passes no signal on, whatever its bias keeps.
    bias_names = {name for spec in specs.SPECS.registered().values() for name in spec.biases}
    empty = [name for name, per in masks.items() if not any(m.any() for w, m in per.items() if w not in bias_names)]
    if empty:
        raise ValueError(
            f"sparsity {sparsity} prunes every connection of layer(s) {', '.join(repr(n) for n in empty)}, which "
            "disconnects the network; lower the sparsity, or pass allow_empty_layers=True (--allow_empty_layers) "
            "if that is intended"
        )


def mask_sparsity(masks: Masks) -> dict[str, float]:
    """Fraction of pruned weights per layer, plus ``"total"``."""
    result = {name: 1.0 - sum(int(m.sum()) for m in per.values()) / sum(m.size for m in per.values())
              for name, per in masks.items()}
    kept = sum(int(m.sum()) for per in masks.values() for m in per.values())
    total = sum(m.size for per in masks.values() for m in per.values())
    result["total"] = 1.0 - kept / total
    return result


def copy_model(model: keras.Model) -> keras.Model:
    """An independent copy of a functional or Sequential model (new layers, same weight values)."""
    model = as_functional(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def apply_masks(model: keras.Model, masks: Masks, *, copy: bool = True) -> keras.Model:
    """Returns ``model`` with each layer named in ``masks`` wrapped in a :class:`WeightMask` holding its masks.

    The pruned weights are zeroed. With ``copy`` (default) ``model`` is left untouched; with ``copy=False``
    the returned model shares ``model``'s layers, whose pruned weights are zeroed in place. Layers that are
    already :class:`WeightMask` get their masks replaced.

    Raises:
        ValueError: a layer name that is not in the model or not prunable, or a mask of the wrong shape.
    """
    model = copy_model(model) if copy else model
    layers = {layer.name: layer for layer in iter_layers(model)}
    for name in masks:
        if name not in layers:
            raise ValueError(f"masks name layer {name!r}, which is not in model {model.name!r}")
        if prunable_spec(layers[name]) is None:
            raise ValueError(f"layer {name!r} ({type(layers[name]).__name__}) is not prunable")
    wrappers: dict[str, WeightMask] = {}

    def replacement_for(layer: keras.layers.Layer) -> Callable[..., Any] | None:
        if layer.name not in masks or isinstance(layer, WeightMask):
            return None
        if layer.name not in wrappers:  # a shared layer gets one wrapper, called at each of its calls
            wrappers[layer.name] = WeightMask(layer, masked_weights=tuple(masks[layer.name]), name=layer.name)
        return wrappers[layer.name]

    masked = replace_layers(model, replacement_for, share_weights=True)  # `model` is already a copy if asked
    for layer in iter_layers(masked):
        if isinstance(layer, WeightMask) and layer.name in masks:
            layer.set_masks(masks[layer.name])
    return masked


def wrap(model: keras.Model, *, prune_biases: bool = False, copy: bool = True) -> keras.Model:
    """``model`` with every prunable layer in a :class:`WeightMask` of ones (nothing pruned yet), ready for a
    pruning callback such as :class:`tfcompress.pruning.magnitude.GradualMagnitudePruning`."""
    ones = {name: {w: np.ones(v.shape, dtype=bool) for w, v in per.items()}
            for name, per in prunable_weights(model, prune_biases).items()}
    return apply_masks(model, ones, copy=copy)


def get_masks(model: keras.Model) -> Masks:
    """The masks held by the :class:`WeightMask` layers of ``model``."""
    return {layer.name: layer.get_masks() for layer in iter_layers(model) if isinstance(layer, WeightMask)}


def weight_sparsity(model: keras.Model, prune_biases: bool = False) -> dict[str, dict[str, int | float]]:
    """Zeros actually present in the (masked) prunable weights: {layer: {"params", "nonzero", "sparsity"}} and
    a ``"total"`` row. Works on masked, stripped and plain models alike."""
    masked = {layer.name: layer for layer in iter_layers(model) if isinstance(layer, WeightMask)}
    rows: dict[str, dict[str, int | float]] = {}
    for name, per in prunable_weights(model, prune_biases).items():
        masks = masked[name].get_masks() if name in masked else {}
        values = [np.asarray(v.numpy()) * masks.get(w, 1) for w, v in per.items()]
        params = sum(v.size for v in values)
        nonzero = sum(int(np.count_nonzero(v)) for v in values)
        rows[name] = {"params": params, "nonzero": nonzero, "sparsity": 1.0 - nonzero / params}
    params = sum(int(r["params"]) for r in rows.values())
    nonzero = sum(int(r["nonzero"]) for r in rows.values())
    rows["total"] = {"params": params, "nonzero": nonzero, "sparsity": 1.0 - nonzero / params}
    return rows
