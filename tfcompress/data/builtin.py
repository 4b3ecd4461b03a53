"""The built-in image classification datasets as ``tf.data`` pipelines.

One entry point, :func:`load`, for mnist, fashion_mnist, kmnist, cifar10 and cifar100. Images are looked up
in this order and the first source that has them wins:

1. an explicit ``data_dir`` (IDX ``.gz`` files for the MNIST family, the CIFAR *binary* format for CIFAR —
   never a pickle);
2. the Debian package location (``apt-get install dataset-fashion-mnist`` installs
   ``/usr/share/datasets/fashion-mnist``);
3. tensorflow-datasets, which downloads when the machine is online. Offline it fails at once (a network probe
   of the dataset's download host, instead of minutes of retries), and a failed download removes the partial
   folders it left in the tensorflow-datasets data directory.

The training split can give up a deterministic, stratified holdout (``split="holdout"``) on which pruning
loops measure error without touching the test set. Images are scaled to [0, 1] and normalized per channel with
the mean and std of the full training split, so the statistics do not depend on the holdout fraction.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import shutil
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What tfcompress knows about a dataset: shape, classes and where its files may be."""

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    file_format: str  # "idx" | "cifar10" | "cifar100"
    tfds_name: str
    debian_dir: str | None = None
    debian_package: str | None = None
    download_host: str = "storage.googleapis.com"  # where tensorflow-datasets fetches the files from


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("mnist", (28, 28, 1), 10, "idx", "mnist"),
        DatasetSpec(
            "fashion_mnist", (28, 28, 1), 10, "idx", "fashion_mnist",
            debian_dir="/usr/share/datasets/fashion-mnist", debian_package="dataset-fashion-mnist",
            download_host="fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        ),
        DatasetSpec("kmnist", (28, 28, 1), 10, "idx", "kmnist", download_host="codh.rois.ac.jp"),
        DatasetSpec("cifar10", (32, 32, 3), 10, "cifar10", "cifar10", download_host="www.cs.toronto.edu"),
        DatasetSpec("cifar100", (32, 32, 3), 100, "cifar100", "cifar100", download_host="www.cs.toronto.edu"),
    )
}

SPLITS = ("train", "holdout", "test")

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FILES = {
    "cifar10": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
    "cifar100": {"train": ["train.bin"], "test": ["test.bin"]},
}
# Folder names inside the official archives, so a user may point at the folder that contains them.
_CIFAR_SUBDIRS = {"cifar10": "cifar-10-batches-bin", "cifar100": "cifar-100-binary"}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not in any source tfcompress looked at."""


def get_spec(name: str) -> DatasetSpec:
    """Returns the :class:`DatasetSpec` of ``name`` or raises a ValueError listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}") from None


# --------------------------------------------------------------------------------------------- file formats


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (optionally gzipped), the format of MNIST, Fashion-MNIST and KMNIST."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise ValueError(f"{path}: unsupported IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=dtypes[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says shape {tuple(dims)} but holds {data.size} values")
    return data.reshape(tuple(int(d) for d in dims))


def read_cifar_binary(paths: Sequence[str | os.PathLike], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Reads CIFAR binary batches: each record is ``label_bytes`` label bytes then 3×32×32 pixels (CHW).

    CIFAR-10 records have one label byte; CIFAR-100 records have two (coarse, fine) and the fine label is
    returned.
    """
    record = label_bytes + 3 * 32 * 32
    images, labels = [], []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % record:
            raise ValueError(f"{path}: size {raw.size} is not a multiple of the {record}-byte CIFAR record")
        rows = raw.reshape(-1, record)
        labels.append(rows[:, label_bytes - 1].astype(np.int64))
        images.append(rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(images), np.concatenate(labels)


def _read_local(spec: DatasetSpec, split: str, folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Reads ``split`` from ``folder`` if its files are there, else returns None."""
    if spec.file_format == "idx":
        found = []
        for stem in _IDX_FILES[split]:
            candidates = [folder / f"{stem}.gz", folder / stem]
            path = next((c for c in candidates if c.is_file()), None)
            if path is None:
                return None
            found.append(path)
        images, labels = read_idx(found[0]), read_idx(found[1])
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels for {split}")
        return images[..., None], labels.astype(np.int64)
    if (folder / _CIFAR_SUBDIRS[spec.file_format]).is_dir():
        folder = folder / _CIFAR_SUBDIRS[spec.file_format]
    paths = [folder / name for name in _CIFAR_FILES[spec.file_format][split]]
    if not all(p.is_file() for p in paths):
        return None
    return read_cifar_binary(paths, label_bytes=1 if spec.file_format == "cifar10" else 2)


def _read_tfds(spec: DatasetSpec, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds  # imported late: it is slow and only needed on this path

    builder = tfds.builder(spec.tfds_name)
    if download and not builder.is_prepared():
        _check_online(spec.download_host)
    root = Path(builder.data_dir_root)
    # What a download creates; whichever of these did not exist before is removed again if it fails.
    created = [path for path in (root, root / spec.tfds_name, root / "downloads", root / "downloads" / spec.tfds_name,
                                 root / "downloads" / "extracted") if not path.exists()]
    try:
        images, labels = tfds.as_numpy(
            tfds.load(spec.tfds_name, split=split, as_supervised=True, batch_size=-1, download=download)
        )
    except BaseException:  # a network error, a checksum, or Ctrl-C: leave no partial dataset behind
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        raise
    return images.astype(np.uint8), labels.astype(np.int64)


def _check_online(host: str, timeout_s: float = 5.0) -> None:
    """Raises ConnectionError at once when ``host`` cannot be reached (tensorflow-datasets would retry for
    minutes). Skipped behind a proxy, which may reach what a direct connection cannot."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as error:
        raise ConnectionError(f"offline? cannot reach the download host {host} ({error})") from None


@functools.lru_cache(maxsize=8)
def _load_arrays_cached(
    name: str, split: str, data_dir: str | None, download: bool
) -> tuple[np.ndarray, np.ndarray]:
    spec = get_spec(name)
    looked: list[str] = []
    folders = [Path(data_dir).expanduser()] if data_dir else []
    if spec.debian_dir:
        folders.append(Path(spec.debian_dir))
    for folder in folders:
        looked.append(str(folder))
        arrays = _read_local(spec, split, folder) if folder.is_dir() else None
        if arrays is not None:
            return arrays
    looked.append(f"tensorflow-datasets {spec.tfds_name!r} (download={download})")
    try:
        return _read_tfds(spec, split, download)
    except Exception as error:  # tfds raises many kinds: network, not prepared, checksum; ours: offline
        how = [f"pass data_dir= a folder with the {_format_hint(spec)}"]
        if spec.debian_package:
            how.append(f"on Debian: apt-get install {spec.debian_package}")
        how.append(f"when online: python -c \"import tensorflow_datasets as t; t.load('{spec.tfds_name}')\"")
        raise DatasetNotFoundError(
            f"dataset {name!r} ({split}) is not available. Looked in: {'; '.join(looked)}. "
            f"tensorflow-datasets said: {type(error).__name__}: {str(error)[:300]}. "
            f"To get it: {'; or '.join(how)}."
        ) from error


def _format_hint(spec: DatasetSpec) -> str:
    if spec.file_format == "idx":
        return "IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...)"
    return f"CIFAR binary files ({', '.join(_CIFAR_FILES[spec.file_format]['train'][:1])}, ...)"


def load_arrays(
    name: str, split: str = "train", data_dir: str | os.PathLike | None = None, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the raw ``(images uint8 NHWC, labels int64)`` of ``split`` ("train" or "test").

    Raises:
        ValueError: unknown dataset or split.
        DatasetNotFoundError: no source had the files; the message lists where it looked and how to get them.
    """
    get_spec(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test' for raw arrays, got {split!r}")
    images, labels = _load_arrays_cached(name, split, str(data_dir) if data_dir else None, download)
    return images, labels


# ----------------------------------------------------------------------------------------- holdout and stats


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices into (train, holdout) with the same class proportions in both, deterministically.

    Each class gives ``round(fraction · n_class)`` examples to the holdout, drawn with ``seed``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    holdout = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        holdout.append(rng.permutation(members)[: round(fraction * members.size)])
    holdout_idx = np.sort(np.concatenate(holdout)) if holdout else np.array([], dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(labels.size), holdout_idx, assume_unique=True)
    return train_idx, holdout_idx


_CHANNEL_STATS: dict[tuple[str, str | None], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def channel_stats(
    name: str, data_dir: str | os.PathLike | None = None, download: bool = True
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of the full training split, in [0, 1] pixel units (computed once per process
    for a dataset and folder: however its callers spell them)."""
    key = (name, str(data_dir) if data_dir else None)
    if key not in _CHANNEL_STATS:
        images, _ = load_arrays(name, "train", data_dir, download)
        pixels = images.reshape(-1, images.shape[-1])
        mean = pixels.mean(axis=0, dtype=np.float64)
        square = np.einsum("ij,ij->j", pixels, pixels, dtype=np.float64) / len(pixels)
        _CHANNEL_STATS[key] = (tuple((mean / 255.0).tolist()),
                               tuple((np.sqrt(np.maximum(square - mean**2, 0.0)) / 255.0).tolist()))
    return _CHANNEL_STATS[key]


# -------------------------------------------------------------------------------------------------- pipeline


def load(
    name: str,
    split: str = "train",
    *,
    batch_size: int = 128,
    holdout_fraction: float = 0.0,
    holdout_seed: int = 17,
    image_size: int | None = None,
    channels: int | None = None,
    resize: str = "pad",
    normalize: bool = True,
    augment: bool = False,
    crop_padding: int = 4,
    flip: bool = True,
    shuffle: bool | None = None,
    seed: int = 0,
    limit: int | None = None,
    repeat: bool = False,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> tf.data.Dataset:
    """Returns a batched, prefetched ``tf.data.Dataset`` of ``(image float32 NHWC, label int64)``.

    Args:
        name: one of ``DATASETS`` (mnist, fashion_mnist, kmnist, cifar10, cifar100).
        split: "train", "holdout" (a stratified part of the training split) or "test".
        batch_size: examples per batch.
        holdout_fraction: fraction of the training split kept out of "train" and served as "holdout".
        holdout_seed: seed of the holdout draw (17, as in the NetAdapt reference).
        image_size: output height and width; None keeps the native size.
        channels: 1 or 3; a 1-channel dataset is repeated to 3 channels; None keeps the native count.
        resize: how to reach ``image_size``: "pad" (zero border, 28→32 the LeNet way) or "bilinear".
        normalize: subtract the per-channel mean and divide by the std of the training split.
        augment: random crop after ``crop_padding`` pixels of zero padding, and horizontal flip if ``flip``.
        shuffle: shuffle every epoch; defaults to True for "train" and False otherwise.
        seed: the shuffle's seed (the same order for the same seed); the random crop and flip follow TensorFlow's
            global seed and are not reproducible from it.
        limit: keep only the first ``limit`` examples (after the holdout split), for quick runs.
        repeat: repeat forever (for ``steps_per_epoch`` style loops).
        data_dir: a folder holding the dataset files, searched first.
        download: let tensorflow-datasets download when no local copy exists.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "holdout" and not holdout_fraction:
        raise ValueError("split='holdout' needs holdout_fraction > 0")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if resize not in ("pad", "bilinear"):
        raise ValueError(f"resize must be 'pad' or 'bilinear', got {resize!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be ≥ 1 (examples kept), got {limit}")
    image_size, channels = input_shape(name, image_size, channels)[1:]
    native_size, native_channels = spec.image_shape[0], spec.image_shape[2]
    if channels not in (native_channels, 3):
        raise ValueError(f"channels must be {native_channels} or 3 for {name}, got {channels}")
    if resize == "pad" and image_size < native_size:
        raise ValueError(f"cannot pad {native_size}px images down to {image_size}px; use resize='bilinear'")

    images, labels = load_arrays(name, "test" if split == "test" else "train", data_dir, download)
    if split != "test" and holdout_fraction:
        train_idx, holdout_idx = stratified_holdout(labels, holdout_fraction, holdout_seed)
        keep = holdout_idx if split == "holdout" else train_idx
        images, labels = images[keep], labels[keep]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]

    mean, std = channel_stats(name, str(data_dir) if data_dir else None, download)
    if channels != native_channels:
        mean, std = mean * channels, std * channels
    mean_t = tf.constant(mean, tf.float32)
    std_t = tf.constant(std, tf.float32)
    pad = (image_size - native_size) // 2

    def to_float(image: tf.Tensor) -> tf.Tensor:
        image = tf.cast(image, tf.float32) / 255.0
        if image_size != native_size:
            if resize == "pad":
                image = tf.image.pad_to_bounding_box(image, pad, pad, image_size, image_size)
            else:
                image = tf.image.resize(image, (image_size, image_size), method="bilinear")
        if channels != native_channels:
            image = tf.repeat(image, channels, axis=-1)
        return image

    def augment_image(image: tf.Tensor) -> tf.Tensor:
        padded = tf.image.pad_to_bounding_box(
            image, crop_padding, crop_padding, image_size + 2 * crop_padding, image_size + 2 * crop_padding
        )
        image = tf.image.random_crop(padded, (image_size, image_size, channels))
        return tf.image.random_flip_left_right(image) if flip else image

    def preprocess(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = to_float(image)
        if augment:
            image = augment_image(image)
        if normalize:
            image = (image - mean_t) / std_t
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle if shuffle is not None else split == "train":
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def input_shape(name: str, image_size: int | None = None, channels: int | None = None) -> tuple[int, int, int]:
    """The model input shape that :func:`load` produces with these options (None: the dataset's own).

    Raises:
        ValueError: an image size or channel count < 1 (0 is not "the default").
    """
    spec = get_spec(name)
    for option, value in (("image_size", image_size), ("channels", channels)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be ≥ 1 (or None for {name}'s own), got {value}")
    size = spec.image_shape[0] if image_size is None else image_size
    return (size, size, spec.image_shape[2] if channels is None else channels)


def pipeline_options_for(model_input_shape: Sequence[int | None], name: str) -> dict[str, int]:
    """``image_size`` and ``channels`` for :func:`load` so that ``name`` fits a model's input shape.

    A dynamic height or width (None, a fully convolutional model) is taken at the dataset's size.

    Raises:
        ValueError: a non-square input, an unknown channel count, or channels the dataset cannot give.
    """
    if len(model_input_shape) < 3:
        raise ValueError(f"model input {tuple(model_input_shape)} is not an image (height, width, channels)")
    spec = get_spec(name)
    height, width, chans = model_input_shape[-3:]
    if chans is None:
        raise ValueError(f"model input {tuple(model_input_shape)} has no fixed channel count; give its Input one")
    height, width = (width if height is None else height), (height if width is None else width)
    if height is None:  # both dynamic
        height = width = spec.image_shape[0]
    if height != width:
        raise ValueError(f"model input {tuple(model_input_shape)} is not square; tfcompress pipelines are")
    height, chans = int(height), int(chans)
    if chans not in (spec.image_shape[2], 3):
        raise ValueError(f"a model with {chans} input channels cannot take {name} ({spec.image_shape[2]} channels)")
    return {"image_size": height, "channels": chans}


def _main(argv: Sequence[str]) -> int:
    """``python -m tfcompress.data.builtin NAME [DATA_DIR]``: fetch (if needed) and summarise a dataset."""
    if len(argv) not in (2, 3):
        print(f"usage: python -m tfcompress.data.builtin {{{','.join(sorted(DATASETS))}}} [DATA_DIR]")
        return 2
    data_dir = argv[2] if len(argv) == 3 else None
    for split in ("train", "test"):
        images, labels = load_arrays(argv[1], split, data_dir)
        print(f"{argv[1]} {split}: {images.shape[0]} images {images.shape[1:]}, {np.unique(labels).size} classes")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv))
