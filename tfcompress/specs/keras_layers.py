"""The specs of Keras' own layers: channel rules, dot products, MicroNet counters, masking and stripping.

MACs follow the usual formulas (He et al. 2016 count ResNet-20 at ≈ 41 M; LeNet-5 of Caffe is 2.29 M): every
kernel value is used once per output position (k_h·k_w·(C_in/groups)·C_out·H_out·W_out for a convolution;
transposed convolutions scatter the whole kernel at every *input* position). MicroNet counting follows
:mod:`tfcompress.micronet`'s module docstring; layers the challenge's counter has no rule for (pooling,
padding, PReLU, normalization layers, resizing) get the rules written next to them.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import layers

from tfcompress.keras_graph import Call, input_positions, known_size, output_positions
from tfcompress.specs import channels as ch
from tfcompress.specs.counting import (
    ACTIVATION_OPS,
    BASE_BITS,
    Count,
    Precision,
    activation_name,
    activation_ops,
    sparse_params,
)
from tfcompress.specs.layout import Layout
from tfcompress.specs.spec import DotProduct, LayerSpec, effective_values, register, spec_for, unwrap

# ---------------------------------------------------------------------------------------------- helpers


def _elements(call: Call) -> int:
    return known_size(call, call.output_shape)


def _out_channels(call: Call) -> int:
    shape = call.output_shape
    return shape[0] if getattr(call.layer, "data_format", "channels_last") == "channels_first" else shape[-1]


def _resize(key: str):
    def resize(layer: Any, channels: int) -> Any:
        return type(layer).from_config({**layer.get_config(), key: channels})

    return resize


def _identity(layer: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
    return inputs


def _count_nothing(call: Call, precision: Precision) -> Count:
    # Data movement, or identities at inference (dropout, noise, augmentation): no arithmetic.
    return Count()


def _per_element(mults: int, adds: int):
    def count(call: Call, precision: Precision) -> Count:
        n = _elements(call)
        return Count(mults=mults * n, adds=adds * n)

    return count


# --------------------------------------------------------------------------------------------- producers


def _producer(kernel_in_axis: int, kernel_out_axis: int) -> ch.ChannelRule:
    def rule(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
        layer = call.layer
        ndim = len(layer.kernel.shape)
        groups = getattr(layer, "groups", 1)
        if groups != 1 and groups == inputs[0].channels:
            return _grouped_depthwise(call, inputs, builder)
        out = builder.producer_group(call, int(call.outputs[0].shape[-1]))
        if groups != 1:
            # Each output channel reads C_in/groups inputs (the kernel's input axis): nothing to bind there.
            builder.block(inputs[0], f"{call.name} is a grouped convolution (groups={groups})")
            builder.block(out, f"{call.name} is a grouped convolution (groups={groups})")
        else:
            builder.bind(call, layer.kernel, kernel_in_axis % ndim, inputs[0], "in")
        builder.bind(call, layer.kernel, kernel_out_axis % ndim, out, "out")
        if getattr(layer, "bias", None) is not None:
            builder.bind(call, layer.bias, 0, out, "param")
        return [out]

    return rule


def _grouped_depthwise(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    """A convolution with groups = C_in (ConvNeXt's depthwise ``Conv2D(C, 7, groups=C)``) is depthwise: output
    channel c·m + k reads input channel c only, m = filters / groups. Its kernel is (k…, 1, C·m)."""
    layer = call.layer
    out = inputs[0].repeated(layer.filters // layer.groups)
    builder.bind(call, layer.kernel, len(layer.kernel.shape) - 1, out, "out")
    if getattr(layer, "bias", None) is not None:
        builder.bind(call, layer.bias, 0, out, "param")
    return [out]


def _conv_resize(layer: Any, channels: int) -> Any:
    config = {**layer.get_config(), "filters": channels}
    if config.get("groups", 1) != 1:  # only a depthwise-like grouped convolution loses channels
        config["groups"] = channels // (layer.filters // layer.groups)
    return type(layer).from_config(config)


def _kernel_dot_products(call: Call) -> list[DotProduct]:
    return [DotProduct(call.layer.kernel, output_positions(call), _elements(call))]


def _transposed_dot_products(call: Call) -> list[DotProduct]:
    # Each input pixel is multiplied by the whole k_h·k_w·C_out·C_in kernel and scattered.
    return [DotProduct(call.layer.kernel, input_positions(call), _elements(call))]


def _separable_dot_products(call: Call) -> list[DotProduct]:
    positions = output_positions(call)
    depthwise_channels = math.prod(call.layer.depthwise_kernel.shape[-2:])  # C_in · multiplier
    return [DotProduct(call.layer.depthwise_kernel, positions, positions * depthwise_channels),
            DotProduct(call.layer.pointwise_kernel, positions, _elements(call))]


def _bias_and_activation(call: Call, precision: Precision) -> Count:
    layer, n_outputs = call.layer, _elements(call)
    params = adds = 0.0
    if getattr(layer, "use_bias", False):
        params = _out_channels(call) * precision.param_bits / BASE_BITS
        adds = n_outputs  # one bias addition per output element
    act_mults, act_adds = activation_ops(call, activation_name(layer), n_outputs)
    return Count(params=params, mults=act_mults, adds=adds + act_adds)


def count_dot_products(call: Call, precision: Precision) -> Count:
    """MicroNet counter of a layer made of dot products (counting.py): per output, vector_length = the kernel's
    non-zeros per output channel multiplications and one addition fewer; sparse kernels stored with a mask;
    plus bias and activation. Values are read as the layer computes with them (masked, ternary)."""
    spec = spec_for(call.layer)
    total = Count()
    with effective_values(call.layer):
        for dot in spec.dot_products(call):
            values = keras.ops.convert_to_numpy(dot.variable)
            nonzero = int(np.count_nonzero(values))
            mults = nonzero * dot.positions
            total = total + Count(params=sparse_params(values.size, nonzero, precision.param_bits),
                                  mults=mults, adds=mults - dot.outputs)
    return total + _bias_and_activation(call, precision)


def _depthwise_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    layer = call.layer
    out = inputs[0].repeated(layer.depth_multiplier)
    # Keras 3 keeps the depthwise kernel as ``kernel``, shaped (kh, kw, C, multiplier)
    builder.bind(call, layer.kernel, len(layer.kernel.shape) - 2, inputs[0], "out")
    if getattr(layer, "bias", None) is not None:
        builder.bind(call, layer.bias, 0, out, "param")
    return [out]


def _separable_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    layer = call.layer
    out = builder.producer_group(call, int(call.outputs[0].shape[-1]))
    rank = len(layer.pointwise_kernel.shape)
    builder.bind(call, layer.depthwise_kernel, rank - 2, inputs[0], "in")
    builder.bind(call, layer.pointwise_kernel, rank - 2, inputs[0].repeated(layer.depth_multiplier), "in")
    builder.bind(call, layer.pointwise_kernel, rank - 1, out, "out")
    if getattr(layer, "bias", None) is not None:
        builder.bind(call, layer.bias, 0, out, "param")
    return [out]


_LINEAR = dict(kernels=("kernel",), biases=("bias",), micronet=count_dot_products)
CONV = register(layers.Conv1D, layers.Conv2D, layers.Conv3D, spec=LayerSpec(
    channels=_producer(-2, -1), resize=_conv_resize, dot_products=_kernel_dot_products, **_LINEAR))
DENSE = register(layers.Dense, spec=LayerSpec(
    channels=_producer(0, 1), resize=_resize("units"), dot_products=_kernel_dot_products, **_LINEAR))
register(layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose, spec=LayerSpec(
    channels=_producer(-1, -2), resize=_resize("filters"), dot_products=_transposed_dot_products, **_LINEAR))
DEPTHWISE = register(layers.DepthwiseConv1D, layers.DepthwiseConv2D, spec=LayerSpec(
    channels=_depthwise_channels, dot_products=_kernel_dot_products, depthwise=True, **_LINEAR))
register(layers.SeparableConv1D, layers.SeparableConv2D, spec=LayerSpec(
    channels=_separable_channels, resize=_resize("filters"), dot_products=_separable_dot_products,
    kernels=("depthwise_kernel", "pointwise_kernel"), biases=("bias",), micronet=count_dot_products))
# Weight masks apply to these exact classes (and their subclasses through the MRO).
for _cls, _spec in ((layers.Conv2D, CONV), (layers.Dense, DENSE), (layers.DepthwiseConv2D, DEPTHWISE)):
    register(_cls, spec=_spec.replace(maskable=True))


# ---------------------------------------------------------------------------------------- normalization


def _batch_norm_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    if not ch.on_last_axis(call, call.layer.axis, builder, inputs[0]):
        return [inputs[0]]
    layer = call.layer
    for variable, role in ((layer.gamma, "norm"), (layer.beta, "param"), (layer.moving_mean, "param"),
                           (layer.moving_variance, "param")):
        if variable is not None:
            builder.bind(call, variable, 0, inputs[0], role)
    return [inputs[0]]


def _folds_into_bias(parent: Call | None) -> Any:
    """The linear layer (with a bias, no activation) a BatchNorm right after it merges into, or None."""
    if parent is None:
        return None
    layer = unwrap(parent.layer)
    spec = spec_for(layer)
    linear = spec is not None and bool(spec.kernels)
    if linear and getattr(layer, "use_bias", False) and activation_name(layer) == "linear":
        return layer
    return None


def _count_batch_norm(call: Call, precision: Precision) -> Count:
    producer = _folds_into_bias(call.parents[0] if len(call.parents) == 1 else None)
    if producer is not None:
        return Count(note=f"folded into the bias of {producer.name}")
    # Scale folds into the kernel; the shift is one bias per channel, added to every element.
    axes = call.layer.axis if isinstance(call.layer.axis, list | tuple) else [call.layer.axis]
    channels = math.prod(call.output_shape[a - 1 if a > 0 else a] for a in axes)  # layer axes count the batch
    return Count(params=channels * precision.param_bits / BASE_BITS, adds=_elements(call))


def _count_layer_norm(call: Call, precision: Precision) -> Count:
    # mean (1 add), variance (1 mult, 1 add), normalize (1 add, 1 mult), scale and shift (1 mult, 1 add)
    n = _elements(call)
    scale_shift = sum(int(np.prod(w.shape)) for w in call.layer.weights) if call.index == 0 else 0
    return Count(params=scale_shift * precision.param_bits / BASE_BITS, mults=3 * n, adds=4 * n)


def _count_normalization(call: Call, precision: Precision) -> Count:
    # (x − mean) / std folds into one multiply-add per element with 2 constants per channel.
    n = _elements(call)
    return Count(params=2 * call.output_shape[-1] * precision.param_bits / BASE_BITS, mults=n, adds=n)


register(layers.BatchNormalization, spec=LayerSpec(channels=_batch_norm_channels, micronet=_count_batch_norm))
# Their statistics mix channels: removing one changes all the others, so a masked model and its shrunk copy
# would differ. Keep these channels.
register(layers.LayerNormalization, layers.GroupNormalization, spec=LayerSpec(
    channels=ch.blocks("normalizes across channels"), micronet=_count_layer_norm))


def _normalization_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    # One mean and variance for every channel (axis=None, or scalars given) is an element-wise affine map;
    # per-channel statistics are constants in the config that resizing cannot slice: keep those channels.
    layer = call.layer
    given = layer.input_mean is not None
    if not layer.axis or (given and np.size(layer.input_mean) == 1 and np.size(layer.input_variance) == 1):
        return [inputs[0]]
    builder.block(inputs[0], f"{call.name} (Normalization) normalizes with fixed per-channel statistics")
    return [inputs[0]]


def _count_unit_norm(call: Call, precision: Precision) -> Count:
    # squares (1 mult) and their sum (1 add), then one scaling per element
    n = _elements(call)
    return Count(mults=2 * n, adds=n)


register(layers.Normalization, spec=LayerSpec(channels=_normalization_channels, micronet=_count_normalization))
register(layers.UnitNormalization, spec=LayerSpec(channels=ch.blocks("normalizes across channels"),
                                                  micronet=_count_unit_norm))


# ------------------------------------------------------------------------------------------ activations


def _activation_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    if activation_name(call.layer) in ("softmax", "log_softmax"):
        builder.block(inputs[0], f"{call.name}: {activation_name(call.layer)} mixes channels")
    return [inputs[0]]


def _count_activation(call: Call, precision: Precision) -> Count:
    mults, adds = activation_ops(call, activation_name(call.layer), _elements(call))
    return Count(mults=mults, adds=adds)


def _count_relu(call: Call, precision: Precision) -> Count:
    leaky = bool(call.layer.negative_slope)
    return Count(mults=(2 if leaky else 1) * _elements(call))


def _count_prelu(call: Call, precision: Precision) -> Count:
    alpha = int(np.prod(call.layer.alpha.shape)) if call.index == 0 else 0
    return Count(params=alpha * precision.param_bits / BASE_BITS, mults=2 * _elements(call))


PASS = ch.pass_through()
register(layers.ReLU, spec=LayerSpec(channels=PASS, micronet=_count_relu))
register(layers.LeakyReLU, spec=LayerSpec(channels=PASS, micronet=_per_element(ACTIVATION_OPS["leaky_relu"][0], 0)))
register(layers.ELU, spec=LayerSpec(channels=PASS, micronet=_per_element(*ACTIVATION_OPS["elu"])))
register(layers.PReLU, spec=LayerSpec(channels=ch.pass_through("alpha"), micronet=_count_prelu))
register(layers.Activation, spec=LayerSpec(channels=_activation_channels, micronet=_count_activation))


def _softmax_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    # Over the channel axis a softmax mixes channels; over positions (attention maps) it does not.
    rank = len(call.inputs[0].shape)
    axes = call.layer.axis if isinstance(call.layer.axis, list | tuple) else [call.layer.axis]
    if all(a % rank != rank - 1 for a in axes):
        return [inputs[0]]
    builder.block(inputs[0], f"{call.name} (Softmax) mixes channels (softmax over axis {call.layer.axis})")
    return [inputs[0]]


register(layers.Softmax, spec=LayerSpec(channels=_softmax_channels, micronet=_per_element(*ACTIVATION_OPS["softmax"])))


# ---------------------------------------------------------------------------------------------- pooling


def _count_global_average(call: Call, precision: Precision) -> Count:
    positions, channels = input_positions(call), _out_channels(call)
    return Count(mults=channels, adds=(positions - 1) * channels)


def _count_global_max(call: Call, precision: Precision) -> Count:
    return Count(mults=(input_positions(call) - 1) * _out_channels(call))


def _count_average_pooling(call: Call, precision: Precision) -> Count:
    window, n_outputs = math.prod(call.layer.pool_size), _elements(call)
    return Count(mults=n_outputs, adds=(window - 1) * n_outputs)


def _count_max_pooling(call: Call, precision: Precision) -> Count:
    window = math.prod(call.layer.pool_size)
    return Count(mults=(window - 1) * _elements(call))  # comparisons, counted as multiplications like ReLU


def _count_resize(call: Call, precision: Precision) -> Count:
    # Bilinear interpolation: 4 products and 3 sums per output element; nearest is data movement.
    method = getattr(call.layer, "interpolation", "nearest")
    return Count() if method == "nearest" else Count(mults=4 * _elements(call), adds=3 * _elements(call))


register(layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D, layers.GlobalAveragePooling3D,
         spec=LayerSpec(channels=PASS, micronet=_count_global_average))
register(layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D,
         spec=LayerSpec(channels=PASS, micronet=_count_global_max))
register(layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D,
         spec=LayerSpec(channels=PASS, micronet=_count_average_pooling))
register(layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D,
         spec=LayerSpec(channels=PASS, micronet=_count_max_pooling))
register(layers.UpSampling1D, layers.UpSampling2D, layers.UpSampling3D, layers.Resizing,
         spec=LayerSpec(channels=PASS, micronet=_count_resize))


# ------------------------------------------------------------------------------------ element-wise merges


def _count_merge(mults_per_input: int, adds_per_input: int, extra_mults: int = 0):
    def count(call: Call, precision: Precision) -> Count:
        n, extra_inputs = _elements(call), len(call.inputs) - 1
        return Count(mults=(mults_per_input * extra_inputs + extra_mults) * n, adds=adds_per_input * extra_inputs * n)

    return count


register(layers.Add, layers.Subtract, spec=LayerSpec(channels=ch.merge, micronet=_count_merge(0, 1)))
# Multiply is the squeeze-excitation scale; Maximum / Minimum are comparisons, counted like multiplications.
register(layers.Multiply, layers.Maximum, layers.Minimum, spec=LayerSpec(channels=ch.merge,
                                                                          micronet=_count_merge(1, 0)))
register(layers.Average, spec=LayerSpec(channels=ch.merge, micronet=_count_merge(0, 1, extra_mults=1)))


register(layers.Concatenate, spec=LayerSpec(channels=ch.concatenate, micronet=_count_nothing))


# ------------------------------------------------------------------------------------------------ shapes


def _flatten_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    return [inputs[0].tiled(ch.spatial_size(call, call.input_shape))]


def reshape_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    """Channels survive a reshape that keeps the last axis (``(C,) → (1, 1, C)`` in squeeze-excite blocks) or
    flattens to 2-D; any other reshape mixes them, and they are kept."""
    in_shape, out_shape = call.input_shape, call.output_shape
    if out_shape[-1:] == in_shape[-1:] and ch.spatial_size(call, in_shape) == ch.spatial_size(call, out_shape):
        return [inputs[0]]
    if len(out_shape) == 1 and inputs[0].tile == 1:
        return [inputs[0].tiled(ch.spatial_size(call, in_shape))]  # a flatten
    builder.block(inputs[0], f"{call.name} reshapes {in_shape} → {out_shape} across channels")
    return [builder.new_group(int(out_shape[-1]), call.name, reason="reshape across channels")]


def _reshape_resize(layer: Any, channels: int) -> Any:
    config = layer.get_config()
    return type(layer).from_config({**config, "target_shape": (*tuple(config["target_shape"])[:-1], channels)})


register(layers.Flatten, spec=LayerSpec(channels=_flatten_channels, micronet=_count_nothing))
register(layers.Reshape, spec=LayerSpec(channels=reshape_channels, resize=_reshape_resize, micronet=_count_nothing))


# -------------------------------------------------------------------- data movement and inference no-ops


def _rescaling_count(call: Call, precision: Precision) -> Count:
    n = _elements(call)
    scale, offset = np.asarray(call.layer.scale), np.asarray(call.layer.offset)
    return Count(mults=n * bool(np.any(scale != 1)), adds=n * bool(np.any(offset != 0)))


def _rescaling_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    # A per-channel scale or offset is a constant in the config: keep those channels.
    for value in (call.layer.scale, call.layer.offset):
        if np.size(value) > 1:
            builder.block(inputs[0], f"{call.name} rescales each channel by a constant")
    return [inputs[0]]


register(layers.InputLayer, layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D, layers.Cropping1D,
         layers.Cropping2D, layers.Cropping3D, layers.Identity, layers.CenterCrop,
         spec=LayerSpec(channels=PASS, micronet=_count_nothing))


def _permute_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    # Permute's dims count from 1 without the batch: channels stay when the last dim stays last.
    dims = tuple(call.layer.dims)
    return [inputs[0]] if dims[-1] == len(dims) else ch.barrier(call, inputs, builder)


register(layers.Permute, spec=LayerSpec(channels=_permute_channels, micronet=_count_nothing))
register(layers.RepeatVector, spec=LayerSpec(channels=ch.barrier, micronet=_count_nothing))
register(layers.Rescaling, spec=LayerSpec(channels=_rescaling_channels, micronet=_rescaling_count))
# Identities at inference: stripped before export, so exported graphs and later surgery stay simple.
# (RandomCrop, Equalization, Solarization and AutoContrast change images at inference too; RandomShear cannot
# be reloaded from a .keras file in Keras 3.15: none of them is here.)
def _layer_classes(*names: str) -> list[type]:
    return [getattr(layers, name) for name in names if hasattr(layers, name)]  # newer than Keras 3.0


register(
    layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D, layers.SpatialDropout3D,
    layers.GaussianNoise, layers.GaussianDropout, layers.AlphaDropout, layers.ActivityRegularization,
    layers.RandomFlip, layers.RandomRotation, layers.RandomZoom, layers.RandomTranslation, layers.RandomContrast,
    layers.RandomBrightness,
    *_layer_classes("RandomElasticTransform", "RandomErasing", "RandomGaussianBlur", "RandomInvert",
                    "RandomPerspective", "RandomPosterization", "RandomSharpness", "MixUp", "CutMix"),
    spec=LayerSpec(channels=PASS, micronet=_count_nothing, strip=_identity),
)
# Colour augmentations want exactly 3 channels (RGB): they keep them (they sit at the input anyway).
register(*_layer_classes("RandomColorDegeneration", "RandomColorJitter", "RandomGrayscale", "RandomHue",
                         "RandomSaturation", "AugMix", "RandAugment"),
         spec=LayerSpec(channels=ch.blocks("works on RGB images"), micronet=_count_nothing, strip=_identity))


# ------------------------------------------------------------------------------- layers of keras.applications


def _count_layer_scale(call: Call, precision: Precision) -> Count:
    params = call.layer.projection_dim if call.index == 0 else 0
    return Count(params=params * precision.param_bits / BASE_BITS, mults=_elements(call))


# Layers of public applications without a public alias (older Keras 3 releases may lack them).
try:  # ConvNeXt's per-channel scale of each residual branch (Touvron et al. 2021)
    from keras.src.applications.convnext import LayerScale
except ImportError:  # pragma: no cover
    LayerScale = None
try:  # Inception-ResNet's residual sum ``inputs[0] + inputs[1] * scale`` with a scalar scale
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
except ImportError:  # pragma: no cover
    CustomScaleLayer = None
if LayerScale is not None:
    register(LayerScale, spec=LayerSpec(channels=ch.pass_through("gamma"), resize=_resize("projection_dim"),
                                        micronet=_count_layer_scale))
if CustomScaleLayer is not None:
    register(CustomScaleLayer, spec=LayerSpec(channels=ch.merge, micronet=_count_merge(1, 1)))
