"""Training and held-out image sets.

A dataset file is an ``.npz`` with ``images`` float32 [N, C, H, W] scaled to
[-1, 1] (latent mode keeps an 8-bit local source's images as uint8 grey
levels; ``to_unit_range`` scales them), ``labels`` int64 [N] and
``source_index`` int64 [N] (the row in the original source, for provenance), and for an image folder ``source_path``
[N] (each row's file, relative to the folder). Train index ``i`` is row
``i`` of the file. Local sources (folders and arrays) are read by
``local_images``.
"""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ldsbench.runtime.io import array_sha256, atomic_path

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# The classes each CIFAR dataset name takes when dataset.classes is not set:
# CIFAR-2 is automobile (1) and horse (7).
CIFAR_CLASSES = {"cifar2": (1, 7), "cifar10": tuple(range(10))}


@dataclass
class ImageSet:
    images: np.ndarray  # float32 [N, C, H, W] in [-1, 1], or uint8 levels (module docstring)
    labels: np.ndarray  # int64 [N]
    source_index: np.ndarray  # int64 [N]
    source_path: np.ndarray | None = None  # str [N], files of an image folder

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImageSet:
        paths = None if self.source_path is None else self.source_path[index]
        return ImageSet(self.images[index], self.labels[index], self.source_index[index], paths)


def save_image_set(path, image_set: ImageSet) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                images=_stored(image_set.images),
                labels=image_set.labels.astype(np.int64),
                source_index=image_set.source_index.astype(np.int64),
                **({} if image_set.source_path is None else {"source_path": np.asarray(image_set.source_path, dtype=str)}),
            )


def _stored(images: np.ndarray) -> np.ndarray:
    return images if images.dtype == np.uint8 else images.astype(np.float32)


def load_image_set(path) -> ImageSet:
    with np.load(path) as data:
        return ImageSet(data["images"], data["labels"], data["source_index"], data["source_path"] if "source_path" in data.files else None)


def image_set_hash(image_set: ImageSet) -> str:
    """sha256 of the pixel values and labels, identifying a training set."""
    return array_sha256(_stored(image_set.images), image_set.labels.astype(np.int64))


def _split(images, labels, n_train, n_heldout, seed, classes, paths=None) -> tuple[ImageSet, ImageSet]:
    """A random train / held-out split (``seed``) of the rows whose label is in ``classes`` (None: all)."""
    full = ImageSet(images, labels.astype(np.int64), np.arange(len(labels)), None if paths is None else np.asarray(paths, dtype=str))
    if classes is not None:
        full = full.subset(np.flatnonzero(np.isin(labels, classes)))
    if n_train + n_heldout > len(full):
        raise ValueError(f"dataset: n_train + n_heldout = {n_train + n_heldout} exceeds the {len(full)} available images")
    order = np.random.default_rng(seed).permutation(len(full))
    train, heldout = order[:n_train], order[n_train : n_train + n_heldout]
    return full.subset(train), full.subset(heldout)


def scaled_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] in [-1, 1] (v / 127.5 - 1)."""
    return to_unit_range(images).transpose(0, 3, 1, 2).copy()


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """8-bit levels v -> float32 v / 127.5 - 1; float images are returned as they are."""
    return images.astype(np.float32) / 127.5 - 1.0 if images.dtype == np.uint8 else images


def load_digits_split(n_train: int, n_heldout: int, seed: int, classes=None):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download).

    Pixel values 0..16 are mapped linearly to [-1, 1]. Returns (train, heldout).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 8.0 - 1.0)[:, None, :, :]
    return _split(images, digits.target, n_train, n_heldout, seed, classes)


def load_local_split(dataset: dict, keep_uint8: bool = False) -> tuple[ImageSet, ImageSet]:
    """An image folder or an arrays ``.npz`` (``local_images``), split at random
    with ``dataset.seed``; with ``keep_uint8`` the images stay 8-bit levels
    [N, C, H, W] (a quarter of float32's memory: latent mode's pixel files)."""
    from ldsbench.data.local_images import load_arrays, load_folder

    paths = None
    if dataset["name"] == "folder":
        images, labels, paths, _ = load_folder(dataset["path"], dataset.get("channels"), dataset.get("image_size"))
    else:
        images, labels = load_arrays(dataset["path"])
    # Split the 8-bit images, then convert only the rows kept.
    splits = _split(images, labels, dataset["n_train"], dataset.get("n_heldout", 0), dataset.get("seed", 0), dataset.get("classes"), paths)
    for split in splits:
        split.images = np.ascontiguousarray(split.images.transpose(0, 3, 1, 2)) if keep_uint8 else scaled_uint8(split.images)
    return splits


def _read_cifar_batches(path: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 python batches from the archive or its extracted folder."""
    arrays, labels = [], []
    if path.is_dir():
        folder = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
        for name in names:
            with open(folder / name, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            arrays.append(batch[b"data"])
            labels.extend(batch[b"labels"])
    else:
        with tarfile.open(path, "r:gz") as archive:
            for name in names:
                member = archive.extractfile(f"cifar-10-batches-py/{name}")
                batch = pickle.load(member, encoding="bytes")
                arrays.append(batch[b"data"])
                labels.extend(batch[b"labels"])
    images = np.concatenate(arrays).reshape(-1, 3, 32, 32).astype(np.float32) / 127.5 - 1.0
    return images, np.asarray(labels, dtype=np.int64)


def check_cifar10_path(path) -> Path:
    """Fail with instructions when the CIFAR-10 python archive is missing."""
    if path is None or not Path(path).exists():
        raise FileNotFoundError(
            f"dataset.path: the CIFAR-10 python archive was not found at {path!r}. "
            f"Download {CIFAR10_URL} (163 MB) and set dataset.path to the .tar.gz "
            "file or to the folder it extracts to (cifar-10-batches-py)."
        )
    return Path(path)


def load_cifar2_split(path, n_train: int, n_heldout: int, seed: int, classes=CIFAR_CLASSES["cifar2"]):
    """CIFAR-2 (by default automobile=1 and horse=7), or any classes of CIFAR-10, class-balanced.

    Training images come from the CIFAR-10 training batches (n_train/len(classes)
    per class, chosen with ``seed``); held-out images from the test batch.
    """
    path = check_cifar10_path(path)
    train_images, train_labels = _read_cifar_batches(path, [f"data_batch_{i}" for i in range(1, 6)])
    test_images, test_labels = _read_cifar_batches(path, ["test_batch"])
    rng = np.random.default_rng(seed)
    picks = []
    for label in classes:
        candidates = np.flatnonzero(train_labels == label)
        picks.append(rng.choice(candidates, n_train // len(classes), replace=False))
    train_index = np.sort(np.concatenate(picks))
    test_pool = np.flatnonzero(np.isin(test_labels, classes))
    heldout_index = np.sort(rng.choice(test_pool, n_heldout, replace=False))
    train = ImageSet(train_images[train_index], train_labels[train_index], train_index)
    heldout = ImageSet(test_images[heldout_index], test_labels[heldout_index], heldout_index)
    return train, heldout


def load_dataset_split(dataset_config: dict, keep_uint8: bool = False) -> tuple[ImageSet, ImageSet]:
    """The training and held-out images of ``dataset.name`` (``LOADERS``);
    ``keep_uint8``: see ``load_local_split`` (the built-in datasets are small and stay float32)."""
    name = dataset_config["name"]
    if name not in LOADERS:
        raise ValueError(f"dataset.name: unknown dataset {name!r} (known: {', '.join(LOADERS)})")
    return LOADERS[name](dataset_config, keep_uint8)


def _digits(dataset: dict, keep_uint8: bool) -> tuple[ImageSet, ImageSet]:
    return load_digits_split(dataset["n_train"], dataset.get("n_heldout", 0), dataset.get("seed", 0), dataset.get("classes"))


def _cifar(dataset: dict, keep_uint8: bool) -> tuple[ImageSet, ImageSet]:
    classes = tuple(dataset.get("classes") or CIFAR_CLASSES[dataset["name"]])
    return load_cifar2_split(dataset.get("path"), dataset["n_train"], dataset.get("n_heldout", 0), dataset.get("seed", 0), classes)


#: The loader of each ``dataset.name`` (the names of ``spec.datasets.DATASET_TYPES``):
#: ``(dataset config, keep_uint8) -> (train, heldout)``.
LOADERS = {"digits": _digits, "cifar2": _cifar, "cifar10": _cifar, "folder": load_local_split, "arrays": load_local_split}
