"""Channel surgery: removing masked channels physically (:func:`shrink`), and training with channels masked
(:func:`insert_channel_masks`, :func:`set_channel_masks`).

Surgery replays the graph (:class:`tfcompress.keras_graph.GraphWalk`): every layer whose output channels change
is rebuilt by its spec's ``resize``, and every variable is sliced along the axes the channel graph bound to
channel groups. Compression layers keep what they hold: a weight mask's masks and a ternary layer's assignment
are sliced with the kernel they belong to, so a pruned sparse model keeps its zeros and a pruned ternary model
stays ternary. With ``calibration`` images, a removed channel is replaced by its mean (:func:`mean_replacement`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from tfcompress.graph import ChannelGraph, ChannelMask
from tfcompress.keras_graph import Call, LayerCopies, copy_layer


def fold_channel_masks(graph: ChannelGraph, masks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Per-group keep-``masks`` with the vectors of the model's ChannelMask layers folded in: what
    :func:`shrink` removes (``graph.cost`` of their counts is the cost of the shrunk model)."""
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


def channel_mask_params(graph: ChannelGraph, keep_counts: dict[int, int] | None = None) -> int:
    """Parameters of the model's ChannelMask layers (at ``keep_counts``), which :func:`shrink` removes."""
    return sum(graph.numel(variable, keep_counts) for call in graph.walk.calls
               if isinstance(call.layer, ChannelMask) and call.index == 0 for variable in call.layer.weights)


def shrink(
    model: keras.Model,
    masks: dict[int, np.ndarray] | None = None,
    *,
    keep: dict[int, Any] | None = None,
    graph: ChannelGraph | None = None,
    calibration: Iterable[Any] | None = None,
    calibration_batches: int = 8,
) -> keras.Model:
    """Rebuilds ``model`` with the masked-out channels physically removed and every variable sliced.

    Args:
        model: a functional or Sequential model; ``ChannelMask`` layers in it are folded into ``masks``
            and removed.
        masks: per-group boolean keep-masks (``ChannelGraph.groups`` ids); groups not listed keep all.
        keep: alternatively, per-group keep-indices.
        graph: the model's ``ChannelGraph`` if already built.
        calibration: images (or ``(images, labels)`` batches) to replace each removed channel by its mean over
            them (:func:`mean_replacement`): right where a channel was driven to a constant rather than masked
            (MorphNet), so removing it changes nothing; without, a removed channel reads as zero.
        calibration_batches: how many batches of ``calibration`` the means are taken over.

    Returns:
        A new flat functional model (nested models are inlined) computing what the masked model computes.

    Raises:
        ValueError: unknown group, mask of the wrong size, a non-prunable group, a mask that empties a group,
            keep-indices out of range. The input model is never modified.
    """
    graph = graph or ChannelGraph(model)
    group_masks = graph.check_masks(masks or {})
    if keep:
        group_masks.update(graph.masks_from_keep(keep))
    group_masks = graph.check_masks(fold_channel_masks(graph, group_masks))
    offsets = {} if calibration is None else mean_replacement(graph, group_masks, calibration, calibration_batches)

    def resized(call: Call) -> Any:
        spec = graph.spec(call.layer)
        kept = int(graph.layout(call.outputs[0]).mask(group_masks).sum())
        if spec is not None and spec.resize is not None and kept != call.outputs[0].shape[-1]:
            return spec.resize(call.layer, kept)
        return copy_layer(call.layer) if call.is_layer else call.layer

    def sliced_weights(layer: keras.layers.Layer) -> list[np.ndarray]:
        weights = []
        for variable in layer.weights:
            value = np.asarray(variable.numpy()) + offsets.get(id(variable), 0)
            for binding in graph.bindings_of(variable):
                value = np.take(value, np.flatnonzero(binding.layout.mask(group_masks)), axis=binding.axis)
            weights.append(value)
        return weights

    copies = LayerCopies(resized, sliced_weights)

    def call_fn(call: Call, args: tuple, kwargs: dict) -> Any:
        if isinstance(call.layer, ChannelMask):
            return args[0]
        if not call.is_layer:  # an operation node: stateless, but its arguments may count channels
            return resized(call)(*args, **kwargs)
        return copies(call, args, kwargs)

    return graph.walk.rebuild(call_fn)


def mean_replacement(
    graph: ChannelGraph, masks: dict[int, np.ndarray], calibration: Iterable[Any], num_batches: int = 8
) -> dict[int, np.ndarray]:
    """Offsets (by variable id) that replace each channel ``masks`` remove by its mean over ``calibration``:
    Evci et al. 2018, "Mean Replacement Pruning". A layer with dot products that reads removed channels gets
    their contribution at the mean, averaged over its output positions, added to its bias, or subtracted from
    the moving mean of the BatchNormalization it feeds when it has no bias. Exact for a channel that is a
    constant (a MorphNet-dead channel: zero kernel, and the bias or β after it) read by a dense layer or a
    'valid' convolution; at a 'same' convolution's border the padding reads zeros, not the mean. A layer
    called more than once, or with nowhere to put the offset, is left as plain removal.
    """
    readers = []
    for call in graph.dot_product_calls():
        removed = ~graph.layout(call.inputs[0]).mask(masks)
        if removed.any() and removed.size == call.inputs[0].shape[-1] and len(graph.layer_calls[id(call.layer)]) == 1:
            readers.append((call, removed))
    if not readers:
        return {}
    tensors = [call.inputs[0] for call, _ in readers]
    probe = graph.walk.rebuild(lambda call, args, kwargs: call.layer(*args, **kwargs), extra_outputs=tensors)
    sums: list[np.ndarray] = [np.zeros(tensor.shape[-1]) for tensor in tensors]
    shapes: list[tuple[int, ...]] = [()] * len(tensors)
    count = 0
    for index, batch in enumerate(calibration):
        if index >= num_batches:
            break
        activations = probe(batch[0] if isinstance(batch, tuple | list) else batch, training=False)[-len(tensors):]
        for position, activation in enumerate(activations):
            values = np.asarray(activation, np.float64)
            sums[position] += values.reshape(-1, values.shape[-1]).sum(axis=0) / values[..., 0].size
            shapes[position] = values.shape[1:]
        count += 1
    if not count:
        raise ValueError("calibration has no batch: pass images to take the removed channels' means over")
    offsets: dict[int, np.ndarray] = {}
    for (call, removed), total, shape in zip(readers, sums, shapes, strict=True):
        filled = np.zeros((1, *shape), np.float32)
        filled[..., removed] = (total / count)[removed]
        delta = np.asarray(call.layer(filled) - call.layer(np.zeros_like(filled)), np.float64)
        delta = delta.reshape(-1, delta.shape[-1]).mean(axis=0)
        target, sign = _offset_target(graph, call, delta.size)
        if target is not None:
            offsets[id(target)] = offsets.get(id(target), 0) + sign * delta
    return offsets


def _offset_target(graph: ChannelGraph, call: Call, size: int) -> tuple[Any, int]:
    """Where a constant added to ``call``'s output goes: its bias (+), or the moving mean (−) of the one
    BatchNormalization that reads it; (None, 0) if neither."""
    bias = getattr(call.layer, "bias", None)
    if bias is not None and tuple(bias.shape) == (size,):
        return bias, 1
    readers = graph.walk.readers(call.outputs[0])
    norm = readers[0].layer if len(readers) == 1 else None
    if isinstance(norm, keras.layers.BatchNormalization) and len(graph.layer_calls[id(norm)]) == 1 \
            and tuple(norm.moving_mean.shape) == (size,):
        return norm.moving_mean, -1
    return None, 0


def insert_channel_masks(
    model: keras.Model,
    masks: dict[int, np.ndarray] | None = None,
    *,
    graph: ChannelGraph | None = None,
    track_fisher: bool = False,
) -> keras.Model:
    """Returns a copy of ``model`` with a ``ChannelMask`` in front of every layer that consumes channels
    (layers with dot products: convolutions, dense layers, and wrappers of them), set from the per-group
    keep-``masks`` (all ones if None).

    The copy shares no layer with ``model``: weights are copied. Use :func:`set_channel_masks` to change the
    masks later and :func:`shrink` to remove the masked channels physically. ``track_fisher`` makes the masks
    accumulate Fisher saliencies while the model trains (:class:`tfcompress.pruning.fisher.FisherPruning`).
    """
    graph = graph or ChannelGraph(model)
    group_masks = graph.check_masks(masks or {})
    masked_tensors: dict[int, Any] = {}
    copies = LayerCopies()

    def mask_of(old_tensor: Any, new_tensor: Any) -> Any:
        key = id(graph.walk.canonical(old_tensor))
        if key not in masked_tensors:
            layout = graph.layout(old_tensor)
            repeats = {segment.repeat for segment in layout.segments}
            mask_layer = ChannelMask(track_fisher=track_fisher, positions=layout.tile,
                                     repeat=repeats.pop() if len(repeats) == 1 else 1,
                                     name=f"{old_tensor._keras_history.operation.name}_channel_mask")
            masked_tensors[key] = mask_layer(new_tensor)
            mask_layer.set_mask(graph.layout(old_tensor).mask(group_masks))
        return masked_tensors[key]

    def call_fn(call: Call, args: tuple, kwargs: dict) -> Any:
        spec = graph.spec(call.layer)
        if spec is not None and spec.dot_products(call) and not isinstance(call.layer, ChannelMask):
            args = (mask_of(call.inputs[0], args[0]), *args[1:])
        return copies(call, args, kwargs)

    return graph.walk.rebuild(call_fn)


def set_channel_masks(
    masked_model: keras.Model, masks: dict[int, np.ndarray], *, graph: ChannelGraph | None = None
) -> None:
    """Sets the ``ChannelMask`` layers of a masked model from per-group keep-masks (groups of its graph)."""
    graph = graph or ChannelGraph(masked_model)
    group_masks = graph.check_masks(masks)
    for call in graph.walk.calls:
        if isinstance(call.layer, ChannelMask) and call.index == 0:
            call.layer.set_mask(graph.layout(call.inputs[0]).mask(group_masks))
