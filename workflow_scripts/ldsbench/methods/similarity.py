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
measurement m(q) caused by including training example i
(docs/definitions.md), and its sign matters: LDS is a Spearman correlation, so
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

Feature models: a local image encoder, loaded and applied by
``attribution.image_features``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ldsbench.attribution.image_features import PRESETS, Preprocessing, image_features, load_feature_model, resolve_preprocessing
from ldsbench.spec.measurement_types import HIGHER_IS_BETTER, LOWER_IS_BETTER, NOT_A_QUALITY_MEASURE, orientation_of
from ldsbench.spec.schema import defs_enum

#: The comparisons (the schema's ``$defs/similarity_metric``).
METRICS = defs_enum("similarity_metric")


# Largest block of float64 values one similarity step holds per operand,
# whatever ``batch_size``: 2**24 values are 128 MiB.
MAX_BLOCK_VALUES = 2**24


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
