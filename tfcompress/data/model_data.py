"""A model's data: the user's images, split, checked against the model and shaped and scaled the model's way.

:class:`ModelData` is what every script, recipe and budget mode uses: training images (with a holdout carved out
on demand), test images, calibration images, all read with ``tf.data`` (parallel decode, cached when they fit in
memory, prefetched) at the model's input size and channels, scaled by the model's :class:`Preprocessing`.

Labels are optional. Unlabelled images get the **original model's top-1 decisions** as labels
(:meth:`ModelData.labelled_by`): accuracy on them *is* top-1 agreement with the original, fine-tuning on them is
distillation, and every stage that wants labels works unchanged. What the labels are is kept in ``labels`` ("labels"
or "original model") so reports call the metric by its name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress.data import builtin
from tfcompress.data.preprocessing import SCALING_HELP, Preprocessing
from tfcompress.data.sources import Source, open_source, split_indices

CACHE_LIMIT_BYTES = 2 << 30  # decoded images kept in memory up to this size; above it, decoded every epoch
MAX_PAD_PX = 4  # a built-in dataset is padded to a larger model input by at most this per side (28 → 32, LeNet's way)
LABELS_GIVEN, LABELS_ORIGINAL, OUTPUTS_ORIGINAL = "labels", "original model", "original outputs"


@dataclasses.dataclass(frozen=True)
class ModelData:
    """The images a model is compressed, calibrated and judged with.

    Attributes:
        train: the training images (the holdout is taken out of them by :meth:`batches`).
        test: the images every result is measured on: given separately, the source's own test split, or
            ``test_fraction`` of ``train`` set aside (stratified, deterministic).
        calibration: the images int8 calibration reads (None: ``train``).
        preprocessing: the model's pixel scaling.
        input_shape: the model's (height, width, channels).
        labels: ``"labels"`` (the user's), ``"original model"`` (the original's top-1 on unlabelled images) or None.
    """

    train: Source
    test: Source
    calibration: Source | None
    preprocessing: Preprocessing
    input_shape: tuple[int, int, int]
    labels: str | None

    @classmethod
    def for_model(cls, model: keras.Model, spec: str, preprocessing: Preprocessing | None,
                  **options: Any) -> ModelData:
        """:meth:`open` for a Keras model's input shape and outputs."""
        return cls.open(spec, preprocessing, input_shape=model_input_shape(model), output_widths=output_widths(model),
                        **options)

    @classmethod
    def open(cls, spec: str, preprocessing: Preprocessing | None, *, input_shape: tuple[int, int, int],
             output_widths: Sequence[int | None], test_spec: str | None = None, calibration_spec: str | None = None,
             test_fraction: float = 0.2, data_dir: str | None = None) -> ModelData:
        """Reads ``spec`` (and the optional separate test and calibration sources) for a model of ``input_shape``
        (height, width, channels) and ``output_widths`` (the last dimension of each output) and checks that they
        fit it.

        A built-in dataset without a ``preprocessing`` is scaled by its training split's mean and std (how
        tfcompress trains on its own datasets).

        Raises:
            ValueError: one line naming what does not fit (classes, image size, channels, scaling) and the flag
                that fixes it.
        """
        input_shape = tuple(int(d) for d in input_shape)
        for given in (spec, test_spec, calibration_spec):
            if given in builtin.DATASETS:  # what the name says is checked before loading it
                _check_builtin_fits(builtin.DATASETS[given], input_shape, output_widths)
        train = open_source(spec, "train", data_dir=data_dir)
        test = open_source(test_spec, "test" if test_spec in builtin.DATASETS else "train", data_dir=data_dir) \
            if test_spec else open_source(spec, "test", data_dir=data_dir)
        if test is None:
            keep, taken = split_indices(train, test_fraction, seed=23)
            train, test = train.subset(keep, "the training part"), train.subset(taken, f"{test_fraction:.0%}")
        calibration = open_source(calibration_spec, "train", data_dir=data_dir) if calibration_spec else None
        if preprocessing is None:
            if train.builtin is None:
                raise ValueError(f"say how the model scales pixels: {SCALING_HELP} (keras.applications: "
                                 "MobileNet*/Xception/Inception 'tf', VGG/ResNet50 'caffe', DenseNet 'torch', "
                                 "EfficientNet 'raw')")
            mean, std = builtin.channel_stats(train.builtin, data_dir)
            preprocessing = Preprocessing("mean_std", mean, std)
        preprocessing = preprocessing.for_channels(input_shape[2])
        data = cls(train, test, calibration, preprocessing, input_shape,
                   LABELS_GIVEN if train.labelled and test.labelled else None)
        data.check_fits(output_widths)
        return data

    # ------------------------------------------------------------------------------------------------ checks

    def check_fits(self, outputs: Sequence[int | None]) -> None:
        """One-line errors for what can be seen before any work: classes the model cannot output, images smaller
        than its input, more than one output when labels are used."""
        height, width, _ = self.input_shape
        for source in self.sources():
            if source.builtin:  # padded (28 → 32) or resized down the built-in way; far too small is refused
                native = source.images.shape[1]
                if native < height - 2 * MAX_PAD_PX:
                    raise ValueError(f"{source.description} has {native}×{native} px images but the model takes "
                                     f"{height}×{width}: not the data this model was made for; give its own images "
                                     "with --dataset")
                continue
            if source.channels() is not None and min(source.channels(), 3) > self.input_shape[2]:
                raise ValueError(f"{source.description} has {source.channels()}-channel images but the model takes "
                                 f"{self.input_shape[2]}: give images with the model's channels")
            sizes = source.image_sizes()
            small = np.flatnonzero((sizes[:, 0] < height) | (sizes[:, 1] < width))
            if small.size:
                where = source.paths[small[0]] if source.paths else f"image {small[0]}"
                raise ValueError(f"{source.description}: {small.size} images are smaller than the model's input "
                                 f"{height}×{width} (e.g. {where}: {sizes[small[0], 0]}×{sizes[small[0], 1]}); give "
                                 "images at least the model's size")
        labelled = [source for source in (self.train, self.test) if source.num_classes is not None]
        if labelled and len(outputs) > 1:
            raise ValueError(f"{labelled[0].description} has class labels but the model has {len(outputs)} outputs: "
                             "give unlabelled images (fine-tuning then matches the original's outputs on every head)")
        if labelled and len(outputs) == 1 and outputs[0] is not None:
            classes = max(source.num_classes for source in labelled)
            if classes > outputs[0] or (classes < outputs[0] and outputs[0] > 1 and any(
                    source.class_names for source in labelled)):
                source = max(labelled, key=lambda s: s.num_classes)
                fix = ("not the data this model was made for; give its own images with --dataset" if classes >
                       outputs[0] else "labels are positions in the sorted class folder names, so every class the "
                       "model outputs needs a folder (an empty one will do)")
                raise ValueError(f"{source.description} has {classes} classes but the model outputs {outputs[0]}: "
                                 f"{fix}")

    def _pads(self, source: Source) -> bool:
        """Whether a built-in source is padded to the model's input (LeNet's 28 → 32), the built-in pipeline's way."""
        native = source.images.shape[1]
        return native <= self.input_shape[0] <= native + 2 * MAX_PAD_PX and self.input_shape[0] == self.input_shape[1]

    def sources(self) -> list[Source]:
        return [source for source in (self.train, self.test, self.calibration) if source is not None]

    # ------------------------------------------------------------------------------------------------ labels

    def labelled_by(self, model: keras.Model, batch_size: int = 128, replace: bool = False) -> ModelData:
        """The same images with labels: the user's where every source has them (unless ``replace``), else the top-1
        decision of ``model`` (the original) on every image — accuracy then means top-1 agreement with it."""
        if (self.labels == LABELS_GIVEN and not replace) or self.labels in (LABELS_ORIGINAL, OUTPUTS_ORIGINAL):
            return self
        widths = output_widths(model)
        classifier = len(widths) == 1 and widths[0] is not None and widths[0] > 1

        def targets(source: Source) -> Source:
            outputs = model.predict(self._images(source, batch_size), verbose=0)
            if classifier:
                return source.with_labels(np.argmax(outputs, axis=-1), "labelled by the original model's top-1")
            outputs = tuple(outputs) if isinstance(outputs, list | tuple) else (outputs,)
            return source.with_labels(outputs, "with the original model's outputs as targets")

        relabel = {id(source): targets(source) for source in self.sources()}
        return dataclasses.replace(self, train=relabel[id(self.train)], test=relabel[id(self.test)],
                                   calibration=relabel.get(id(self.calibration)),
                                   labels=LABELS_ORIGINAL if classifier else OUTPUTS_ORIGINAL)

    @property
    def metric_name(self) -> str:
        """What the score on these labels is: "accuracy", "agreement" (with the original's top-1) or "output error"
        (relative to the original's outputs, every head)."""
        return {LABELS_ORIGINAL: "agreement", OUTPUTS_ORIGINAL: "output error"}.get(self.labels, "accuracy")

    # ----------------------------------------------------------------------------------------------- batches

    def batches(self, split: str = "train", *, batch_size: int = 128, holdout_fraction: float = 0.0,
                augment: bool = False, shuffle: bool | None = None, seed: int = 0, limit: int | None = None,
                repeat: bool = False, holdout_seed: int = 17) -> tf.data.Dataset:
        """Batches of ``(image, label)`` (or images alone while unlabelled) of ``split``: "train" (without the
        holdout), "holdout" (``holdout_fraction`` of the training images, stratified), "test" or "calibration"."""
        if split not in ("train", "holdout", "test", "calibration"):
            raise ValueError(f"split must be train, holdout, test or calibration, got {split!r}")
        if split == "holdout" and not holdout_fraction:
            raise ValueError("split='holdout' needs holdout_fraction > 0")
        source = {"test": self.test, "calibration": self.calibration or self.train}.get(split, self.train)
        shuffle = split == "train" if shuffle is None else shuffle
        if source.builtin and self._pads(source) and self._is_builtin_scaling(source):
            return builtin.load(source.builtin, split if split != "calibration" else "train",
                                batch_size=batch_size, holdout_fraction=holdout_fraction, holdout_seed=holdout_seed,
                                image_size=self.input_shape[0], channels=self.input_shape[2], resize="pad",
                                augment=augment, shuffle=shuffle, seed=seed, limit=limit, repeat=repeat)
        if split in ("train", "holdout") and holdout_fraction:
            keep, taken = split_indices(source, holdout_fraction, holdout_seed)
            source = source.subset(taken if split == "holdout" else keep, split)
        if limit is not None:
            source = source.subset(np.arange(min(limit, len(source))), f"first {limit}")
        return self._pipeline(source, batch_size=batch_size, augment=augment, shuffle=shuffle, seed=seed,
                              repeat=repeat, with_labels=source.labelled)

    def _is_builtin_scaling(self, source: Source) -> bool:
        mean, std = builtin.channel_stats(source.builtin)
        return (self.preprocessing.scaling == "mean_std"
                and np.allclose(self.preprocessing.mean[:len(mean)], mean)
                and np.allclose(self.preprocessing.std[:len(std)], std))

    def _images(self, source: Source, batch_size: int) -> tf.data.Dataset:
        return self._pipeline(source, batch_size=batch_size, augment=False, shuffle=False, seed=0, repeat=False,
                              with_labels=False)

    def _pipeline(self, source: Source, *, batch_size: int, augment: bool, shuffle: bool, seed: int, repeat: bool,
                  with_labels: bool) -> tf.data.Dataset:
        height, width, channels = self.input_shape
        preprocessing = self.preprocessing

        @tf.autograph.experimental.do_not_convert  # plain tensor code: no need for AutoGraph to read the source
        def decode(item: tf.Tensor) -> tf.Tensor:
            if source.paths is not None:
                image = tf.io.decode_image(tf.io.read_file(item), channels=channels, expand_animations=False)
            else:
                image = _to_channels(item, channels)
            image = tf.cast(image, tf.float32)
            if source.paths is not None or source.images.shape[1:3] != (height, width):
                image = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
            return tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8)

        items = source.paths if source.paths is not None else source.images
        images = tf.data.Dataset.from_tensor_slices(np.asarray(items)).map(
            decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if len(source) * height * width * channels <= CACHE_LIMIT_BYTES:
            images = images.cache()
        dataset = tf.data.Dataset.zip((images, tf.data.Dataset.from_tensor_slices(source.labels))) \
            if with_labels else images.map(_alone)
        if shuffle:
            dataset = dataset.shuffle(len(source), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            dataset = dataset.repeat()

        @tf.autograph.experimental.do_not_convert
        def scale(image: tf.Tensor, *label: tf.Tensor) -> Any:
            image = tf.cast(image, tf.float32)
            if augment:
                image = _augment(image, height, width, channels)
            image = preprocessing(image)
            return (image, *label) if label else image

        return dataset.map(scale, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True) \
            .batch(batch_size).prefetch(tf.data.AUTOTUNE)

    # ------------------------------------------------------------------------------------------------ report

    def describe(self) -> dict[str, Any]:
        """What the run used, for every report: sources, sizes, labels and the scaling."""
        return {
            "train": self.train.description, "train_images": len(self.train),
            "test": self.test.description, "test_images": len(self.test),
            "calibration": (self.calibration or self.train).description,
            "labels": self.labels or "none", "preprocessing": self.preprocessing.to_dict(),
            "input_shape": list(self.input_shape),
        }


def _check_builtin_fits(spec: builtin.DatasetSpec, input_shape: tuple[int, int, int],
                        outputs: Sequence[int | None]) -> None:
    size, _, channels = spec.image_shape
    if channels > input_shape[2]:
        raise ValueError(f"a model with {input_shape[2]} input channel(s) cannot take {spec.name} ({channels} "
                         "channels): not the data this model was made for; give its own images with --dataset")
    if size < input_shape[0] - 2 * MAX_PAD_PX:
        raise ValueError(f"{spec.name} has {size}×{size} px images but the model takes {input_shape[0]}×"
                         f"{input_shape[1]}: not the data this model was made for; give its own images with --dataset")
    if len(outputs) == 1 and outputs[0] is not None and spec.num_classes > outputs[0]:
        raise ValueError(f"{spec.name} has {spec.num_classes} classes but the model outputs {outputs[0]}: not the data "
                         "this model was made for; give its own images with --dataset")


@tf.autograph.experimental.do_not_convert
def _alone(image: tf.Tensor) -> tuple[tf.Tensor]:
    return (image,)


def _to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    have = image.shape[-1]
    if have == 4:
        image, have = image[..., :3], 3
    if have == channels:
        return image
    if channels == 3:
        return tf.repeat(image, 3, axis=-1)
    return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)


def _augment(image: tf.Tensor, height: int, width: int, channels: int) -> tf.Tensor:
    """A random crop after a border of 1/8 of the size, and a horizontal flip (asked for with ``augment``)."""
    pad_h, pad_w = max(1, height // 8), max(1, width // 8)
    padded = tf.image.pad_to_bounding_box(image, pad_h, pad_w, height + 2 * pad_h, width + 2 * pad_w)
    return tf.image.random_flip_left_right(tf.image.random_crop(padded, (height, width, channels)))


def model_input_shape(model: keras.Model) -> tuple[int, int, int]:
    """(height, width, channels) of a model's single image input.

    Raises:
        ValueError: several inputs, not an image input, or a dynamic size (give the Input a fixed one).
    """
    shapes = model.input_shape if isinstance(model.input_shape, list) else [model.input_shape]
    if len(shapes) != 1:
        raise ValueError(f"model {model.name!r} has {len(shapes)} inputs; tfcompress compresses one-image-input models")
    shape = tuple(shapes[0][1:])
    if len(shape) != 3 or None in shape:
        raise ValueError(f"model {model.name!r} input {shape} is not a fixed (height, width, channels) image; give "
                         "its Input a fixed size")
    return tuple(int(d) for d in shape)


def output_widths(model: keras.Model) -> list[int | None]:
    """The last dimension of each output (the class count of a classifier), None where it is not fixed."""
    shapes = model.output_shape if isinstance(model.output_shape, list) else [model.output_shape]
    return [shape[-1] if len(shape) > 1 else None for shape in shapes]


def batch_arrays(dataset: tf.data.Dataset) -> Sequence[np.ndarray]:
    """All batches of ``dataset`` concatenated per component (for small sets: calibration, checks)."""
    parts = list(dataset.as_numpy_iterator())
    if not parts:
        return []
    if not isinstance(parts[0], tuple):
        return [np.concatenate(parts)]
    return [np.concatenate(column) for column in zip(*parts, strict=True)]
