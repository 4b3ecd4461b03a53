"""How a tensor's channel axis is made of channel groups.

A tensor's last axis is a sequence of :class:`Segment` — each covering one group's channels, every channel
repeated ``repeat`` times in a row (a depthwise convolution with multiplier m repeats its input channels m
times) — and the whole sequence is tiled ``tile`` times (``Flatten`` of an H×W×C map gives H·W tiles of the C
channels). Given a keep-mask per group, :meth:`Layout.mask` gives the mask of the tensor's channel axis, so that
surgery can slice every weight bound to that axis and masks can be applied at any tensor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Segment:
    group: int
    size: int
    repeat: int = 1

    @property
    def channels(self) -> int:
        return self.size * self.repeat


@dataclasses.dataclass(frozen=True)
class Layout:
    segments: tuple[Segment, ...]
    tile: int = 1

    @property
    def channels(self) -> int:
        return self.tile * sum(s.channels for s in self.segments)

    def resolve(self, find: Callable[[int], int]) -> Layout:
        """The same layout with every group replaced by its union-find representative."""
        return Layout(tuple(dataclasses.replace(s, group=find(s.group)) for s in self.segments), self.tile)

    def repeated(self, factor: int) -> Layout:
        """Each channel repeated ``factor`` times (a depthwise multiplier)."""
        return Layout(tuple(dataclasses.replace(s, repeat=s.repeat * factor) for s in self.segments), self.tile)

    def tiled(self, factor: int) -> Layout:
        return Layout(self.segments, self.tile * factor)

    def mask(self, group_masks: Mapping[int, np.ndarray]) -> np.ndarray:
        """Boolean keep-mask over this tensor's channels; groups absent from ``group_masks`` keep all."""
        parts = [
            np.repeat(np.asarray(group_masks[s.group], bool) if s.group in group_masks else np.ones(s.size, bool),
                      s.repeat)
            for s in self.segments
        ]
        return np.tile(np.concatenate(parts), self.tile)

    def channel_index(self) -> tuple[np.ndarray, np.ndarray]:
        """For every channel of the tensor: (its group, its index within the group)."""
        groups = np.concatenate([np.full(s.channels, s.group) for s in self.segments])
        indices = np.concatenate([np.repeat(np.arange(s.size), s.repeat) for s in self.segments])
        return np.tile(groups, self.tile), np.tile(indices, self.tile)

    def kept_channels(self, keep_counts: Mapping[int, int]) -> int:
        """Channels left in this tensor when each group keeps ``keep_counts[group]`` (default: all)."""
        return self.tile * sum(keep_counts.get(s.group, s.size) * s.repeat for s in self.segments)

    def same_structure(self, other: Layout) -> bool:
        return self.tile == other.tile and [(s.size, s.repeat) for s in self.segments] == [
            (s.size, s.repeat) for s in other.segments]
