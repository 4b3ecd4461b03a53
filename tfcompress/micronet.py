"""MicroNet challenge scoring (NeurIPS 2019): parameters and math operations counted the challenge's way.

The rules are those of the challenge's reference counter (google-research ``micronet_challenge/counting.py``)
as the EC2T authors apply them to whole networks (Becking et al., ``efficientCNNs/model_scoring/
main_scoring.py``):

* **Parameters** are counted in 32-bit units: a weight stored in ``param_bits`` counts ``param_bits/32``.
  A sparse kernel (sparsity s) is stored as its ``numel·(1−s)`` non-zeros plus a 1-bit mask over all
  ``numel`` elements, ``numel·(1−s)·param_bits/32 + numel/32``. Biases are dense. One deviation from
  counting.py, which adds the mask whenever s > 0: a kernel is counted dense when that is smaller
  (s ≤ 1/param_bits), see :func:`sparse_params`; for any real pruning level the two agree.
* **BatchNorm** folds into the preceding layer: its scale into the kernel (free), its shift into one bias per
  channel (``param_bits/32`` each, one addition per output element). A BatchNorm directly after a layer that
  already has a bias (and no activation) merges into that bias and costs nothing more.
* **Convolution / dense**: ``vector_length = k²·c_in·(1−s)`` (``k²·(1−s)`` for depthwise), per output element
  ``vector_length`` multiplications and ``vector_length − 1`` additions; +1 addition per output for a bias.
* **Activations**, per element: ReLU 1 multiplication (a comparison on 16-bit inputs, which the challenge
  counts as a multiplication); swish 3 mult + 1 add; sigmoid 2 mult + 1 add — for ReLU / Activation layers and
  the ``activation=`` of Conv / Dense alike.
* **Global average pooling**: ``c`` multiplications and ``(HW−1)·c`` additions; **skip Add**: ``HW·c``
  additions per extra input; **Multiply** (squeeze-excitation scale): ``HW·c`` multiplications per extra input.
* **ops** = ``mults·mul_bits/32 + adds·add_bits/32`` (defaults 16 and 32 bit, as in the challenge);
  **score** = ``params/P_ref + ops/F_ref`` with CIFAR-100: WideResNet-28-10, 36.5 M params, 10.49 B ops;
  ImageNet: MobileNetV2-1.4, 6.9 M params, 1170 M ops.

Our extensions, for layers the reference counter has no rule for: max pooling costs ``k²−1`` comparisons
per output counted as multiplications (the ReLU convention), average pooling ``k²−1`` additions + 1
multiplication per output, global max pooling ``(HW−1)·c`` comparisons, softmax / hard-sigmoid like sigmoid,
hard-swish like swish, ReLU6 like ReLU, leaky ReLU 2 multiplications, ``Subtract`` like ``Add``,
``Maximum`` / ``Minimum`` like ``Multiply`` (comparisons), ``Average`` like ``Add`` + 1 multiplication per
element. Not implemented: Becking's removal of dead channels (all-zero filters) before counting. Layers
without a rule are refused with an error naming them.

**Which counting gives the reference 10.49 B ops** (WRN-28-10 on 32×32, 100 classes, everything at 32 bit):
the convolutions and the dense layer alone give 10.4842 B (mults 5.2434 B + adds 5.2408 B), quoted as
10.48 B and 0.055 % short; 2·MACs gives 10.4866 B (rounds to 10.49 B, 0.03 % short); adding to the first the
BatchNorm bias additions (2.31 M), ReLUs (2.31 M), skip additions (1.15 M), global average pool and dense
bias gives **10.48998 B**, 2·10⁻⁶ from 10.49 B. So the reference is the full counting above, BN and ReLU
included; the tests pin it to 10⁻⁴, which only that convention meets. Its parameters: 36.519 M in the
convolutions and dense layer + 8,976 folded BN biases = 36.528 M ≈ 36.5 M (Keras' ``count_params``, with
BN's four vectors per channel, says 36.555 M).

**Where the rules live.** A layer's counter is its spec's ``micronet`` rule (:mod:`tfcompress.specs`; Keras'
layers in :mod:`tfcompress.specs.keras_layers`, operation nodes in :mod:`tfcompress.specs.keras_ops`, ternary
layers in :mod:`tfcompress.quantization.ternary_counting`); the dot products come from the same rule as the
profile's MACs and the channel graph's cost, read as the layer computes (a weight-masked kernel counts its
non-zeros). A counter is ``counter(call, precision) -> Count``; pass ``overrides={"layer_name": counter}`` to
:func:`score` for single layers. The building blocks are in :mod:`tfcompress.specs.counting`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import keras

from tfcompress.keras_graph import Call, GraphWalk
from tfcompress.profile import format_table
from tfcompress.specs import BASE_BITS, Count, Precision, class_path, spec_for
from tfcompress.specs.counting import weighted_ops

__all__ = ["BASE_BITS", "REFERENCES", "Count", "MicroNetLayer", "MicroNetScore", "Precision", "Reference", "score"]

Counter = Callable[[Call, Precision], Count]


@dataclasses.dataclass(frozen=True)
class Reference:
    """The baseline a task's score is relative to."""

    model: str
    params: float
    ops: float


REFERENCES: dict[str, Reference] = {
    "cifar100": Reference("WideResNet-28-10", params=36.5e6, ops=10.49e9),
    "imagenet": Reference("MobileNetV2-1.4", params=6.9e6, ops=1170e6),
}


# ---------------------------------------------------------------------------------------------------------
# Scoring.


@dataclasses.dataclass
class MicroNetLayer:
    """One row of a :class:`MicroNetScore`: a layer call's scoring params, mults, adds and weighted ops."""

    name: str
    layer_type: str
    params: float = 0.0
    mults: float = 0.0
    adds: float = 0.0
    ops: float = 0.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class MicroNetScore:
    """MicroNet counts of a model: per layer call, in total, and the challenge score for ``task``."""

    model_name: str
    task: str
    reference: Reference
    precision: Precision
    layers: list[MicroNetLayer]
    total: MicroNetLayer
    score: float

    def to_dict(self) -> dict[str, Any]:
        """Plain numbers and strings, ready for ``json.dumps``."""
        return {
            "model": self.model_name,
            "task": self.task,
            "reference": dataclasses.asdict(self.reference),
            "precision": dataclasses.asdict(self.precision),
            "score": self.score,
            "total": self.total.to_dict(),
            "layers": [row.to_dict() for row in self.layers],
        }

    def table(self) -> str:
        """A fixed-width text table, one line per layer call, the total, and the score."""
        columns = ("layer", "type", "params", "mults", "adds", "ops", "note")

        def cells(row: MicroNetLayer) -> tuple[str, ...]:
            return (
                row.name, row.layer_type, f"{row.params:,.1f}", f"{row.mults:,.0f}", f"{row.adds:,.0f}",
                f"{row.ops:,.0f}", row.note,
            )

        p = self.precision
        ref = self.reference
        footer = (
            f"params {self.total.params / 1e6:.4g} M / {ref.params / 1e6:g} M + ops {self.total.ops / 1e6:.4g} M"
            f" / {ref.ops / 1e6:g} M = score {self.score:.4g}  ({self.task}, reference {ref.model}; bits: "
            f"params {p.param_bits}, mults {p.mul_bits}, adds {p.add_bits})"
        )
        rows = [cells(row) for row in self.layers]
        return format_table(columns, rows, cells(self.total), left_aligned=2) + "\n" + footer


def score(
    model: keras.Model,
    task: str = "cifar100",
    param_bits: int = 16,
    mul_bits: int = 16,
    add_bits: int = 32,
    overrides: Mapping[str, Counter] | None = None,
) -> MicroNetScore:
    """Counts a model the MicroNet-challenge way and scores it against the task's reference network.

    Args:
        model: a functional or Sequential Keras model with a fixed input shape.
        task: ``"cifar100"`` (reference WideResNet-28-10) or ``"imagenet"`` (MobileNetV2-1.4).
        param_bits: bits of a stored parameter (16: each counts ½).
        mul_bits: bits of a multiplication's inputs (16: each counts ½).
        add_bits: bits of an accumulator (32: each addition counts 1).
        overrides: counters for single layers, by layer name (or by the call's name, ``"sub/layer#1"``),
            taking precedence over the layer specs' counters.

    Returns:
        A :class:`MicroNetScore`.

    Raises:
        ValueError: unknown task, bad bit widths, an override naming no layer, or a layer (or activation)
            without a counting rule — give its spec one (``tfcompress.specs.extend``).

    Example:

    ```python
    result = tfcompress.micronet.score(model, task="cifar100")
    print(result.table())
    result.score  # params/36.5 M + ops/10.49 B
    ```
    """
    if task not in REFERENCES:
        raise ValueError(f"task must be one of {sorted(REFERENCES)}, got {task!r}")
    precision = Precision(param_bits=param_bits, mul_bits=mul_bits, add_bits=add_bits)
    overrides = dict(overrides or {})
    unused_overrides = set(overrides)

    rows = []
    for call in GraphWalk(model).calls:
        counter = overrides.get(call.name) or overrides.get(getattr(call.layer, "name", ""))
        if counter is not None:
            unused_overrides -= {call.name, call.layer.name}
        else:
            spec = spec_for(call.layer)
            counter = spec.micronet if spec is not None else None
        if counter is None:
            cls = type(call.layer).__name__
            raise ValueError(
                f"MicroNet counting has no rule for layer {call.name!r} ({class_path(call.layer)}). Give its spec "
                f"one: tfcompress.specs.extend({cls}, micronet=counter), or pass "
                f"overrides={{{call.layer.name!r}: counter}} to score()."
            )
        count = counter(call, precision)
        note = count.note
        params = count.params
        if call.index:
            params = 0.0  # a shared layer's weights are stored once
            note = "; ".join(filter(None, [note, "shared layer: params counted at its first call"]))
        ops = count.ops if count.ops is not None else weighted_ops(count.mults, count.adds, precision)
        rows.append(
            MicroNetLayer(
                name=call.name, layer_type=type(call.layer).__name__, params=float(params),
                mults=float(count.mults), adds=float(count.adds), ops=float(ops), note=note,
            )
        )
    if unused_overrides:
        raise ValueError(f"overrides name no layer of {model.name!r}: {sorted(unused_overrides)}")

    total = MicroNetLayer(
        name="total", layer_type="",
        params=sum(r.params for r in rows), mults=sum(r.mults for r in rows),
        adds=sum(r.adds for r in rows), ops=sum(r.ops for r in rows),
    )
    reference = REFERENCES[task]
    value = total.params / reference.params + total.ops / reference.ops
    return MicroNetScore(
        model_name=model.name, task=task, reference=reference, precision=precision, layers=rows, total=total,
        score=float(value),
    )
