"""Channel dependency graph of Keras models: groups of coupled channels, the variables that index them, the
exact cost of any channel counts, and ``ChannelMask`` for training with channels masked."""

from tfcompress.graph.channel_graph import ChannelGraph, GraphBuilder, Group, UnsupportedLayerError
from tfcompress.graph.channel_mask import ChannelMask

__all__ = ["ChannelGraph", "ChannelMask", "GraphBuilder", "Group", "UnsupportedLayerError"]
