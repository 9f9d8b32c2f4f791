"""Datasets from local paths: a folder of image files, or an ``.npz`` of arrays.

Nothing is downloaded. Both kinds are 8-bit images (256 grey levels per
channel), scaled to [-1, 1] as v / 127.5 - 1.

``dataset.name: folder``. Image files (``.png``, ``.jpg``, ``.jpeg``,
``.webp``, ``.bmp``; read with Pillow) directly under ``path``, or one
level down in one subfolder per class. Rows are the files in sorted order
of their paths relative to ``path``; with class subfolders, the label of a
file is the position of its subfolder among the sorted subfolder names
(``class_names``). An image must have ``channels`` channels (1: Pillow mode
L, 3: RGB; a palette or alpha image is refused, not converted). With
``image_size: S`` each image is resized so that its shorter side is S
(Pillow's bicubic filter, which antialiases when downscaling; the longer
side rounded to the nearest pixel), then centre-cropped to S x S (the crop
starts at floor((side - S) / 2)). Without it every image must already have
the model's size.

``dataset.name: arrays``. An ``.npz`` holding ``images`` uint8 [N, H, W, C]
or [N, H, W] (one channel) and optionally ``labels`` integers [N]; row i of
the file is source row i.

``describe_folder`` and ``describe_arrays`` look at a source without
decoding its pixels (config validation runs them before any job);
``load_folder`` and ``load_arrays`` read everything and check every image,
naming the file or row of the first one that is wrong.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CHANNEL_MODES = {1: "L", 3: "RGB"}
LEVELS = 256


class DatasetError(ValueError):
    """A local dataset that is missing or malformed; the message says what
    was expected and what was found."""


@dataclass(frozen=True)
class SourceInfo:
    """What config validation needs of a local source: its image count, the
    shape of its first image ([H, W, C]) and its class names (folders only)."""

    count: int
    first_shape: tuple[int, int, int]
    class_names: tuple[str, ...] = ()


def image_files(path) -> tuple[list[Path], list[str]]:
    """(files relative to ``path`` in sorted order, sorted class subfolder names)."""
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"dataset.path: {str(root)!r} is not a folder (dataset.name folder expects a folder of image files)")
    top = sorted(p.relative_to(root) for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    nested = sorted(p.relative_to(root) for name in classes for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if top and nested:
        raise DatasetError(
            f"dataset.path: {str(root)!r} has {len(top)} images at its top level and {len(nested)} in subfolders; "
            "put every image in a class subfolder, or all at the top level"
        )
    if not top and not nested:
        raise DatasetError(f"dataset.path: 0 images under {str(root)!r} (expected {', '.join(IMAGE_SUFFIXES)} files, or one subfolder of them per class)")
    if nested:
        classes = [name for name in classes if any(f.parts[0] == name for f in nested)]
        return nested, classes
    return top, []


def _image_shape(image, where: str, channels: int | None) -> tuple[int, int, int]:
    mode_channels = {mode: c for c, mode in CHANNEL_MODES.items()}.get(image.mode)
    if mode_channels is None:
        raise DatasetError(f"{where} has Pillow mode {image.mode!r}; expected L (1 channel) or RGB (3 channels)")
    if channels is not None and mode_channels != channels:
        raise DatasetError(f"{where} is {mode_channels}-channel, dataset.channels is {channels}")
    return image.height, image.width, mode_channels


def _open(path: Path, where: str):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"{where} cannot be read as an image ({error})") from None


def describe_folder(path) -> SourceInfo:
    """Count the images and read the first one's header (no pixels decoded)."""
    files, classes = image_files(path)
    where = f"image 0 ({files[0]}) under {str(path)!r}"
    with _open(Path(path) / files[0], where) as image:
        shape = _image_shape(image, where, None)
    return SourceInfo(len(files), shape, tuple(classes))


def _resized(image, size: int):
    """Shorter side to ``size`` (bicubic), then the centred ``size`` x ``size`` crop."""
    from PIL import Image

    scale = size / min(image.width, image.height)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    if (width, height) != image.size:
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_folder(path, channels: int | None, image_size: int | None) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(images uint8 [N, H, W, C], labels int64 [N], relative paths [N], class names)
    of every image under ``path`` in sorted order, each checked (``channels``
    None: those of image 0)."""
    root = Path(path)
    files, classes = image_files(root)
    channels = channels or describe_folder(root).first_shape[2]
    label_of = {name: k for k, name in enumerate(classes)}
    images, expected = [], None
    for row, relative in enumerate(files):
        where = f"image {row} ({relative}) under {str(root)!r}"
        with _open(root / relative, where) as image:
            _image_shape(image, where, channels)
            try:
                image.load()
            except OSError as error:
                raise DatasetError(f"{where} cannot be decoded ({error})") from None
            if image_size is not None:
                image = _resized(image, image_size)
            pixels = np.asarray(image, dtype=np.uint8).reshape(image.height, image.width, channels)
        if expected is None:
            expected = pixels.shape
        elif pixels.shape != expected:
            raise DatasetError(
                f"{where} is {pixels.shape[1]}x{pixels.shape[0]}, image 0 is {expected[1]}x{expected[0]}; "
                "set dataset.image_size to resize and centre-crop every image to one size"
            )
        images.append(pixels)
    labels = np.asarray([label_of[f.parts[0]] for f in files] if classes else np.zeros(len(files)), dtype=np.int64)
    return np.stack(images), labels, [f.as_posix() for f in files], classes


def _npz_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype of array ``key`` of an ``.npz`` from its header only, or None if absent."""
    with zipfile.ZipFile(path) as archive:
        name = f"{key}.npy"
        if name not in archive.namelist():
            return None
        with archive.open(name) as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
    return tuple(shape), np.dtype(dtype)


def describe_arrays(path) -> SourceInfo:
    """Check an arrays ``.npz``'s keys, dtypes and shapes from its headers."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset.path: {str(path)!r} does not exist (dataset.name arrays expects an .npz with images uint8 [N, H, W, C])")
    try:
        images = _npz_header(path, "images")
        labels = _npz_header(path, "labels")
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise DatasetError(f"dataset.path: {str(path)!r} is not a readable .npz ({error})") from None
    if images is None:
        raise DatasetError(f"dataset.path: {str(path)!r} has no array 'images' (expected images uint8 [N, H, W, C] or [N, H, W], optional labels [N])")
    shape, dtype = images
    if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in CHANNEL_MODES):
        raise DatasetError(f"dataset.path: images in {str(path)!r} are {dtype} {list(shape)}; expected uint8 [N, H, W, C] with C 1 or 3, or [N, H, W]")
    if labels is not None and (labels[0] != (shape[0],) or labels[1].kind not in "iu"):
        raise DatasetError(f"dataset.path: labels in {str(path)!r} are {labels[1]} {list(labels[0])}; expected integers [{shape[0]}]")
    channels = shape[3] if len(shape) == 4 else 1
    return SourceInfo(shape[0], (shape[1], shape[2], channels))


def load_arrays(path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W, C], labels int64 [N]; zeros without them)."""
    describe_arrays(path)
    with np.load(path) as data:
        images = data["images"]
        labels = data["labels"].astype(np.int64) if "labels" in data.files else np.zeros(len(images), dtype=np.int64)
    return (images[..., None] if images.ndim == 3 else images), labels
