"""Datasets: the bundled digits, and CIFAR-2 read from the standard archive."""

import numpy as np
import pytest

from cifar_archive import write_cifar10_archive
from ldsbench.data.image_sets import load_cifar2_split, load_digits_split, load_image_set, save_image_set


def test_digits_split_is_disjoint_and_scaled():
    train, heldout = load_digits_split(100, 20, seed=0)
    assert train.images.shape == (100, 1, 8, 8) and heldout.images.shape == (20, 1, 8, 8)
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    assert not set(train.source_index) & set(heldout.source_index)
    again, _ = load_digits_split(100, 20, seed=0)
    np.testing.assert_array_equal(train.images, again.images)


def test_image_set_roundtrip(tmp_path):
    train, _ = load_digits_split(10, 0, seed=1)
    save_image_set(tmp_path / "train.npz", train)
    loaded = load_image_set(tmp_path / "train.npz")
    np.testing.assert_array_equal(loaded.images, train.images)
    np.testing.assert_array_equal(loaded.labels, train.labels)


def test_cifar2_reads_the_python_archive(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_cifar10_archive(archive)
    train, heldout = load_cifar2_split(archive, n_train=8, n_heldout=4, seed=0)
    assert train.images.shape == (8, 3, 32, 32) and set(train.labels) == {1, 7}
    assert (train.labels == 1).sum() == 4
    assert set(heldout.labels) <= {1, 7} and len(heldout) == 4
    assert -1.0 <= train.images.min() and train.images.max() <= 1.0


def test_cifar2_missing_archive_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"):
        load_cifar2_split(tmp_path / "nope.tar.gz", n_train=8, n_heldout=4, seed=0)
