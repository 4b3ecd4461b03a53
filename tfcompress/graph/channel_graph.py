"""The channel dependency graph of a Keras model: which channel dimensions are coupled, which variables index
them, and what the model costs for any number of channels kept.

Built once from the model's functional graph (nested models and operation nodes included) by running every
layer's channel rule (:mod:`tfcompress.specs`); it knows nothing about *which* channels to cut — importances
score its groups, plans choose how many, and :func:`tfcompress.pruning.shrink` slices (the split of
Torch-Pruning's dependency graph).

A **group** is a set of channel dimensions that must be pruned together: a convolution's output channels,
everything an ``Add`` ties to them (the whole residual stream of a ResNet stage), the depthwise convolutions
and BatchNorms they flow through. Model inputs and outputs, and channels that reach a barrier, are not
prunable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import keras
import numpy as np

from tfcompress.keras_graph import Call, GraphWalk, channels_first
from tfcompress.specs import Binding, LayerSpec, Layout, Segment, barrier, class_path, spec_for
from tfcompress.specs.spec import SpecOverrides


class UnsupportedLayerError(ValueError):
    """A layer type whose spec has no channel rule."""


@dataclasses.dataclass
class Group:
    """Coupled channels pruned together.

    Attributes:
        id: the group's id (keys of masks and keep-index mappings).
        size: number of channels.
        prunable: False for model inputs/outputs and channels that reach a barrier.
        reasons: why it is not prunable.
        producers: names of the layers whose output channels are this group (convolutions, dense layers).
        members: (layer name, binding) for every variable axis indexed by this group.
    """

    id: int
    size: int
    prunable: bool = True
    reasons: list[str] = dataclasses.field(default_factory=list)
    producers: list[str] = dataclasses.field(default_factory=list)
    members: list[tuple[str, Binding]] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return "+".join(self.producers[:3]) + ("+…" if len(self.producers) > 3 else "") or f"group{self.id}"


class GraphBuilder:
    """What channel rules call while the graph is built: make groups, couple them, bind variables."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._groups: list[Group] = []
        self._producer_layouts: dict[int, Layout] = {}
        self.bindings: dict[int, list[Binding]] = {}  # id(variable) → its bindings
        self.owners: dict[int, Any] = {}  # id(variable) → the graph layer that owns it

    def find(self, group: int) -> int:
        while self._parent[group] != group:
            self._parent[group] = self._parent[self._parent[group]]
            group = self._parent[group]
        return group

    def new_group(self, size: int, owner: str, reason: str = "") -> Layout:
        """A fresh group of ``size`` channels (not prunable when a ``reason`` is given)."""
        group = Group(len(self._groups), size, producers=[owner])
        if reason:
            group.prunable, group.reasons = False, [reason]
        self._groups.append(group)
        self._parent.append(group.id)
        return Layout((Segment(group.id, size),))

    def producer_group(self, call: Call, size: int) -> Layout:
        """The output group of a producing layer (the same group at every call of a shared layer)."""
        key = id(call.layer)
        if key not in self._producer_layouts:
            self._producer_layouts[key] = self.new_group(size, call.layer.name)
        return self._producer_layouts[key]

    def _union_groups(self, a: int, b: int) -> None:
        a, b = sorted((self.find(a), self.find(b)))  # the older group stays the root: names read in order
        if a == b:
            return
        keep, gone = self._groups[a], self._groups[b]
        self._parent[b] = a
        keep.prunable = keep.prunable and gone.prunable
        keep.reasons += gone.reasons
        keep.producers += gone.producers

    def union(self, layouts: list[Layout], where: str) -> Layout:
        """Couples the channels of ``layouts`` position by position (an element-wise merge)."""
        first = layouts[0]
        if not all(first.same_structure(other) for other in layouts[1:]):
            for layout in layouts:
                self.block(layout, f"{where} merges tensors whose channels are grouped differently")
            return first
        for other in layouts[1:]:
            for a, b in zip(first.segments, other.segments, strict=True):
                self._union_groups(a.group, b.group)
        return first

    def block(self, layout: Layout, reason: str) -> None:
        """Marks every group in ``layout`` as not prunable."""
        for segment in layout.segments:
            group = self._groups[self.find(segment.group)]
            group.prunable = False
            if reason not in group.reasons:
                group.reasons.append(reason)

    def bind(self, call: Call, variable: Any, axis: int, layout: Layout, role: str) -> None:
        """Records that ``variable``'s ``axis`` indexes ``layout``'s channels; a shared layer's later calls
        must index the same channels, so their layouts are coupled with the first call's."""
        bindings = self.bindings.setdefault(id(variable), [])
        for earlier in bindings:
            if earlier.axis == axis:
                self.union([earlier.layout, layout], f"shared layer {call.layer.name}")
                return
        bindings.append(Binding(variable, axis, layout, role))

    def tie(self, extra: Any, base: Any) -> None:
        """``extra`` has ``base``'s shape and is sliced like it (a mask, a ternary assignment)."""
        for binding in self.bindings.get(id(base), []):
            self.bindings.setdefault(id(extra), []).append(dataclasses.replace(binding, variable=extra, role="param"))

    def groups(self) -> dict[int, Group]:
        return {g.id: g for g in self._groups if self.find(g.id) == g.id}


class ChannelGraph:
    """Channel groups of a functional or Sequential Keras model.

    Args:
        model: the model (nested functional sub-models and Keras operation nodes are followed).
        barriers: layer names or classes to treat as opaque (their channels are kept).
        specs: per-call spec overrides, ``{LayerClass: LayerSpec}``, taking precedence over the registry.

    Raises:
        ValueError: a subclassed model (no functional graph to follow), or a channels_first layer.
        UnsupportedLayerError: a layer type without a channel rule; the message says how to add one.
    """

    def __init__(self, model: keras.Model, barriers: Iterable[str | type] = (), specs: SpecOverrides | None = None):
        self.walk = GraphWalk(model)
        self.model = self.walk.model
        self.specs = dict(specs or {})
        barrier_names = {b for b in barriers if isinstance(b, str)}
        barrier_types = tuple(b for b in barriers if isinstance(b, type))
        builder = GraphBuilder()
        layouts: dict[int, Layout] = {}
        for tensor in self.walk.inputs:
            layouts[id(tensor)] = builder.new_group(int(tensor.shape[-1]), "input", reason="model input")
        self.layer_calls: dict[int, list[Call]] = {}
        for call in self.walk.calls:
            layer = call.layer
            spec = self.spec(layer)
            if getattr(layer, "name", None) in barrier_names or isinstance(layer, barrier_types):
                rule = barrier
            else:
                rule = _channel_rule(call, spec)
            outputs = rule(call, [layouts[id(t)] for t in call.inputs], builder)
            for tensor, layout in zip(call.outputs, outputs, strict=True):
                layouts[id(tensor)] = layout
            for extra, base in spec.companions(layer) if spec is not None else ():
                builder.tie(extra, base)
            self.layer_calls.setdefault(id(layer), []).append(call)
            for variable in getattr(layer, "weights", ()):
                builder.owners.setdefault(id(variable), layer)
        for tensor in self.walk.outputs:
            builder.block(layouts[id(tensor)], "model output")

        self._find = builder.find
        self.groups: dict[int, Group] = builder.groups()
        self._layouts = {key: layout.resolve(builder.find) for key, layout in layouts.items()}
        self.bindings: dict[int, list[Binding]] = {
            key: [dataclasses.replace(b, layout=b.layout.resolve(builder.find)) for b in bindings]
            for key, bindings in builder.bindings.items()
        }
        self.layers: dict[int, Any] = {id(c.layer): c.layer for c in self.walk.calls}
        self.owners: dict[int, Any] = builder.owners
        for key, bindings in self.bindings.items():
            for binding in bindings:
                owner = self.owners.get(key)
                for segment in binding.layout.segments:
                    self.groups[segment.group].members.append((getattr(owner, "name", "?"), binding))

    def spec(self, layer: Any) -> LayerSpec | None:
        return spec_for(layer, self.specs)

    # ------------------------------------------------------------------------------------------ queries

    @property
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups.values() if g.prunable]

    def dot_product_calls(self) -> list[Call]:
        """The calls of layers with dot products (convolutions, dense layers, wrappers of them): where channels
        are read, and where a removed channel's absence (or its mask) is felt."""
        return [call for call in self.walk.calls
                if (spec := self.spec(call.layer)) is not None and spec.dot_products(call)]

    def layout(self, tensor: Any) -> Layout:
        """The channel layout of a tensor of the model's graph."""
        return self._layouts[id(self.walk.canonical(tensor))]

    def bindings_of(self, variable: Any) -> list[Binding]:
        return self.bindings.get(id(variable), [])

    def group_of_layer(self, layer_name: str) -> Group:
        """The group whose channels the layer named ``layer_name`` produces (its output channels)."""
        for call in self.walk.calls:
            if getattr(call.layer, "name", None) == layer_name:
                return self.groups[self.layout(call.outputs[0]).segments[0].group]
        raise ValueError(f"no layer named {layer_name!r} in model {self.model.name!r}")

    def full_masks(self) -> dict[int, np.ndarray]:
        return {g.id: np.ones(g.size, bool) for g in self.groups.values()}

    def check_masks(self, masks: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Validates per-group keep-masks: known prunable groups, right sizes, at least one channel kept."""
        checked = {}
        for group_id, mask in masks.items():
            if group_id not in self.groups:
                raise ValueError(f"unknown group {group_id}; groups are {sorted(self.groups)}")
            group = self.groups[group_id]
            mask = np.asarray(mask, bool)
            if mask.shape != (group.size,):
                raise ValueError(f"group {group_id} ({group.name}) has {group.size} channels, mask has {mask.shape}")
            if mask.all():
                continue
            if not group.prunable:
                raise ValueError(f"group {group_id} ({group.name}) is not prunable: {'; '.join(group.reasons)}")
            if not mask.any():
                raise ValueError(f"the mask of group {group_id} ({group.name}) removes all {group.size} channels; "
                                 "keep at least one (removing a whole group disconnects the network)")
            checked[group_id] = mask
        return checked

    def masks_from_keep(self, keep: Mapping[int, Iterable[int]]) -> dict[int, np.ndarray]:
        """Keep-masks from keep-indices per group (indices checked to be in range)."""
        masks = {}
        for group_id, indices in keep.items():
            if group_id not in self.groups:
                raise ValueError(f"unknown group {group_id}; groups are {sorted(self.groups)}")
            size = self.groups[group_id].size
            indices = np.asarray(list(indices), dtype=np.int64)
            if indices.size and (indices.min() < 0 or indices.max() >= size):
                raise ValueError(f"keep indices of group {group_id} must be in [0, {size}), got "
                                 f"{indices.min()}..{indices.max()}")
            mask = np.zeros(size, bool)
            mask[indices] = True
            masks[group_id] = mask
        return self.check_masks(masks)

    # --------------------------------------------------------------------------------------------- cost

    def numel(self, variable: Any, keep_counts: Mapping[int, int] | None = None) -> int:
        """Elements of ``variable`` when each group keeps ``keep_counts[group]`` channels (default: all)."""
        shape = list(variable.shape)
        for binding in self.bindings_of(variable):
            shape[binding.axis] = binding.layout.kept_channels(keep_counts or {})
        return int(np.prod(shape))

    def cost(self, keep_counts: Mapping[int, int] | None = None, metric: str = "macs") -> int:
        """Parameters or MACs of the model when each group keeps ``keep_counts[group]`` channels.

        Every variable is multilinear in the channel counts of its bound axes, so both are exact without
        rebuilding the model: ``params`` is Σ numel over all variables (``model.count_params()``), ``macs``
        Σ positions · numel over the dot products of every call, by the specs' one MAC rule (the profile's).
        """
        if metric not in ("macs", "params"):
            raise ValueError(f"metric must be 'macs' or 'params', got {metric!r}")
        total = 0
        for key, layer in self.layers.items():
            if metric == "params":
                total += sum(self.numel(v, keep_counts) for v in getattr(layer, "weights", ()))
                continue
            spec = self.spec(layer)
            for call in self.layer_calls[key] if spec is not None else ():
                total += sum(dot.positions * self.numel(dot.variable, keep_counts) for dot in spec.dot_products(call))
        return total

    def summary(self) -> str:
        """One line per group: id, channels, prunable, producers."""
        lines = []
        for group in self.groups.values():
            state = "prunable" if group.prunable else f"kept ({group.reasons[0]})"
            lines.append(f"group {group.id:>4}  {group.size:>5} ch  {state:<40.40}  {group.name}")
        return "\n".join(lines)


def _channel_rule(call: Call, spec: LayerSpec | None):
    layer = call.layer
    if channels_first(layer):
        raise UnsupportedLayerError(
            f"layer {call.name!r} ({class_path(layer)}) uses data_format='channels_first'; channel pruning follows "
            "the last axis. Build the model channels_last (TFLite's CPU kernels want it too)."
        )
    if spec is None or spec.channels is None:
        cls = type(layer).__name__
        raise UnsupportedLayerError(
            f"layer {call.name!r} of class {class_path(layer)} has no channel rule. Register a spec with "
            f"tfcompress.specs.register({cls}, spec=tfcompress.specs.LayerSpec(channels=...)), or keep its "
            f"channels with ChannelGraph(model, barriers=[{cls}]) or "
            f"ChannelGraph(model, specs={{{cls}: LayerSpec(channels=tfcompress.specs.barrier)}})."
        )
    return spec.channels
