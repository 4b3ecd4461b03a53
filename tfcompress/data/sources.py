"""Where a user's images come from: one :class:`Source` for a folder, an array file, a tensorflow-datasets name or a
built-in dataset, labelled or not.

A source is a list of images (uint8 arrays in memory, or image files read when batched) with optional integer labels.
:func:`open_source` reads the string a user gives (``--dataset``):

* a **folder**: class sub-folders give labels (named in sorted order, as ``keras.utils.image_dataset_from_directory``
  does); images directly in the folder are unlabelled; ``train/`` and ``test/`` (or ``val``/``validation``) sub-folders
  are the splits;
* an **array file**: ``.npz`` with ``x`` (N, H, W[, C] uint8 pixels, or floats in 0–255) and optional ``y``; ``.npy``
  with the images alone;
* a **built-in name** (:data:`tfcompress.data.builtin.DATASETS`): found offline as before;
* **tfds:NAME** (or any tensorflow-datasets name): downloaded by tensorflow-datasets when online.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tfcompress.data import builtin

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SPLIT_FOLDERS = {"train": ("train", "training"), "test": ("test", "val", "validation")}
SOURCE_HELP = ("a folder of images (class sub-folders = labels, flat = unlabelled), an .npz file (x, optional y) or "
               f".npy file (x), tfds:NAME, or a built-in name ({', '.join(sorted(builtin.DATASETS))})")


@dataclasses.dataclass(frozen=True)
class Source:
    """A set of images with optional labels.

    Attributes:
        description: where the images are, for messages and reports (``"folder /data/dogs/train"``).
        images: uint8 pixels, (N, H, W, C), when the images are in memory; else None.
        paths: image files, when read lazily from a folder; else None.
        labels: int64 class indices; or the original model's outputs, one float array per output (targets that
            make fine-tuning distillation and evaluation fidelity); or None for unlabelled images.
        class_names: the class of each label value (a folder's sub-folder names), or None.
        builtin: the built-in dataset's name when the source is one (its own pipeline and pixel statistics apply).
    """

    description: str
    images: np.ndarray | None = None
    paths: tuple[str, ...] | None = None
    labels: np.ndarray | tuple[np.ndarray, ...] | None = None
    class_names: tuple[str, ...] | None = None
    builtin: str | None = None

    def __post_init__(self) -> None:
        if (self.images is None) == (self.paths is None):
            raise ValueError("a Source holds either images or paths")
        labelled = self.labels[0] if isinstance(self.labels, tuple) else self.labels
        if labelled is not None and len(labelled) != len(self):
            raise ValueError(f"{self.description}: {len(self)} images but {len(labelled)} labels")
        if not len(self):
            raise ValueError(f"{self.description} holds no images")

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.paths)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    @property
    def num_classes(self) -> int | None:
        """The classes the labels name (a folder's sub-folders, or the largest label + 1); None if unlabelled."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is None or isinstance(self.labels, tuple):
            return None
        return int(self.labels.max()) + 1

    def subset(self, indices: np.ndarray, what: str) -> Source:
        """The images at ``indices`` (in that order), described as ``what`` of this source."""
        return dataclasses.replace(
            self, description=f"{what} of {self.description}",
            images=None if self.images is None else self.images[indices],
            paths=None if self.paths is None else tuple(self.paths[i] for i in indices),
            labels=None if self.labels is None else tuple(head[indices] for head in self.labels)
            if isinstance(self.labels, tuple) else self.labels[indices])

    def with_labels(self, labels: np.ndarray | tuple[np.ndarray, ...], what: str) -> Source:
        """The same images with ``labels``: the original model's top-1 decisions on unlabelled images, or its
        outputs (a tuple, one array per output)."""
        labels = tuple(np.asarray(head, np.float32) for head in labels) if isinstance(labels, tuple) else np.asarray(
            labels, np.int64)
        return dataclasses.replace(self, description=f"{self.description}, {what}", labels=labels)

    def image_sizes(self) -> np.ndarray:
        """(N, 2) heights and widths; for files, read from their headers (Pillow opens without decoding)."""
        if self.images is not None:
            return np.tile(self.images.shape[1:3], (len(self.images), 1))
        from PIL import Image

        sizes = []
        for path in self.paths:
            with Image.open(path) as image:
                sizes.append((image.height, image.width))
        return np.asarray(sizes)

    def channels(self) -> int | None:
        """The channel count of in-memory images (files are decoded to the model's channels); else None."""
        return None if self.images is None else int(self.images.shape[-1])


# -------------------------------------------------------------------------------------------------- readers


def open_source(spec: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
                download: bool = True) -> Source | None:
    """The images ``spec`` names (see the module docstring), ``split`` "train" or "test".

    Returns None when ``spec`` has no separate ``split`` (a folder without a ``test/`` sub-folder, an array file):
    the caller then takes that split out of the training images.

    Raises:
        ValueError: ``spec`` names nothing readable, or what it names is malformed (the message says how to fix it).
    """
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if spec in builtin.DATASETS:
        images, labels = builtin.load_arrays(spec, split, data_dir, download)
        return Source(f"{spec} {split}", images=images, labels=labels, builtin=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _folder_split(path, split)
    if path.is_file():
        if split == "test":
            return None
        return read_arrays(path)
    if spec.startswith("tfds:") or ("/" not in spec and not path.suffix):
        return read_tfds(spec.removeprefix("tfds:"), split, download=download)
    raise ValueError(f"--dataset {spec!r}: no such file or folder; give {SOURCE_HELP}")


def read_arrays(path: str | os.PathLike) -> Source:
    """An ``.npz`` (``x``, optional ``y``) or ``.npy`` (images) file, loaded without pickle."""
    path = Path(path)
    if path.suffix not in (".npz", ".npy"):
        raise ValueError(f"--dataset {str(path)!r} is a file but not .npz or .npy; give {SOURCE_HELP}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {"x": loaded}
        else:
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
    except ValueError as error:
        raise ValueError(f"{path}: not a numpy file without pickled objects ({error})") from None
    if "x" not in arrays:
        raise ValueError(f"{path} has arrays {sorted(arrays)} but no 'x'; save the images as x (and labels as y): "
                         "np.savez(path, x=images, y=labels)")
    images = _as_uint8_images(arrays["x"], str(path))
    labels = None if "y" not in arrays else _as_labels(arrays["y"], len(images), str(path))
    return Source(f"arrays {path}", images=images, labels=labels)


def _as_labels(y: np.ndarray, count: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"{where}: y must hold one integer class per image, got {y.shape} {y.dtype}")
    if len(y) != count:
        raise ValueError(f"{where}: {count} images in x but {len(y)} labels in y")
    if y.min() < 0:
        raise ValueError(f"{where}: y has a negative class {int(y.min())}; classes are 0, 1, …")
    return y.astype(np.int64)


def _as_uint8_images(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{where}: images must be (N, H, W) or (N, H, W, 1|3|4), got {x.shape}")
    if x.dtype == np.uint8:
        return x
    if not np.isfinite(x).all():
        raise ValueError(f"{where}: images hold NaN or infinity")
    if x.min() < 0 or x.max() > 255:
        raise ValueError(f"{where}: pixel values {float(x.min()):g}…{float(x.max()):g} are not 0–255; give the raw "
                         "pixels (the model's scaling is set by --scaling)")
    if x.max() <= 1.0:
        raise ValueError(f"{where}: pixel values are within 0–1; give raw 0–255 pixels (uint8) and say how the model "
                         "scales them with --scaling=unit")
    return np.round(x).astype(np.uint8)


def _folder_split(folder: Path, split: str) -> Source | None:
    present = {name: folder / name for name in sum(SPLIT_FOLDERS.values(), ()) if (folder / name).is_dir()}
    if present:
        chosen = next((present[name] for name in SPLIT_FOLDERS[split] if name in present), None)
        if chosen is None:
            if split == "train":
                raise ValueError(f"{folder} has split folders {sorted(present)} but none of "
                                 f"{'/'.join(SPLIT_FOLDERS['train'])}/ to train on")
            return None
        return read_folder(chosen)
    return read_folder(folder) if split == "train" else None


def read_folder(folder: str | os.PathLike) -> Source:
    """Image files of ``folder``: in class sub-folders (labelled, classes in sorted order) or directly in it
    (unlabelled). Hidden files and other suffixes are skipped."""
    folder = Path(folder)
    direct = _images_in(folder)
    # every sub-folder is a class (an empty one too: labels are positions in the sorted names, as the model's are)
    classes = sorted(child.name for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    if not any(_images_in(folder / name, recursive=True) for name in classes):
        classes = []
    if direct and classes:
        raise ValueError(f"{folder} holds both images ({len(direct)}) and class folders ({', '.join(classes[:3])}…); "
                         "put every image in a class folder (labelled) or none (unlabelled)")
    if direct:
        return Source(f"folder {folder} (unlabelled)", paths=tuple(map(str, direct)))
    if not classes:
        raise ValueError(f"{folder} has no images ({', '.join(IMAGE_SUFFIXES)}) in it or in class sub-folders")
    paths, labels = [], []
    for index, name in enumerate(classes):
        found = _images_in(folder / name, recursive=True)
        paths += map(str, found)
        labels += [index] * len(found)
    return Source(f"folder {folder} ({len(classes)} classes)", paths=tuple(paths),
                  labels=np.asarray(labels, np.int64), class_names=tuple(classes))


def _images_in(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(path for path in pattern if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
                  and not path.name.startswith("."))


def read_tfds(name: str, split: str, *, download: bool = True) -> Source | None:
    """A tensorflow-datasets image dataset (``image`` and, if present, ``label`` features), in memory.

    Returns None when the dataset has no ``split`` (many have only "train").
    """
    import tensorflow_datasets as tfds  # slow to import; only this path needs it

    try:
        builder = tfds.builder(name)
    except Exception as error:  # DatasetNotFoundError and friends
        raise ValueError(f"--dataset {name!r} is not a folder, a file, a built-in name nor a tensorflow-datasets "
                         f"dataset ({type(error).__name__}); give {SOURCE_HELP}") from None
    if split not in builder.info.splits:
        return None
    features = builder.info.features
    if "image" not in features:
        raise ValueError(f"tensorflow-datasets {name!r} has no 'image' feature (features: {sorted(features)})")
    try:
        if download and not builder.is_prepared():
            builder.download_and_prepare()
        loaded = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    except Exception as error:
        raise builtin.DatasetNotFoundError(f"tensorflow-datasets {name!r} ({split}) is not available: "
                                           f"{type(error).__name__}: {str(error)[:200]}") from error
    labels = loaded.get("label")
    names = getattr(features.get("label"), "names", None) if "label" in features else None
    return Source(f"tensorflow-datasets {name} {split}", images=_as_uint8_images(loaded["image"], name),
                  labels=None if labels is None else labels.astype(np.int64),
                  class_names=tuple(names) if names else None)


def split_indices(source: Source, fraction: float, seed: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken) indices: ``fraction`` of the images taken out, stratified by class when there are class labels,
    deterministic for ``seed``."""
    classes = source.labels is not None and not isinstance(source.labels, tuple)  # outputs are not strata
    labels = source.labels if classes else np.zeros(len(source), np.int64)
    return builtin.stratified_holdout(labels, fraction, seed)


def describe_sources(sources: Sequence[Source | None]) -> str:
    return "; ".join(source.description for source in sources if source is not None)
