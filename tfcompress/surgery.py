"""Rebuilding a Keras model: layers replaced (:func:`replace_layers`), channels removed (:func:`shrink`),
channel masks inserted (:func:`insert_channel_masks`), weights carried over.

:func:`replace_layers` is what ``export.strip`` uses to turn training-only layers into plain Keras, and what
the Tucker and ternary work use to swap a layer for a block; Keras 3's ``clone_model`` with a
``call_function`` does its graph walk (the workaround discussed in keras-team/keras#17569 "Support Model
Surgery"). Channel surgery replays the graph itself (:class:`tfcompress.graph.GraphWalk`) because every
layer's config and weights change with the channels around it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras.src.models.functional import Functional  # no public alias; clone_model makes the same check

# A replacement takes the inputs the original layer was called with and returns the new output tensor(s).
Replacement = Callable[..., Any]


def as_functional(model: keras.Model) -> keras.Model:
    """A functional view of a built Sequential model (same layer objects); functional models pass through."""
    if isinstance(model, keras.Sequential):
        if not model.built:
            raise ValueError(f"Sequential model {model.name!r} is not built; give it an Input or call it once.")
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not isinstance(model, Functional):
        raise ValueError(
            f"{type(model).__name__} {model.name!r} is a subclassed model; tfcompress rewrites functional and "
            "Sequential models only. Rebuild it with the functional API."
        )
    return model


def iter_layers(model: keras.Model):
    """Every layer of ``model``, descending into nested models (the nested model itself is yielded first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


def replace_layers(
    model: keras.Model,
    replacement_for: Callable[[keras.layers.Layer], Replacement | None],
    *,
    share_weights: bool = False,
) -> keras.Model:
    """Returns a copy of ``model`` where each layer for which ``replacement_for(layer)`` gives a callable is
    replaced by that callable's output (``replacement_for`` always sees the original layers).

    The layers that are kept are copies with the same weights, so training the result leaves ``model`` as it
    was; ``share_weights=True`` reuses them instead (cheaper, for a throw-away view such as export).
    Nested functional models are rewritten too.
    """
    model = as_functional(model)
    originals: dict[int, keras.layers.Layer] = {}  # id(copy) → original
    weights_set: set[int] = set()

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if share_weights:
            return layer
        copy = type(layer).from_config(layer.get_config())
        originals[id(copy)] = layer
        return copy

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        original = originals.get(id(layer), layer)
        replacement = replacement_for(original)
        if replacement is not None:
            return replacement(*args, **kwargs)
        outputs = layer(*args, **kwargs)
        if layer is not original and id(layer) not in weights_set:  # built by its first call
            layer.set_weights(original.get_weights())
            weights_set.add(id(layer))
        return outputs

    return keras.models.clone_model(model, clone_function=clone, call_function=call, recursive=True)


# ------------------------------------------------------------------------------------------- channel surgery


class _LayerCopies:
    """One new layer per original layer (``make(call)``), given its weights (``weights(layer)``) right after
    its first call has built it; later calls of a shared layer reuse the copy."""

    def __init__(self, make: Callable[[Any], keras.layers.Layer], weights: Callable[[Any], list[np.ndarray]]):
        self._make, self._weights = make, weights
        self._copies: dict[int, keras.layers.Layer] = {}

    def __call__(self, call: Any, args: tuple, kwargs: dict) -> Any:
        key = id(call.layer)
        first = key not in self._copies
        if first:
            self._copies[key] = self._make(call)
        outputs = self._copies[key](*args, **kwargs)
        if first and call.layer.weights:
            self._copies[key].set_weights(self._weights(call.layer))
        return outputs


def _same_config(call: Any) -> keras.layers.Layer:
    return type(call.layer).from_config(call.layer.get_config())


def _group_masks_from_channel_masks(graph, masks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Folds the vectors of the model's ChannelMask layers into per-group keep-masks."""
    from tfcompress.pruning.channel_mask import ChannelMask

    combined = {key: np.asarray(value, bool).copy() for key, value in masks.items()}
    for call in graph.walk.calls:
        if not isinstance(call.layer, ChannelMask) or call.index:
            continue
        vector = np.asarray(call.layer.mask.numpy()) > 0.5
        if vector.all():
            continue
        groups, indices = graph.layout(call.inputs[0]).channel_index()
        for group in np.unique(groups[~vector]):
            group_mask = combined.setdefault(int(group), np.ones(graph.groups[int(group)].size, bool))
            group_mask[indices[(groups == group) & ~vector]] = False
    return combined


def shrink(
    model: keras.Model,
    masks: dict[int, np.ndarray] | None = None,
    *,
    keep: dict[int, Any] | None = None,
    graph=None,
) -> keras.Model:
    """Rebuilds ``model`` with the masked-out channels physically removed and every weight sliced.

    Args:
        model: a functional or Sequential model; ``ChannelMask`` layers in it are folded into ``masks``
            and removed.
        masks: per-group boolean keep-masks (``ChannelGraph.groups`` ids); groups not listed keep all.
        keep: alternatively, per-group keep-indices.
        graph: the model's ``ChannelGraph`` if already built.

    Returns:
        A new flat functional model (nested models are inlined) computing what the masked model computes.

    Raises:
        ValueError: unknown group, mask of the wrong size, a non-prunable group, a mask that empties a group,
            keep-indices out of range. The input model is never modified.
    """
    from tfcompress.graph import ChannelGraph, handler_for
    from tfcompress.graph.channel_graph import weight_name
    from tfcompress.pruning.channel_mask import ChannelMask

    graph = graph or ChannelGraph(model)
    group_masks = graph.check_masks(masks or {})
    if keep:
        group_masks.update(graph.masks_from_keep(keep))
    group_masks = graph.check_masks(_group_masks_from_channel_masks(graph, group_masks))

    def new_layer(call) -> keras.layers.Layer:
        handler = handler_for(call.layer)
        kept = int(graph.layout(call.outputs[0]).mask(group_masks).sum())
        if handler is None or handler.resize is None or kept == call.outputs[0].shape[-1]:
            return _same_config(call)
        return type(call.layer).from_config(handler.resize(call.layer.get_config(), kept))

    def sliced_weights(layer: keras.layers.Layer) -> list[np.ndarray]:
        weights = []
        for weight in layer.weights:
            value = np.asarray(weight.numpy())
            name = weight_name(layer, weight)
            for binding in graph.bindings.get(id(layer), []):
                if binding.weight == name:
                    keep_index = np.flatnonzero(binding.layout.mask(group_masks))
                    value = np.take(value, keep_index, axis=binding.axis)
            weights.append(value)
        return weights

    copies = _LayerCopies(new_layer, sliced_weights)

    def call_fn(call, args, kwargs):
        return args[0] if isinstance(call.layer, ChannelMask) else copies(call, args, kwargs)

    return graph.walk.rebuild(call_fn)


def insert_channel_masks(model: keras.Model, masks: dict[int, np.ndarray] | None = None, *, graph=None) -> keras.Model:
    """Returns a copy of ``model`` with a ``ChannelMask`` in front of every layer that consumes channels
    (convolutions, dense layers), set from the per-group keep-``masks`` (all ones if None).

    The copy shares no layer with ``model``: weights are copied. Use :func:`set_channel_masks` to change the
    masks later and :func:`shrink` to remove the masked channels physically.
    """
    from tfcompress.graph import ChannelGraph, handler_for
    from tfcompress.pruning.channel_mask import ChannelMask

    graph = graph or ChannelGraph(model)
    group_masks = graph.check_masks(masks or {})
    masked_tensors: dict[int, Any] = {}
    copies = _LayerCopies(_same_config, lambda layer: layer.get_weights())

    def mask_of(old_tensor, new_tensor):
        key = id(graph.walk.canonical(old_tensor))
        if key not in masked_tensors:
            mask_layer = ChannelMask(name=f"{old_tensor._keras_history.operation.name}_channel_mask")
            masked_tensors[key] = mask_layer(new_tensor)
            mask_layer.set_mask(graph.layout(old_tensor).mask(group_masks))
        return masked_tensors[key]

    def call_fn(call, args, kwargs):
        handler = handler_for(call.layer)
        if handler is not None and handler.kernels and not isinstance(call.layer, ChannelMask):
            args = (mask_of(call.inputs[0], args[0]), *args[1:])
        return copies(call, args, kwargs)

    return graph.walk.rebuild(call_fn)


def set_channel_masks(masked_model: keras.Model, masks: dict[int, np.ndarray], *, graph=None) -> None:
    """Sets the ``ChannelMask`` layers of a masked model from per-group keep-masks (groups of its graph)."""
    from tfcompress.graph import ChannelGraph
    from tfcompress.pruning.channel_mask import ChannelMask

    graph = graph or ChannelGraph(masked_model)
    group_masks = graph.check_masks(masks)
    for call in graph.walk.calls:
        if isinstance(call.layer, ChannelMask) and call.index == 0:
            call.layer.set_mask(graph.layout(call.inputs[0]).mask(group_masks))
