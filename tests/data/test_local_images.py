"""Datasets from local paths: an image folder (with class subfolders) and an
arrays .npz. Files are read in a fixed order with their labels and source
paths, images are resized and centre-cropped as documented, every malformed
source stops config validation (or the first job) with a message that says
what was expected and what was found, a tiny benchmark runs end to end on a
folder, and the workflow prepares arrays as their loader reads them."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ldsbench.data.image_sets import load_dataset_split, load_image_set, save_image_set
from ldsbench.data.local_images import DatasetError, load_folder
from ldsbench.spec.config import ConfigError, validate_config
from workflow_api import run_workflow, tiny_config, with_changes

PER_CLASS = 12


def _pixels(seed: int, height: int = 8, width: int = 8, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, channels), dtype=np.uint8)


def _save(path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path)


@pytest.fixture
def folder(tmp_path):
    """Two class subfolders (b, a: sorted, a is class 0) of 8x8 grey PNGs."""
    root = tmp_path / "images"
    for k, name in enumerate(["b", "a"]):
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            _save(root / name / f"{i:02d}.png", _pixels(100 * k + i))
    return root


@pytest.fixture
def arrays(tmp_path):
    path = tmp_path / "images.npz"
    images = np.stack([_pixels(i)[..., 0] for i in range(2 * PER_CLASS)])
    np.savez(path, images=images, labels=np.arange(2 * PER_CLASS) % 2)
    return path


def _config(name, path, **dataset):
    return with_changes(tiny_config(), {"dataset": {"name": name, "path": str(path), "n_train": 16, "n_heldout": 4, "seed": 0, **dataset}})


def _errors(config) -> str:
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    return str(error.value)


def test_folder_rows_are_sorted_paths_with_class_labels(folder):
    images, labels, paths, classes = load_folder(folder, 1, None)
    assert classes == ["a", "b"] and paths[0] == "a/00.png" and paths[PER_CLASS] == "b/00.png"
    assert list(labels) == [0] * PER_CLASS + [1] * PER_CLASS
    np.testing.assert_array_equal(images[PER_CLASS], _pixels(0))  # b/00.png


def test_training_file_records_each_rows_source_path(folder, tmp_path):
    train, heldout = load_dataset_split(validate_config(_config("folder", folder))["dataset"])
    save_image_set(tmp_path / "train.npz", train)
    loaded = load_image_set(tmp_path / "train.npz")
    assert loaded.images.shape == (16, 1, 8, 8) and loaded.images.min() >= -1 and loaded.images.max() <= 1
    for row in range(len(loaded)):
        pixels = np.asarray(Image.open(folder / loaded.source_path[row]), dtype=np.float32)
        np.testing.assert_allclose(loaded.images[row, 0], pixels / 127.5 - 1, atol=1e-6)
    assert not set(loaded.source_path) & set(heldout.source_path)


def test_resize_takes_the_shorter_side_then_the_centred_square(tmp_path):
    root = tmp_path / "wide"
    root.mkdir()
    wide = np.zeros((8, 16, 3), dtype=np.uint8)
    wide[:, 4:12] = 255  # the centred 8x8 square is white, the sides black
    _save(root / "x.png", wide)
    images, *_ = load_folder(root, 3, 8)
    assert images.shape == (1, 8, 8, 3) and (images == 255).all()
    images, *_ = load_folder(root, 3, 4)  # 16x8 -> 8x4 (bicubic), then the middle 4 columns
    assert images.shape == (1, 4, 4, 3) and images.min() > 200


def test_arrays_give_the_same_split_as_their_rows(arrays):
    train, _ = load_dataset_split(validate_config(_config("arrays", arrays))["dataset"])
    with np.load(arrays) as data:
        np.testing.assert_allclose(train.images[:, 0], data["images"][train.source_index] / 127.5 - 1, atol=1e-6)
        np.testing.assert_array_equal(train.labels, data["labels"][train.source_index])


def test_an_empty_or_missing_folder_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    assert f"0 images under {str(tmp_path / 'empty')!r}" in _errors(_config("folder", tmp_path / "empty"))
    assert "is not a folder" in _errors(_config("folder", tmp_path / "nowhere"))
    assert "dataset.path: required for dataset.name folder" in _errors(with_changes(_config("folder", tmp_path), {"dataset.path": None}))


def test_too_few_images_and_a_model_of_another_size_are_named(folder):
    assert "n_train + n_heldout = 30 exceeds the 24 images" in _errors(_config("folder", folder, n_train=26))
    assert "model.unet.sample_size: 8, but the images are 16x16" in _errors(_config("folder", folder, image_size=16))
    assert "model.unet.in_channels and out_channels must be the images' 1 channels" in _errors(
        with_changes(_config("folder", folder), {"model.unet.in_channels": 3})
    )


def test_wrong_channel_count_mixed_sizes_and_unreadable_files_are_named(folder):
    assert "dataset.channels: 3, but image 0" in _errors(_config("folder", folder, channels=3))
    # The first job checks every image, naming the first that is wrong.
    _save(folder / "b" / "03.png", _pixels(7, channels=3))
    with pytest.raises(DatasetError, match=r"image 15 \(b/03.png\) under .* is 3-channel, dataset.channels is 1"):
        load_folder(folder, 1, None)
    _save(folder / "b" / "03.png", _pixels(7, height=8, width=10))
    with pytest.raises(DatasetError, match=r"image 15 \(b/03.png\) under .* is 10x8, image 0 is 8x8; set dataset.image_size"):
        load_folder(folder, 1, None)
    assert load_folder(folder, 1, 8)[0].shape == (2 * PER_CLASS, 8, 8, 1)
    (folder / "a" / "05.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"image 5 \(a/05.png\) .* cannot be read as an image"):
        load_folder(folder, 1, 8)


def test_malformed_arrays_are_named(tmp_path, arrays):
    np.savez(tmp_path / "no_images.npz", pictures=np.zeros((4, 8, 8), np.uint8))
    assert "has no array 'images'" in _errors(_config("arrays", tmp_path / "no_images.npz"))
    np.savez(tmp_path / "floats.npz", images=np.zeros((24, 8, 8), np.float32))
    assert "images in" in _errors(_config("arrays", tmp_path / "floats.npz")) and "expected uint8 [N, H, W, C]" in _errors(
        _config("arrays", tmp_path / "floats.npz")
    )
    np.savez(tmp_path / "labels.npz", images=np.zeros((24, 8, 8), np.uint8), labels=np.zeros(3, np.int64))
    assert "expected integers [24]" in _errors(_config("arrays", tmp_path / "labels.npz"))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    assert "is not a readable .npz" in _errors(_config("arrays", tmp_path / "broken.npz"))
    assert "dataset.image_size: only for dataset.name folder" in _errors(_config("arrays", arrays, image_size=8))
    assert "dataset.channels: only for dataset.name folder or arrays, not digits" in _errors(with_changes(tiny_config(), {"dataset.channels": 1}))


# The smallest run that goes through every stage: two cheap methods.
SMALL_RUN = {
    "methods": {"pixels": {"type": "pixel_similarity"}, "random": {"type": "random"}},
    "removal": {"measurement": "loss", "queries": []},
}


@pytest.mark.slow
def test_a_tiny_benchmark_runs_on_a_folder(folder, tmp_path):
    config = with_changes(_config("folder", folder), SMALL_RUN)
    result = run_workflow(config, tmp_path / "run")
    assert result.returncode == 0, result.stderr[-5000:]
    summary = pd.read_parquet(tmp_path / "run" / "results" / "lds_summary.parquet")
    assert set(summary["method"]) == {"pixels", "random", "retraining_ceiling"}
    train = load_image_set(tmp_path / "run" / "results" / "data" / "train.npz")
    assert train.source_path is not None


def test_the_workflow_prepares_the_arrays_split(arrays, tmp_path):
    """The kinds differ only up to the prepared image sets, which every later
    stage reads the same way (the folder's run above goes on to the end)."""
    config = with_changes(_config("arrays", arrays), SMALL_RUN)
    result = run_workflow(config, tmp_path / "run", "results/data/train.npz", "results/data/heldout.npz")
    assert result.returncode == 0, result.stderr[-5000:]
    train = load_image_set(tmp_path / "run" / "results" / "data" / "train.npz")
    expected, _ = load_dataset_split(validate_config(config)["dataset"])
    np.testing.assert_array_equal(train.images, expected.images)
    np.testing.assert_array_equal(train.labels, expected.labels)
    assert train.source_path is None
