"""Similarity baselines: how alike each query is to each training example.

Two kinds, both giving a matrix s(q, i) of shape [Q, N], larger meaning more
similar:

- **Pixel similarity** (``pixel_similarity``): the images flattened to
  vectors of D = C * H * W values in the data range [-1, 1], compared by
  cosine similarity, dot product, or negative Euclidean distance.
- **Feature similarity** (``feature_similarity``): the same comparison
  (cosine by default) of the features of a pretrained image encoder (a CLIP
  image tower, Inception, ...) that the user supplies as a local file.

Orientation. A similarity is **not** a score in the package's sense. The
score tau(q, i) predicts m(with i) - m(without i), the change of the
measurement m(q) caused by including training example i (README.md,
"Definitions"), and its sign matters: LDS is a Spearman correlation, so
negating every score negates the LDS. A similarity only says that i and q
look alike; which way that moves m(q) depends on the measurement. The
working hypothesis of these baselines is that training on images like the
query makes the model better on the query, so:

- lower-is-better measurement (``loss``, ``simplified_elbo``, ...):
  tau = -s (similar examples lower the query's loss);
- higher-is-better measurement (``elbo``, ``log_likelihood``): tau = +s;
- ``not_a_quality_measure`` (``squared_norm``): "better on the query" says
  nothing about the direction of m, so there is no sign to choose; the
  conversion refuses unless a sign is given explicitly (the method's
  ``sign``, which applies to such measurements only).

``similarity_to_scores`` is the one place this rule lives. The similarity
itself never depends on the measurement.

Feature models. Nothing is ever downloaded. The encoder is a file produced
on a machine that has its weights, either TorchScript::

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
below). ``check_feature_model_path`` checks a path cheaply (file exists and
is such an archive) without loading it.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..measurement_types import HIGHER_IS_BETTER, LOWER_IS_BETTER, NOT_A_QUALITY_MEASURE, orientation_of

# torch is imported inside the functions that use it: the workflow calls
# ``check_feature_model_path`` while validating its config, without torch.


METRICS = ("cosine", "dot", "l2")

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

# Largest block of float64 values one similarity step holds per operand,
# whatever ``batch_size``: 2**24 values are 128 MiB.
MAX_BLOCK_VALUES = 2**24


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


class FeatureModelError(ValueError):
    """The feature model file is missing or not a loadable model archive."""


_HOW_TO = (
    "Nothing is downloaded: produce the file on a machine that has the model's weights, "
    "with torch.jit.save(torch.jit.trace(encoder.eval(), example), path) "
    "(or torch.export.save(torch.export.export(encoder.eval(), (example,), dynamic_shapes=...), path)), "
    "where example is a float tensor [B, 3, S, S] and encoder's forward returns the image features [B, F], "
    "then copy it here and give its local path."
)


# ----------------------------------------------------------------------------
# Orientation


def similarity_sign(orientation: str, sign: float | None = None) -> float:
    """+1 or -1: the sign that turns a similarity into a score tau for a
    measurement of this orientation (see the module docstring).

    ``sign`` (+1 or -1) is the sign for ``not_a_quality_measure``, where
    the rule has no answer, and is required there; it never overrides the
    rule for a quality measure (a method scored on several measurements
    keeps the documented sign on each).
    """
    if sign is not None and sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    if orientation == LOWER_IS_BETTER:
        return -1.0
    if orientation == HIGHER_IS_BETTER:
        return 1.0
    if orientation == NOT_A_QUALITY_MEASURE:
        if sign is not None:
            return float(sign)
        raise ValueError(
            f"orientation {orientation!r}: similarity predicts that training on images like the query makes the model "
            "better on it, which says nothing about the direction of a measurement that is not a quality measure; "
            "give the sign explicitly (+1: similar examples raise it, -1: they lower it) or do not score this measurement"
        )
    raise ValueError(f"unknown orientation {orientation!r}; expected {LOWER_IS_BETTER!r}, {HIGHER_IS_BETTER!r} or {NOT_A_QUALITY_MEASURE!r}")


def similarity_to_scores(similarity, orientation: str, sign: float | None = None) -> np.ndarray:
    """Scores tau [Q, N] float64 from a similarity [Q, N] (larger = more similar).

    tau = -similarity for a lower-is-better measurement, +similarity for a
    higher-is-better one; ``not_a_quality_measure`` needs ``sign``.
    """
    return similarity_sign(orientation, sign) * np.asarray(similarity, dtype=np.float64)


# ----------------------------------------------------------------------------
# Similarity of vectors and of raw pixels


def _as_matrix(values, name: str) -> torch.Tensor:
    """[B, ...] array or tensor -> [B, D] tensor (a view where possible)."""
    import torch

    tensor = torch.as_tensor(values)
    if tensor.dim() < 2:
        raise ValueError(f"{name} must have shape [B, ...] with at least 2 dimensions, got {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {tensor.dtype}")
    return tensor.reshape(tensor.shape[0], -1)


def _block_rows(batch_size: int, dim: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return max(1, min(batch_size, MAX_BLOCK_VALUES // max(dim, 1)))


def _unit_rows(block: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm; a zero row stays zero (cosine 0 with everything)."""
    import torch

    norms = block.norm(dim=1, keepdim=True)
    return block / torch.where(norms > 0, norms, torch.ones_like(norms))


def _prepare(block: torch.Tensor, metric: str):
    """A block of rows in float64 and what the metric needs of it."""
    if metric == "cosine":
        return _unit_rows(block), None
    if metric == "l2":
        return block, (block * block).sum(dim=1)
    return block, None


def _pairwise(query, train, metric: str) -> torch.Tensor:
    (q, q_sq), (t, t_sq) = query, train
    products = q @ t.T
    if metric == "cosine":
        return products.clamp(-1.0, 1.0)
    if metric == "dot":
        return products
    # |q - t|^2 = |q|^2 + |t|^2 - 2 q.t in float64: absolute error about
    # 1e-16 |q|^2, so identical vectors are at distance ~1e-8 |q|, not 0.
    return -(q_sq[:, None] + t_sq[None, :] - 2.0 * products).clamp_min(0.0).sqrt()


def vector_similarity(queries, train, metric: str = "cosine", *, batch_size: int = 1024, device=None) -> np.ndarray:
    """Similarity of every query vector to every training vector: [Q, N] float64.

    queries: [Q, ...] and train: [N, ...] (arrays or tensors, flattened to
    [Q, D] and [N, D]). metric: ``cosine`` (q.t / (|q| |t|), 0 if either is
    the zero vector), ``dot`` (q.t) or ``l2`` (-|q - t|, so that larger is
    more similar). Computed in float64 on ``device`` (default: the device of
    ``train``) in blocks of at most ``batch_size`` rows of each side, fewer
    for long vectors (at most ``MAX_BLOCK_VALUES`` values per block); the
    result does not depend on the blocks beyond float64 rounding.
    """
    import torch

    if metric not in METRICS:
        raise ValueError(f"unknown similarity metric {metric!r}; expected one of {METRICS}")
    q_all, t_all = _as_matrix(queries, "queries"), _as_matrix(train, "train")
    if q_all.shape[1] != t_all.shape[1]:
        raise ValueError(f"queries have {q_all.shape[1]} values per example but training examples have {t_all.shape[1]}")
    device = torch.device(device) if device is not None else t_all.device
    rows = _block_rows(batch_size, q_all.shape[1])
    result = np.empty((q_all.shape[0], t_all.shape[0]), dtype=np.float64)
    with torch.no_grad():
        for q_start in range(0, q_all.shape[0], rows):
            q_block = _prepare(q_all[q_start : q_start + rows].to(device=device, dtype=torch.float64), metric)
            if not torch.isfinite(q_block[0]).all():
                raise ValueError(f"queries {q_start}..{q_start + len(q_block[0]) - 1} contain NaN or infinite values")
            for t_start in range(0, t_all.shape[0], rows):
                t_block = _prepare(t_all[t_start : t_start + rows].to(device=device, dtype=torch.float64), metric)
                if not torch.isfinite(t_block[0]).all():
                    raise ValueError(f"training examples {t_start}..{t_start + len(t_block[0]) - 1} contain NaN or infinite values")
                block = _pairwise(q_block, t_block, metric)
                result[q_start : q_start + block.shape[0], t_start : t_start + block.shape[1]] = block.cpu().numpy()
    return result


def pixel_similarity(queries, train, metric: str = "cosine", *, batch_size: int = 1024, device=None) -> np.ndarray:
    """Raw pixel similarity: [Q, N] float64.

    queries: [Q, C, H, W], train: [N, C, H, W] in the data range [-1, 1];
    each image is one vector of its C * H * W values, compared as in
    ``vector_similarity`` (``cosine``, ``dot`` or ``l2`` = -Euclidean
    distance).
    """
    import torch

    q_shape, t_shape = tuple(torch.as_tensor(queries).shape), tuple(torch.as_tensor(train).shape)
    if len(q_shape) != 4 or len(t_shape) != 4 or q_shape[1:] != t_shape[1:]:
        raise ValueError(f"queries [Q, C, H, W] and train [N, C, H, W] must have the same C, H, W; got {q_shape} and {t_shape}")
    return vector_similarity(queries, train, metric, batch_size=batch_size, device=device)


# ----------------------------------------------------------------------------
# Feature models


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


def _archive_format(path: Path) -> str:
    """``torchscript`` or ``export``, from the zip archive's member names."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise FeatureModelError(
            f"feature model {path}: not a TorchScript file (not a readable zip archive: {error}; a truncated copy or a file in another format). {_HOW_TO}"
        ) from None
    members = {name.split("/", 1)[-1] for name in names}
    if "constants.pkl" in members and any(m.startswith("code/") for m in members):
        return "torchscript"
    if "archive_format" in members:
        return "export"
    detail = (
        "it looks like a torch.save checkpoint (a state dict or a pickled module), which needs the model's Python code to load"
        if "data.pkl" in members
        else "a zip archive without TorchScript's code/ and constants.pkl"
    )
    raise FeatureModelError(f"feature model {path}: not a TorchScript file ({detail}). {_HOW_TO}")


def check_feature_model_path(path) -> Path:
    """Cheap check, without loading: ``path`` is a TorchScript (or
    ``torch.export``) archive. Returns the resolved path; raises
    ``FeatureModelError`` naming the path otherwise."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise FeatureModelError(f"feature model {resolved}: no such file. {_HOW_TO}")
    if not resolved.is_file():
        raise FeatureModelError(f"feature model {resolved}: not a file. {_HOW_TO}")
    _archive_format(resolved)
    return resolved


def load_feature_model(path, device="cpu"):
    """The feature model at ``path`` on ``device``, in eval mode.

    Raises ``FeatureModelError`` naming the path if it is missing or cannot
    be loaded.
    """
    import torch

    resolved = check_feature_model_path(path)
    kind = _archive_format(resolved)
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
        raise FeatureModelError(f"feature model {resolved}: could not be loaded as a {kind} module ({error}). {_HOW_TO}") from error


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


def feature_similarity(
    queries,
    train,
    model,
    preprocessing: Preprocessing = PRESETS["clip"],
    *,
    metric: str = "cosine",
    batch_size: int = 64,
    similarity_batch_size: int = 1024,
    device="cpu",
) -> np.ndarray:
    """Similarity of the features of every query to those of every training example: [Q, N] float64.

    queries: [Q, C, H, W], train: [N, C, H, W] in [-1, 1]. ``model`` is a
    path to a TorchScript (or ``torch.export``) file, loaded on ``device``,
    or a model loaded already. Features: ``image_features`` with
    ``batch_size`` images per forward pass; comparison:
    ``vector_similarity`` (cosine by default) on the CPU.
    """
    if isinstance(model, (str, Path)):
        model = load_feature_model(model, device)
    query_features = image_features(model, queries, preprocessing, batch_size=batch_size, device=device)
    train_features = image_features(model, train, preprocessing, batch_size=batch_size, device=device)
    return vector_similarity(query_features, train_features, metric, batch_size=similarity_batch_size)


def signed_per_measurement(job, similarity) -> dict[str, np.ndarray]:
    """``{measurement name: [1, Q, N]}``: the similarity made a score by each
    measurement's orientation (the module docstring)."""
    return {
        name: similarity_to_scores(similarity, orientation_of(settings), job.method["sign"])[None].astype(np.float32)
        for name, settings in job.measurements.items()
    }


def score_pixel_similarity(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: pixel_similarity`` (``methods``)."""
    return [float("nan")], signed_per_measurement(job, pixel_similarity(job.queries, job.train, job.method["metric"]))


def score_feature_similarity(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: feature_similarity`` (``methods``)."""
    method = job.method
    preprocessing = resolve_preprocessing(method["preset"], method["input_size"], method["mean"], method["std"])
    similarity = feature_similarity(job.queries, job.train, method["model_path"], preprocessing, metric=method["metric"], device=job.device)
    return [float("nan")], signed_per_measurement(job, similarity)
