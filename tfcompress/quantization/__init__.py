"""Quantization during training: ternary layers (``ternary``), EC2T (``ec2t``), the TTQ baseline (``ttq``),
and their sizes and MicroNet counting (``scoring``). Importing this package registers the ternary layers for
``.keras`` loading and their MicroNet counter."""

from tfcompress.quantization import ec2t, scoring, ternary, ttq

__all__ = ["ec2t", "scoring", "ternary", "ttq"]
