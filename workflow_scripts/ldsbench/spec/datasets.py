"""What the config check knows of the built-in datasets and of diffusers'
UNet blocks, without importing them.

Snakemake validates the config each time it parses the workflow, which must
not import torch, diffusers or scikit-learn; so these facts are written out
here, and ``tests/spec/test_config.py`` checks them against the libraries:

- digits: scikit-learn's ``load_digits`` (1797 grey 8x8 images), counted per class;
- CIFAR-10: 5000 images of each class in the five training batches and 1000
  in the test batch (``data.load_cifar2_split`` takes training images from
  the former, held-out ones from the latter);
- the block types that diffusers' ``get_down_block`` and ``get_up_block``
  build (they read a ``UNetRes`` prefix as no prefix and raise "X does not
  exist." for any other name).
"""

from __future__ import annotations

from dataclasses import dataclass

from ldsbench.data.image_sets import CIFAR_CLASSES
from ldsbench.data.latents import image_shape_errors
from ldsbench.data.local_images import LEVELS as LOCAL_LEVELS
from ldsbench.data.local_images import DatasetError, describe_arrays, describe_folder


@dataclass(frozen=True)
class DatasetType:
    """What the config check knows of a ``dataset.name``.

    ``levels``: grey levels of the pixels, as ``data`` scales them to
    [-1, 1] (digits: 0..16 -> v / 8 - 1; CIFAR and local images: 0..255 ->
    v / 127.5 - 1); the likelihood measurements need them for the decoder's
    and the dequantisation's bin width. ``image_shape``: (channels, side) of
    a built-in dataset's images; None for a local source, whose images are
    read from ``dataset.path``. ``cifar``: read from the CIFAR-10 archive.
    """

    levels: int
    image_shape: tuple[int, int] | None = None
    cifar: bool = False

    @property
    def local(self) -> bool:
        """Images from the user's own files (``dataset.path``)."""
        return self.image_shape is None


#: Every ``dataset.name``: the schema's enum is generated from it, and
#: ``data.image_sets.LOADERS`` loads each.
DATASET_TYPES = {
    "digits": DatasetType(levels=17, image_shape=(1, 8)),
    "cifar2": DatasetType(levels=256, image_shape=(3, 32), cifar=True),
    "cifar10": DatasetType(levels=256, image_shape=(3, 32), cifar=True),
    "folder": DatasetType(levels=LOCAL_LEVELS),
    "arrays": DatasetType(levels=LOCAL_LEVELS),
}
assert {name for name, entry in DATASET_TYPES.items() if entry.cifar} == set(CIFAR_CLASSES)


def dataset_type(name: str) -> DatasetType:
    """The registry entry of ``dataset.name`` ``name``."""
    if name not in DATASET_TYPES:
        raise ValueError(f"dataset.name: unknown dataset {name!r} (known: {', '.join(DATASET_TYPES)})")
    return DATASET_TYPES[name]


DIGITS_CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
CIFAR_TRAIN_PER_CLASS = 5000
CIFAR_TEST_PER_CLASS = 1000

# In the order of diffusers' dispatch (diffusers.models.unets.unet_2d_blocks).
UNET_DOWN_BLOCK_TYPES = (
    "DownBlock2D",
    "ResnetDownsampleBlock2D",
    "AttnDownBlock2D",
    "CrossAttnDownBlock2D",
    "SimpleCrossAttnDownBlock2D",
    "SkipDownBlock2D",
    "AttnSkipDownBlock2D",
    "DownEncoderBlock2D",
    "AttnDownEncoderBlock2D",
    "KDownBlock2D",
    "KCrossAttnDownBlock2D",
)
UNET_UP_BLOCK_TYPES = (
    "UpBlock2D",
    "ResnetUpsampleBlock2D",
    "CrossAttnUpBlock2D",
    "SimpleCrossAttnUpBlock2D",
    "AttnUpBlock2D",
    "SkipUpBlock2D",
    "AttnSkipUpBlock2D",
    "UpDecoderBlock2D",
    "AttnUpDecoderBlock2D",
    "KUpBlock2D",
    "KCrossAttnUpBlock2D",
)


def block_type_errors(unet: dict) -> list[str]:
    """Entries of ``model.unet.down_block_types`` / ``up_block_types`` that
    diffusers does not know (it would stop the plan with "X does not exist.")."""
    errors = []
    for kind, known in (("down", UNET_DOWN_BLOCK_TYPES), ("up", UNET_UP_BLOCK_TYPES)):
        for index, name in enumerate(unet[f"{kind}_block_types"]):
            if name.removeprefix("UNetRes") not in known:
                errors.append(f"model.unet.{kind}_block_types[{index}]: {name!r} is not a diffusers {kind} block type; valid: {', '.join(known)}")
    return errors


def unet_input_errors(name: str, unet: dict, channels: int, size: int) -> list[str]:
    """A pixel-space UNet (no ``model.vae``) must take the ``name`` dataset's
    ``channels`` x ``size`` x ``size`` images."""
    errors = []
    if unet["sample_size"] != size:
        errors.append(f"model.unet.sample_size: {unet['sample_size']}, but {name} images are {size}x{size}")
    for key in ("in_channels", "out_channels"):
        if unet[key] != channels:
            errors.append(f"model.unet.{key}: {unet[key]}, but {name} images are {channels}-channel")
    return errors


def size_errors(dataset: dict) -> list[str]:
    """More images than a built-in dataset (digits, cifar2, cifar10) holds, or
    a class it does not have, as ``data.load_dataset_split`` would find them."""
    name, n_train, n_heldout = dataset["name"], dataset["n_train"], dataset.get("n_heldout", 0)
    classes = dataset.get("classes")
    unknown = sorted({c for c in classes or () if not 0 <= c < 10})
    if unknown:
        return [f"dataset.classes: {c} is not a class of {name} (0..9)" for c in unknown]
    if name == "digits":
        # Train and held-out images come from one pool: the rows of the classes.
        available = sum(DIGITS_CLASS_COUNTS[c] for c in (range(10) if classes is None else set(classes)))
        if n_train + n_heldout > available:
            of = "digits" if classes is None else f"digits classes {list(classes)}"
            return [f"dataset.n_train + dataset.n_heldout: {n_train} + {n_heldout} = {n_train + n_heldout} exceeds the {available} images of {of}"]
        return []
    # CIFAR: n_train / len(classes) per class from the training batches, the
    # held-out images from the test batch's images of the classes.
    classes = tuple(classes or CIFAR_CLASSES[name])
    errors = []
    if n_train % len(classes):
        errors.append(
            f"dataset.n_train: {n_train} is not a multiple of the {len(classes)} classes; training images are class-balanced "
            f"(n_train / {len(classes)} of each), so the data would hold {n_train // len(classes) * len(classes)} rows"
        )
    per_class = n_train // len(classes)
    if per_class > CIFAR_TRAIN_PER_CLASS:
        errors.append(
            f"dataset.n_train: {n_train} / {len(classes)} classes = {per_class} training images per class; "
            f"the CIFAR-10 training batches hold {CIFAR_TRAIN_PER_CLASS} of each (at most {CIFAR_TRAIN_PER_CLASS * len(classes)})"
        )
    heldout = CIFAR_TEST_PER_CLASS * len(set(classes))
    if n_heldout > heldout:
        errors.append(f"dataset.n_heldout: {n_heldout} exceeds the {heldout} test-batch images of classes {list(classes)} ({CIFAR_TEST_PER_CLASS} per class)")
    return errors


def source_errors(dataset: dict, unet: dict, vae: dict | None = None) -> list[str]:
    """Config errors of a local source, read from its headers: missing or
    malformed, too few images, or images that do not fit the model (the
    UNet's input, or with ``vae`` the VAE's)."""
    try:
        info = describe_folder(dataset["path"]) if dataset["name"] == "folder" else describe_arrays(dataset["path"])
    except DatasetError as error:
        return [str(error)]
    errors = []
    if dataset["name"] == "arrays" and dataset.get("image_size") is not None:
        errors.append("dataset.image_size: only for dataset.name folder; arrays are used at their stored size")
    needed = dataset["n_train"] + dataset.get("n_heldout", 0)
    if needed > info.count:
        errors.append(f"dataset: n_train + n_heldout = {needed} exceeds the {info.count} images under {dataset['path']!r}")
    height, width, channels = info.first_shape
    expected_channels = dataset.get("channels") or channels
    if dataset.get("channels") not in (None, channels):
        errors.append(f"dataset.channels: {dataset['channels']}, but image 0 under {dataset['path']!r} is {channels}-channel")
    size = dataset.get("image_size") or (height if height == width else None)
    if size is None:
        errors.append(f"dataset.image_size: required, image 0 is {width}x{height}, not square (it sets the resize and centre crop)")
    if vae is not None:
        return errors + image_shape_errors(vae, unet, expected_channels, size, f"the images under {dataset['path']!r}")
    if unet["in_channels"] != expected_channels or unet["out_channels"] != expected_channels:
        errors.append(f"model.unet.in_channels and out_channels must be the images' {expected_channels} channels")
    if size is not None and unet["sample_size"] != size:
        errors.append(
            f"model.unet.sample_size: {unet['sample_size']}, but the images are {size}x{size}"
            + ("" if dataset.get("image_size") else " (set dataset.image_size to resize)")
        )
    return errors
