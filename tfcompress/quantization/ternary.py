"""Ternary Conv2D / DepthwiseConv2D / Dense layers with learned centroids, as trained by EC2T and TTQ.

A ternary layer keeps its ordinary Keras weights (``kernel``, ``bias``) — the kernel becomes the full-precision
**shadow** kernel W — and adds two learned per-layer centroids ``w_p``, ``w_n`` (> 0) and a non-trainable
``assignment`` A ∈ {−1, 0, +1} of the kernel's shape. The forward pass uses the ternary kernel

    W_t = w_p·[A = +1] − w_n·[A = −1]          (values {−w_n, 0, +w_p})

and the gradients of Trained Ternary Quantization (Zhu et al., ICLR 2017, eq. 7–8), which EC2T (Marbán,
Becking et al., CVPR-W 2020) inherits: with g = ∂L/∂W_t,

    ∂L/∂W   = w_p·g on A = +1,  w_n·g on A = −1,  g on A = 0      (scaled straight-through estimator)
    ∂L/∂w_p =  Σ_{A=+1} g
    ∂L/∂w_n = −Σ_{A=−1} g

**The w_n sign** (``wn_gradient``). ``"exact"`` (default) is the derivative above, which is also what TTQ's
official code computes (czhu95/ternarynet, ``tw_ternarize``). ``"reference"`` reproduces the EC2T reference
(efficientCNNs ``get_grads``, copied from TropComplique's PyTorch TTQ), which passes ``+Σ_{A=−1} g`` although
the weight value is −w_n, so gradient descent moves w_n the wrong way and only EC2T's 0.675·std floor keeps it
in check (czhu95/ternarynet#7 reports Wp/Wn turning negative). The published EC2T numbers were obtained with
``"reference"``.

**Entropy-constrained pruning** (``mode="prune"``, EC2T's ECP): the assignment only decides which weights are
zero; the non-zeros keep their full-precision values, ``W_t = [A ≠ 0]·W``. The gradients are the ternary mode's,
as in the reference (``get_grads`` does not look at the mode): the shadow kernel gets the scaled g above and
the centroids train on Σ g, although they only shape the assignment cost (they no longer enter W_t).

Which assignment A a step uses is decided outside the layer, by the EC2T or TTQ callback
(:mod:`tfcompress.quantization.ec2t`, :mod:`tfcompress.quantization.ttq`), both built on
:class:`AssignmentCallback`. Centroids train with a smaller learning rate than the rest (reference: Adam 1e-4
for the model and shadow weights, 1e-5 for centroids): :class:`CentroidAdam` does that in one optimizer.

At export, :func:`tfcompress.export.strip` turns a ternary layer into the plain layer it came from, whose kernel
holds W_t (three values per layer; after BatchNorm folding, three per output channel). A ternary layer's spec
(:mod:`tfcompress.specs`) is its plain class's, with the assignment sliced like the kernel, measurements reading
W_t, and Becking's MicroNet counting: a ternary model can be channel-pruned, profiled and scored as it trains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfcompress import specs, training
from tfcompress.keras_graph import GraphWalk, iter_layers, replace_layers
from tfcompress.quantization.ternary_counting import count_ternary
from tfcompress.summaries import Summaries
from tfcompress.training import student_of

MODES = ("ternary", "prune")
WN_GRADIENTS = ("exact", "reference")  # ∂L/∂w_n = −Σ g (exact) or +Σ g (the EC2T reference code)
# Constructor arguments a ternary layer adds to its plain base layer (dropped again by strip).
_TERNARY_ARGS = ("mode", "wn_gradient", "assignment_frozen")


def check_options(mode: str, wn_gradient: str) -> None:
    """Raises ValueError for a ``mode`` or ``wn_gradient`` a ternary layer does not know."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if wn_gradient not in WN_GRADIENTS:
        raise ValueError(f"wn_gradient must be one of {WN_GRADIENTS}, got {wn_gradient!r}")


def ternary_kernel(
    shadow: tf.Tensor,
    w_p: tf.Tensor,
    w_n: tf.Tensor,
    assignment: tf.Tensor,
    mode: str = "ternary",
    wn_gradient: str = "exact",
) -> tf.Tensor:
    """The kernel the forward pass uses, with the TTQ / EC2T gradients (see the module docstring).

    Args:
        shadow: the full-precision kernel W.
        w_p, w_n: the positive centroid magnitudes (scalars).
        assignment: A, same shape as ``shadow``, values −1, 0, +1 (no gradient).
        mode: "ternary" (W_t ∈ {−w_n, 0, w_p}) or "prune" (W_t = [A ≠ 0]·W; same gradients).
        wn_gradient: "exact" (∂L/∂w_n = −Σ g) or "reference" (+Σ g, as the EC2T reference code).
    """
    check_options(mode, wn_gradient)
    positive = tf.cast(assignment > 0, shadow.dtype)
    negative = tf.cast(assignment < 0, shadow.dtype)
    zero = 1.0 - positive - negative
    wn_sign = 1.0 if wn_gradient == "reference" else -1.0

    @tf.custom_gradient
    def forward(shadow, w_p, w_n):
        kernel = (positive + negative) * shadow if mode == "prune" else w_p * positive - w_n * negative

        def gradient(upstream):
            # The same in both modes, as the reference's get_grads: in "prune" mode too the shadow gradient is
            # scaled by the centroids and the centroids train, although they no longer enter W_t.
            d_shadow = upstream * (w_p * positive + w_n * negative + zero)
            d_w_p = tf.reduce_sum(upstream * positive)
            d_w_n = wn_sign * tf.reduce_sum(upstream * negative)
            return d_shadow, d_w_p, d_w_n

        return kernel, gradient

    return forward(shadow, w_p, w_n)


class TernaryMixin:
    """What the three ternary layers share: the extra weights, the ternary kernel and the config.

    Args (in addition to the base layer's):
        mode: "ternary" or "prune" (entropy-constrained pruning: non-zeros keep full precision).
        wn_gradient: "exact" (∂L/∂w_n = −Σ g, default) or "reference" (+Σ g, the EC2T reference code's sign).
        assignment_frozen: the assignment no longer changes and the shadow kernel is not trained (EC2T's
            retrain phase); set by :func:`freeze_assignment`.

    Weights: the base layer's ``kernel`` (the shadow W) and ``bias``; trainable scalars ``w_p``, ``w_n``;
    non-trainable ``assignment`` (kernel shape, −1/0/+1) and ``quantization_steps`` (how many assignment updates
    the layer went through, so that a retrain phase can refuse a layer that was never quantized).
    """

    plain_class: type

    def __init__(
        self, *args: Any, mode: str = "ternary", wn_gradient: str = "exact", assignment_frozen: bool = False,
        **kwargs: Any,
    ) -> None:
        check_options(mode, wn_gradient)
        super().__init__(*args, **kwargs)
        self.mode = mode
        self.wn_gradient = wn_gradient
        self.assignment_frozen = bool(assignment_frozen)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        # .keras files saved before the boolean reference_wn_gradient became wn_gradient still load.
        if "reference_wn_gradient" in config:
            config = dict(config)
            config["wn_gradient"] = "reference" if config.pop("reference_wn_gradient") else "exact"
        return super().from_config(config)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.w_p = self.add_weight(shape=(), name="w_p", initializer="ones", trainable=True)
        self.w_n = self.add_weight(shape=(), name="w_n", initializer="ones", trainable=True)
        self.assignment = self.add_weight(
            shape=self.kernel.shape, name="assignment", initializer="zeros", trainable=False
        )
        self.quantization_steps = self.add_weight(
            shape=(), name="quantization_steps", initializer="zeros", trainable=False
        )
        if self.assignment_frozen:
            self.kernel.trainable = False

    def ternary_kernel(self) -> tf.Tensor:
        """W_t, differentiable with respect to the shadow kernel and the centroids."""
        dtype = self.compute_dtype
        return ternary_kernel(
            ops.cast(self.kernel, dtype), ops.cast(self.w_p, dtype), ops.cast(self.w_n, dtype),
            ops.cast(self.assignment, dtype), self.mode, self.wn_gradient,
        )

    def _add_bias_and_activate(self, outputs: tf.Tensor, channels: int) -> tf.Tensor:
        if self.use_bias:
            channels_first = getattr(self, "data_format", "channels_last") == "channels_first"
            rank = len(outputs.shape)
            shape = (1, channels) + (1,) * (rank - 2) if channels_first else (1,) * (rank - 1) + (channels,)
            outputs = ops.add(outputs, ops.reshape(self.bias, shape))
        return self.activation(outputs) if self.activation is not None else outputs

    # Conv and Dense save only kernel and bias (their own quantization logic); save every weight instead.
    def save_own_variables(self, store: Any) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store: Any) -> None:
        keras.layers.Layer.load_own_variables(self, store)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(), "mode": self.mode, "wn_gradient": self.wn_gradient,
            "assignment_frozen": self.assignment_frozen,
        }


@keras.saving.register_keras_serializable(package="tfcompress")
class TernaryConv2D(TernaryMixin, keras.layers.Conv2D):
    """A ``Conv2D`` whose forward pass uses the ternary kernel; see :class:`TernaryMixin` and the module doc.

    Example::

        layer = TernaryConv2D(16, 3, padding="same", use_bias=False)
    """

    plain_class = keras.layers.Conv2D

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        # Conv2D.call passes its kernel here; use the ternary one instead (groups, dilation etc. unchanged).
        return super().convolution_op(inputs, self.ternary_kernel())


@keras.saving.register_keras_serializable(package="tfcompress")
class TernaryDepthwiseConv2D(TernaryMixin, keras.layers.DepthwiseConv2D):
    """A ``DepthwiseConv2D`` whose forward pass uses the ternary kernel; see :class:`TernaryMixin`."""

    plain_class = keras.layers.DepthwiseConv2D

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = ops.depthwise_conv(
            inputs, self.ternary_kernel(), strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format,
        )
        return self._add_bias_and_activate(outputs, int(np.prod(self.kernel.shape[-2:])))


@keras.saving.register_keras_serializable(package="tfcompress")
class TernaryDense(TernaryMixin, keras.layers.Dense):
    """A ``Dense`` whose forward pass uses the ternary kernel; see :class:`TernaryMixin`."""

    plain_class = keras.layers.Dense

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        return self._add_bias_and_activate(ops.matmul(inputs, self.ternary_kernel()), self.units)


def _strip_ternary(layer: TernaryMixin, inputs: Any, *args: Any, **kwargs: Any) -> Any:
    config = {key: value for key, value in layer.get_config().items() if key not in _TERNARY_ARGS}
    plain = layer.plain_class.from_config(config)
    outputs = plain(inputs)
    plain.kernel.assign(keras.ops.convert_to_numpy(layer.ternary_kernel()))
    if layer.use_bias:
        plain.bias.assign(layer.bias)
    return outputs


TERNARY_LAYER_TYPES = (TernaryConv2D, TernaryDepthwiseConv2D, TernaryDense)
for _ternary_class in TERNARY_LAYER_TYPES:
    specs.register(_ternary_class, spec=specs.spec_for(_ternary_class.plain_class).replace(
        maskable=False,
        ternary=None,
        companions=lambda layer: [(layer.assignment, layer.kernel)],
        effective=lambda layer: specs.stateless([(layer.kernel, layer.ternary_kernel())]),
        micronet=count_ternary,
        strip=_strip_ternary,
    ))
    # Exact classes only: a subclass of Conv2D may compute differently.
    specs.extend(_ternary_class.plain_class, ternary=_ternary_class)


def ternary_class_for(layer: keras.layers.Layer) -> type | None:
    """The ternary class that replaces ``layer``'s exact class, or None."""
    spec = specs.SPECS.lookup(layer, exact=True)
    return spec.ternary if spec is not None else None


# --------------------------------------------------------------------------------------------- model helpers


def ternary_layers(model: keras.Model) -> list[TernaryMixin]:
    """The ternary layers of ``model`` (nested models included), in layer order."""
    return [layer for layer in iter_layers(model) if isinstance(layer, TernaryMixin)]


def projection_shortcuts(model: keras.Model) -> list[str]:
    """Names of the 1×1 Conv2D layers that are residual projection shortcuts.

    A projection shortcut is a 1×1 convolution whose output reaches an ``Add`` (directly or through
    BatchNormalization) whose other input is computed from the same tensor the convolution reads: the block
    input feeds both the shortcut and the main path. A MobileNetV2 or bottleneck 1×1 projection at the end of a
    main path is not one (its input does not feed the Add's other side).
    """
    walk = GraphWalk(model)
    consumers: dict[int, list[Any]] = {}
    for call in walk.calls:
        for tensor in call.inputs:
            consumers.setdefault(id(tensor), []).append(call)

    def computed_from(tensor: Any, source: Any) -> bool:
        pending, seen = [walk.canonical(tensor)], set()
        while pending:
            current = pending.pop()
            if current is source:
                return True
            producer = walk.producer(current)
            if producer is not None and id(producer) not in seen:
                seen.add(id(producer))
                pending.extend(producer.inputs)
        return False

    names = []
    for call in walk.calls:
        layer = call.layer
        if type(layer) is not keras.layers.Conv2D or call.index or any(k != 1 for k in layer.kernel_size):
            continue
        tensor, users = call.outputs[0], consumers.get(id(call.outputs[0]), [])
        while len(users) == 1 and isinstance(users[0].layer, keras.layers.BatchNormalization):
            tensor = users[0].outputs[0]
            users = consumers.get(id(tensor), [])
        if len(users) == 1 and isinstance(users[0].layer, keras.layers.Add):
            others = [t for t in users[0].inputs if t is not tensor]
            if any(computed_from(t, call.inputs[0]) for t in others):
                names.append(layer.name)
    return names


def default_selection(model: keras.Model, *, shortcuts: bool = False) -> list[str]:
    """The layers the reference ternarizes: every convolution except the stem (the convolution closest to
    the input) and the 1×1 projection shortcuts (:func:`projection_shortcuts`), and not the classifier.

    As in efficientCNNs, which ternarizes the parameters named ``.conv``: the block convolutions, not ``conv1``
    (stem), ``linear`` (classifier) nor ``shortcut.0`` / ``downsample.0`` (projection shortcuts). Dense layers
    stay full precision. Depthwise convolutions are left out too: the reference gives them entropy-constrained
    pruning in a later run, not ternarization. Name them in ``layers=`` to include them.

    Args:
        model: a functional or Sequential model.
        shortcuts: also select the projection shortcuts (the reference keeps them full precision).
    """
    convolutions = [
        call.layer.name for call in GraphWalk(model).calls
        if type(call.layer) is keras.layers.Conv2D and call.index == 0
    ]
    excluded = set() if shortcuts else set(projection_shortcuts(model))
    return [name for name in convolutions[1:] if name not in excluded]


def ternarize(
    model: keras.Model,
    layers: Sequence[str] | None = None,
    *,
    mode: str = "ternary",
    wn_gradient: str = "exact",
    ternarize_shortcuts: bool = False,
    initialize: Callable[[TernaryMixin], None] | None = None,
) -> keras.Model:
    """Returns a copy of ``model`` whose chosen layers are ternary, with their weights carried over; the copy
    shares no layer with ``model``, so training it leaves ``model`` unchanged.

    Args:
        model: a functional or Sequential model.
        layers: names of the Conv2D / DepthwiseConv2D / Dense layers to ternarize; None means
            :func:`default_selection`.
        mode: "ternary" or "prune" (entropy-constrained pruning).
        wn_gradient: "exact" or "reference", see :class:`TernaryMixin`.
        ternarize_shortcuts: with ``layers=None``, also ternarize the 1×1 projection shortcuts (the reference
            keeps them full precision).
        initialize: called on each new ternary layer once its kernel is copied, to set centroids and the
            initial assignment (EC2T and TTQ pass their own rule); by default w_p = w_n = 1 and A = 0.

    Raises:
        ValueError: a named layer does not exist, is already ternary, or has a type that cannot be ternarized.
    """
    check_options(mode, wn_gradient)
    by_name = {layer.name: layer for layer in iter_layers(model)}
    selected = list(default_selection(model, shortcuts=ternarize_shortcuts) if layers is None else layers)
    if not selected:
        raise ValueError(
            f"model {model.name!r} has no layer to ternarize (by default every Conv2D except the stem); name "
            "Conv2D, DepthwiseConv2D or Dense layers with layers=[...]"
        )
    for name in selected:
        if name not in by_name:
            raise ValueError(f"layer {name!r} is not in model {model.name!r}; its layers: {sorted(by_name)[:40]}")
        layer = by_name[name]
        if isinstance(layer, TernaryMixin):
            raise ValueError(f"layer {name!r} is already ternary ({type(layer).__name__})")
        if ternary_class_for(layer) is None:
            supported = ", ".join(cls.plain_class.__name__ for cls in TERNARY_LAYER_TYPES)
            raise ValueError(
                f"layer {name!r} is a {type(layer).__name__}, which cannot be ternarized; supported layer types: "
                f"{supported}. Leave it out of layers=[...]."
            )
    chosen = set(selected)
    # replace_layers copies the layers it keeps, so training the result leaves the original model (its
    # BatchNorm statistics, stem and classifier) as it was.
    def replacement_for(layer: keras.layers.Layer) -> Callable[..., Any] | None:
        if layer.name not in chosen:
            return None

        def replace(inputs: Any, *args: Any, **kwargs: Any) -> Any:
            ternary = ternary_class_for(layer).from_config(
                {**layer.get_config(), "mode": mode, "wn_gradient": wn_gradient}
            )
            outputs = ternary(inputs)
            ternary.kernel.assign(layer.kernel)
            if layer.use_bias:
                ternary.bias.assign(layer.bias)
            if initialize is not None:
                initialize(ternary)
            return outputs

        return replace

    return replace_layers(model, replacement_for)


def freeze_assignment(model: keras.Model) -> list[TernaryMixin]:
    """Freezes every ternary layer's assignment and shadow kernel (EC2T's retrain phase); returns the layers.

    Only the centroids and the non-ternary weights train afterwards. Compile the model (again) after this:
    Keras collects trainable variables when it builds the training function.

    Raises:
        ValueError: the model has no ternary layer, or a layer's assignment was never updated by a
            quantization phase (a retrain phase must follow quantization).
    """
    layers = ternary_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no ternary layer to freeze; ternarize it first")
    never_quantized = [layer.name for layer in layers if float(layer.quantization_steps.numpy()) == 0]
    if never_quantized:
        raise ValueError(
            f"retrain phase before any quantization: the assignment of {never_quantized} was never updated. "
            "Run quantization epochs first (epochs > 0 with the EC2T callback), then retrain."
        )
    for layer in layers:
        layer.assignment_frozen = True
        layer.kernel.trainable = False
    return layers


def sparsity(model: keras.Model) -> float:
    """Fraction of zero assignments over all ternary layers of ``model``."""
    counts = [(np.count_nonzero(layer.assignment.numpy() == 0), layer.assignment.numpy().size)
              for layer in ternary_layers(model)]
    total = sum(size for _, size in counts)
    return sum(zeros for zeros, _ in counts) / total if total else 0.0


# ----------------------------------------------------------------------------------------------- training


@keras.saving.register_keras_serializable(package="tfcompress")
class CentroidAdam(keras.optimizers.Adam):
    """Adam with a separate learning rate for the ternary centroids (``w_p``, ``w_n``).

    The reference trains the model and shadow weights with Adam(1e-4) and the centroids with a second
    Adam(1e-5). Adam's step does not depend on the gradient's scale, so scaling centroid gradients would not
    slow them down: this optimizer multiplies the learning rate (schedules included) by
    ``centroid_learning_rate / learning_rate`` for variables named ``w_p`` or ``w_n`` instead.
    """

    def __init__(self, learning_rate: float = 1e-4, centroid_learning_rate: float = 1e-5, **kwargs: Any) -> None:
        if centroid_learning_rate <= 0:
            raise ValueError(f"centroid_learning_rate must be > 0, got {centroid_learning_rate}")
        base = learning_rate if isinstance(learning_rate, float | int) else learning_rate(0)
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.centroid_learning_rate = float(centroid_learning_rate)
        self._centroid_ratio = float(centroid_learning_rate) / float(base)

    @staticmethod
    def is_centroid(variable: Any) -> bool:
        # The TF backend passes tf.Variables named "layer/w_p:0" (mirrored copies: "layer/w_p/replica_1:0").
        segments = variable.name.split(":")[0].split("/")
        return bool({"w_p", "w_n"} & set(segments[-2:]))

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        if self.is_centroid(variable):
            learning_rate = ops.multiply(learning_rate, self._centroid_ratio)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "centroid_learning_rate": self.centroid_learning_rate}


class AssignmentCallback(keras.callbacks.Callback):
    """Base of the EC2T and TTQ callbacks: after every training step, :meth:`update` re-assigns the ternary
    layers (in one compiled function, outside the replicas, so it works under ``tf.distribute`` strategies).

    Subclasses implement ``update(layers, numels)``, which runs inside ``tf.function`` (without autograph: no
    Python control flow on tensors) and assigns each layer's ``assignment`` (and centroids if needed);
    ``numels`` are the layers' kernel sizes.

    Every epoch end adds ``ternary_sparsity`` to the epoch logs and, when a summary writer is active (``log_dir``,
    a ``keras.callbacks.TensorBoard`` in the same ``fit`` or a ``tf.summary`` default writer, see
    :mod:`tfcompress.summaries`), writes per layer ``<prefix>/sparsity/<layer>``, ``<prefix>/entropy_bits/<layer>``
    (code entropy H, bits per weight), the centroids ``<prefix>/w_p/<layer>`` and ``<prefix>/w_n/<layer>``, the
    overall ``<prefix>/sparsity`` and ``<prefix>/entropy_bits``, and a histogram of each shadow kernel
    ``<prefix>/shadow_kernel/<layer>`` (prefix: :attr:`summary_prefix`, e.g. ``ec2t``).
    """

    # Whether update() changes assignments (counted in each layer's quantization_steps).
    quantizing = True
    #: the first part of the summary tags
    summary_prefix = "ternary"

    def __init__(self, layers: Iterable[TernaryMixin] | None = None, log_dir: str | None = None) -> None:
        super().__init__()
        self._layers = list(layers) if layers is not None else None
        self._update_fn: Callable[[], None] | None = None
        self.summaries = Summaries(log_dir)

    @property
    def layers(self) -> list[TernaryMixin]:
        if self._layers is None:
            self._layers = ternary_layers(student_of(self.model))
        return self._layers

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self.layers:
            raise ValueError(
                f"{type(self).__name__}: model {self.model.name!r} has no ternary layer; ternarize it first "
                "(tfcompress.quantization.ec2t.ternarize or ttq.ternarize)"
            )
        self.check(self.layers)
        numels = [int(np.prod(layer.kernel.shape)) for layer in self.layers]

        def update() -> None:
            self.update(self.layers, numels)
            if self.quantizing:
                for layer in self.layers:
                    layer.quantization_steps.assign_add(1.0)

        # Compiled like the training step: eagerly when the model runs eagerly (debugging, a few steps), else
        # traced without autograph (straight-line TensorFlow over a Python list of layers: converting it would
        # cost more than tracing it).
        self._update_fn = update if self.model.run_eagerly else tf.function(update, autograph=False)
        self.summaries.begin(self)

    def check(self, layers: list[TernaryMixin]) -> None:
        """Validates the layers before training (override to add checks)."""

    def update(self, layers: list[TernaryMixin], numels: list[int]) -> None:
        raise NotImplementedError

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._update_fn()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["ternary_sparsity"] = sparsity(student_of(self.model))
        if self.summaries.active:  # computed only when written: it reads every kernel back from the device
            self.summaries.write(epoch, self.summary_scalars(), self.summary_histograms())

    def on_train_end(self, logs: dict | None = None) -> None:
        self.summaries.end()

    def summary_scalars(self) -> dict[str, float]:
        """Per layer and overall: sparsity and code entropy of the assignment, and the centroids."""
        prefix, scalars = self.summary_prefix, {}
        zeros = bits = numel = 0.0
        for layer in self.layers:
            codes = np.asarray(layer.assignment.numpy()).ravel()
            P = np.array([np.mean(codes < 0), np.mean(codes == 0), np.mean(codes > 0)])
            H = float(-(P[P > 0] * np.log2(P[P > 0])).sum())  # bits per weight of an ideal entropy coder
            scalars.update({f"{prefix}/sparsity/{layer.name}": float(P[1]), f"{prefix}/entropy_bits/{layer.name}": H,
                            f"{prefix}/w_p/{layer.name}": float(layer.w_p.numpy()),
                            f"{prefix}/w_n/{layer.name}": float(layer.w_n.numpy())})
            zeros, bits, numel = zeros + P[1] * codes.size, bits + H * codes.size, numel + codes.size
        scalars[f"{prefix}/sparsity"] = zeros / max(numel, 1)
        scalars[f"{prefix}/entropy_bits"] = bits / max(numel, 1)
        return scalars

    def summary_histograms(self) -> dict[str, np.ndarray]:
        """The full-precision shadow kernel of every layer."""
        return {f"{self.summary_prefix}/shadow_kernel/{layer.name}": np.asarray(layer.kernel.numpy())
                for layer in self.layers}


def fit(
    model: keras.Model,
    train_data: Any,
    epochs: int,
    callback: AssignmentCallback,
    *,
    learning_rate: float = 1e-4,
    centroid_learning_rate: float = 1e-5,
    validation_data: Any = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: Any = "auto",
    optimizer: keras.optimizers.Optimizer | None = None,
) -> dict[str, list[float]]:
    """Compiles ``model`` with ``optimizer`` (default: a fresh :class:`CentroidAdam` with ``learning_rate`` and
    ``centroid_learning_rate``) and fits it with the assignment ``callback`` (first) and ``callbacks``; returns
    the Keras history as plain floats."""
    training.compile_classifier(model, optimizer or CentroidAdam(learning_rate, centroid_learning_rate))
    result = model.fit(
        train_data, epochs=epochs, validation_data=validation_data, verbose=verbose, callbacks=[callback, *callbacks]
    )
    return {key: [float(v) for v in values] for key, values in result.history.items()}
