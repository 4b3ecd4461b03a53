"""Quantization during training: ternary layers (``ternary``), EC2T (``ec2t``), the TTQ baseline (``ttq``).
Importing this package registers the ternary layers for ``.keras`` loading and their specs (channel slicing,
MicroNet counting in ``ternary_counting``). Their size and score reports (``scoring``) are measurements, one
layer up: ``from tfcompress.quantization import scoring``."""

from tfcompress.quantization import ec2t, ternary, ternary_counting, ttq

__all__ = ["ec2t", "ternary", "ternary_counting", "ttq"]
