"""Channel dependency graph of Keras models: groups of coupled channels and the weights that index them."""

from tfcompress.graph.channel_graph import ChannelGraph, Group, UnsupportedLayerError
from tfcompress.graph.handlers import BARRIER, Binding, ChannelHandler, handler_for, pass_through, register_handler
from tfcompress.graph.layout import Layout, Segment
from tfcompress.graph.walk import GraphWalk

__all__ = [
    "BARRIER", "Binding", "ChannelGraph", "ChannelHandler", "GraphWalk", "Group", "Layout", "Segment",
    "UnsupportedLayerError", "handler_for", "pass_through", "register_handler",
]
