"""Datasets: the real Fashion-MNIST from Debian's package, file formats, holdout split, pipeline options."""

import numpy as np
import pytest

from tfcompress import data

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(scope="module")
def fashion_train():
    return data.load_arrays("fashion_mnist", "train")


def test_fashion_mnist_loads_from_the_debian_package(fashion_train):
    images, labels = fashion_train
    assert images.shape == (60000, 28, 28, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10
    test_images, test_labels = data.load_arrays("fashion_mnist", "test")
    assert test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(test_labels).tolist() == [1000] * 10


def test_explicit_idx_folder_reads_the_same_arrays(fashion_train, tmp_path):
    # An explicit folder wins over the Debian location: copy the real files with plain (non-gz) names.
    import gzip
    import shutil

    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        with gzip.open(f"{FASHION_DIR}/{stem}.gz") as src, open(tmp_path / stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    images, labels = data.load_arrays("fashion_mnist", "train", data_dir=tmp_path)
    np.testing.assert_array_equal(images, fashion_train[0])
    np.testing.assert_array_equal(labels, fashion_train[1])


def _write_cifar_records(path, images, labels, label_bytes):
    records = np.zeros((len(labels), label_bytes + 3072), np.uint8)
    records[:, label_bytes - 1] = labels
    if label_bytes == 2:
        records[:, 0] = labels // 5  # a coarse label, which the reader must skip
    records[:, label_bytes:] = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)
    records.tofile(path)


@pytest.mark.parametrize(("name", "label_bytes"), [("cifar10", 1), ("cifar100", 2)])
def test_cifar_binary_format_round_trips(fashion_train, tmp_path, name, label_bytes):
    # Real images in the CIFAR binary layout (label bytes, then 3×32×32 CHW): the reader must give them back.
    rng = np.random.default_rng(0)
    images = np.repeat(np.pad(fashion_train[0][:60], ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)
    images[..., 1] = 255 - images[..., 1]  # make channels differ so a CHW/HWC mix-up would show
    labels = rng.integers(0, 10 if name == "cifar10" else 100, size=60).astype(np.uint8)
    folder = tmp_path / ("cifar-10-batches-bin" if name == "cifar10" else "cifar-100-binary")
    folder.mkdir()
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if name == "cifar10" else ["train.bin"]
    for i, file_name in enumerate(names):
        chunk = slice(i * 60 // len(names), (i + 1) * 60 // len(names))
        _write_cifar_records(folder / file_name, images[chunk], labels[chunk], label_bytes)
    _write_cifar_records(folder / ("test_batch.bin" if name == "cifar10" else "test.bin"), images, labels, label_bytes)
    got_images, got_labels = data.load_arrays(name, "train", data_dir=tmp_path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_stratified_holdout_is_deterministic_disjoint_and_balanced(fashion_train):
    labels = fashion_train[1]
    train_idx, holdout_idx = data.stratified_holdout(labels, 0.1, seed=17)
    again = data.stratified_holdout(labels, 0.1, seed=17)
    other = data.stratified_holdout(labels, 0.1, seed=18)
    np.testing.assert_array_equal(holdout_idx, again[1])
    assert not np.array_equal(holdout_idx, other[1])
    assert np.intersect1d(train_idx, holdout_idx).size == 0
    assert train_idx.size + holdout_idx.size == labels.size
    assert np.bincount(labels[holdout_idx]).tolist() == [600] * 10


@pytest.mark.slow
def test_holdout_and_train_splits_through_the_pipeline():
    holdout = data.load("fashion_mnist", "holdout", holdout_fraction=0.1, batch_size=1000)
    train = data.load("fashion_mnist", "train", holdout_fraction=0.1, batch_size=1000, shuffle=False)
    assert sum(int(y.shape[0]) for _, y in holdout) == 6000
    assert sum(int(y.shape[0]) for _, y in train) == 54000


def test_pad_to_32_and_repeat_channels(fashion_train):
    batch = next(iter(data.load("fashion_mnist", "train", batch_size=8, image_size=32, channels=3,
                                normalize=False, shuffle=False)))[0].numpy()
    assert batch.shape == (8, 32, 32, 3)
    np.testing.assert_allclose(batch[:, 2:30, 2:30, 0], fashion_train[0][:8, ..., 0] / 255.0, atol=1e-6)
    assert np.all(batch[:, :2] == 0) and np.all(batch[:, :, 30:] == 0)
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])


def test_bilinear_resize_and_pad_refuses_to_shrink():
    batch = next(iter(data.load("fashion_mnist", "test", batch_size=4, image_size=32, resize="bilinear")))[0]
    assert batch.shape == (4, 32, 32, 1)
    with pytest.raises(ValueError, match="bilinear"):
        data.load("fashion_mnist", "test", image_size=20)


@pytest.mark.slow
def test_normalization_gives_zero_mean_unit_std_on_train():
    dataset = data.load("fashion_mnist", "train", batch_size=10000, shuffle=False)
    pixels = np.concatenate([x.numpy().ravel() for x, _ in dataset])
    assert abs(pixels.mean()) < 1e-3
    assert abs(pixels.std() - 1.0) < 1e-3


def test_augmentation_changes_images_but_not_labels():
    plain = data.load("fashion_mnist", "test", batch_size=64, shuffle=False)
    augmented = data.load("fashion_mnist", "test", batch_size=64, shuffle=False, augment=True, seed=3)
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(augmented))
    np.testing.assert_array_equal(y0, y1)
    assert x1.shape == x0.shape
    changed = np.mean(np.any(np.abs(x1.numpy() - x0.numpy()) > 1e-6, axis=(1, 2, 3)))
    assert changed > 0.8  # a crop offset of 0,0 and no flip happens with probability 1/162


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="fashion_mnist"):
        data.load("imagenet21k")


def test_dataset_missing_offline_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load_arrays("kmnist", "train", data_dir=tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path) in message
    assert "tensorflow-datasets" in message
    assert "IDX" in message


def test_input_shape_follows_pipeline_options():
    assert data.input_shape("fashion_mnist") == (28, 28, 1)
    assert data.input_shape("fashion_mnist", image_size=32, channels=3) == (32, 32, 3)
    assert data.pipeline_options_for((None, 32, 32, 1), "fashion_mnist") == {"image_size": 32, "channels": 1}
    with pytest.raises(ValueError, match="cannot take"):
        data.pipeline_options_for((None, 32, 32, 2), "fashion_mnist")
