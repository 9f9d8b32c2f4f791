"""Features of a local image encoder, for the feature-similarity baseline.

Nothing is ever downloaded. The encoder is a file produced on a machine that
has its weights, either TorchScript::

    torch.jit.save(torch.jit.trace(encoder.eval(), example), "clip_vit_b32.pt")

or, since TorchScript is deprecated in recent PyTorch, a ``torch.export``
archive (``torch.export.save(torch.export.export(encoder.eval(), (example,),
dynamic_shapes=...), "clip_vit_b32.pt2")`` with a dynamic batch dimension).
``example`` is a float tensor [B, 3, S, S]. The module maps a batch of
preprocessed images [B, 3, S, S] to features [B, F] (or any [B, ...], which
is flattened); for a CLIP model wrap the image tower so that forward returns
the image embedding tensor (not a tuple or a dict). Preprocessing is done
here, not by the model: grey images are repeated to 3 channels, the data
range [-1, 1] is mapped to [0, 1], images are resized bilinearly (with
antialiasing when shrinking) to S x S, and normalised per channel with
``mean`` and ``std`` (``Preprocessing``; presets ``clip`` and ``inception``
below). ``spec.feature_models.check_feature_model_path`` checks a path
cheaply (file exists and is such an archive) without loading it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ldsbench.spec.feature_models import HOW_TO_EXPORT, FeatureModelError, archive_format, check_feature_model_path
from ldsbench.spec.schema import defs_enum

# OpenAI CLIP's image normalisation (all its image towers; 224 x 224 input
# except ViT-L/14@336px, which takes 336).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


CLIP_INPUT_SIZE = 224


# torchvision's Inception v3 ImageNet weights: 299 x 299, ImageNet
# normalisation (the model itself converts to the [-1, 1] range of the
# original weights, ``transform_input=True``). pytorch-fid's FID Inception
# instead takes [0, 1] input: mean (0, 0, 0), std (1, 1, 1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


INCEPTION_INPUT_SIZE = 299


@dataclass(frozen=True)
class Preprocessing:
    """How images in [-1, 1] become the feature model's input [B, 3, S, S]."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self):
        if int(self.input_size) != self.input_size or self.input_size < 1:
            raise ValueError(f"input_size must be a positive integer, got {self.input_size!r}")
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"{name} must have 3 values (R, G, B), got {len(value)}")
            object.__setattr__(self, name, value)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        object.__setattr__(self, "input_size", int(self.input_size))


PRESETS = {
    "clip": Preprocessing(CLIP_INPUT_SIZE, CLIP_MEAN, CLIP_STD),
    "inception": Preprocessing(INCEPTION_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD),
}
# The config's ``preset`` names them (the schema's ``feature_similarity_method`` block).
assert tuple(PRESETS) == defs_enum("feature_similarity_method", "preset")


def resolve_preprocessing(preset: str = "clip", input_size=None, mean=None, std=None) -> Preprocessing:
    """A preset (``clip`` or ``inception``) with any of its values replaced (``None`` keeps the preset's)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preprocessing preset {preset!r}; expected one of {tuple(PRESETS)}")
    base = PRESETS[preset]
    return Preprocessing(
        input_size=base.input_size if input_size is None else input_size,
        mean=base.mean if mean is None else tuple(mean),
        std=base.std if std is None else tuple(std),
    )


def preprocess_images(images, preprocessing: Preprocessing) -> torch.Tensor:
    """Images [B, C, H, W] in [-1, 1] (C = 1 or 3) -> model input [B, 3, S, S] float32.

    Grey images are repeated to 3 channels; values are mapped to [0, 1] by
    (x + 1) / 2 (not clipped); the images are resized to S x S (bilinear,
    ``align_corners=False``, antialiased when shrinking; non-square images
    are stretched); then each channel c becomes (x - mean[c]) / std[c].
    """
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(images)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape [B, 1 or 3, H, W], got {tuple(x.shape)}")
    x = (x.to(torch.float32) + 1.0) / 2.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    size = preprocessing.input_size
    if tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(preprocessing.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def load_feature_model(path, device="cpu"):
    """The feature model at ``path`` on ``device``, in eval mode.

    Raises ``FeatureModelError`` naming the path if it is missing or cannot
    be loaded.
    """
    import torch

    resolved = check_feature_model_path(path)
    kind = archive_format(resolved)
    device = torch.device(device)
    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but still the most widely
            # available export format; the warning is not actionable here.
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            if kind == "torchscript":
                return torch.jit.load(str(resolved), map_location=device).eval()
            from torch.export.passes import move_to_device_pass

            # An exported program is fixed in the mode it was exported in.
            return move_to_device_pass(torch.export.load(str(resolved)), device).module()
    except Exception as error:  # noqa: BLE001 - any load failure is reported with the path
        raise FeatureModelError(f"feature model {resolved}: could not be loaded as a {kind} module ({error}). {HOW_TO_EXPORT}") from error


def _input_dtype(model):
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


def image_features(model, images, preprocessing: Preprocessing, *, batch_size: int = 64, device="cpu") -> torch.Tensor:
    """Features [B, F] on the CPU (float32, or the model's dtype if wider) of images [B, C, H, W] in [-1, 1].

    ``model`` is a loaded feature model (``load_feature_model``) on
    ``device``; images are preprocessed (``preprocess_images``) and passed
    through it ``batch_size`` at a time; each output [b, ...] is flattened
    to [b, F].
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    images = torch.as_tensor(images)
    dtype = _input_dtype(model)
    blocks = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size]
            x = preprocess_images(batch.to(device), preprocessing).to(dtype)
            out = model(x)
            if not isinstance(out, torch.Tensor):
                raise TypeError(
                    f"the feature model returned {type(out).__name__}, not a tensor: export a module whose forward "
                    "returns the image features [B, F] (for CLIP, the image embedding)"
                )
            if out.dim() == 0 or out.shape[0] != batch.shape[0]:
                raise ValueError(f"the feature model mapped a batch of {batch.shape[0]} images to shape {tuple(out.shape)}, not [{batch.shape[0]}, ...]")
            out = out.reshape(out.shape[0], -1)
            if not torch.isfinite(out).all():
                raise ValueError(f"the feature model returned NaN or infinite features for images {start}..{start + batch.shape[0] - 1}")
            blocks.append(out.to("cpu", torch.promote_types(out.dtype, torch.float32)))
    if not blocks:
        raise ValueError("no images to compute features of")
    return torch.cat(blocks)
