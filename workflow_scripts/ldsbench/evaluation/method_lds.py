"""LDS of one method on one measurement: its inputs checked, the group
predictions of every value it was scored at (the comparison of methods
resamples subsets and queries from them), its per-query LDS and the per-query
LDS of every value (the sweep).

Shapes as in :mod:`ldsbench.evaluation.lds`; a method scored at L values
(its untuned default first, then its grid) has ``[L]`` values, L ``[Q, N]``
score matrices and ``[L, M, Q]`` group predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ldsbench.data.subsets import subsets_from_frame
from ldsbench.evaluation.lds import group_predictions, spearman_per_query
from ldsbench.runtime.io import read_parquet_metadata
from ldsbench.runtime.provenance import SHARED_KEYS, check_compatible, subsets_sha256, verify_checksums

__all__ = ["MethodLDS", "check_score_files", "subset_mask", "check_scores", "method_lds", "sweep_lds"]


@dataclass(frozen=True)
class MethodLDS:
    """What :func:`method_lds` gives for one method on one measurement.

    Attributes:
        values: ``[L]`` float64, the default first (NaN for a method without a
            hyperparameter).
        predictions: ``[L, M, Q]`` float64 group predictions of every value.
        per_query: columns method, measurement, query, lds: the untuned
            default over all subsets (``lds/{method}/{measurement}.parquet``).
        sweep: columns method, measurement, hyperparameter, value, query, lds:
            every value's per-query LDS (``lds/{method}/{measurement}.sweep.parquet``).
    """

    values: np.ndarray
    predictions: np.ndarray
    per_query: pd.DataFrame
    sweep: pd.DataFrame


def check_score_files(scores_path, sweep_path, manifest_path, truth_path, subsets_frame: pd.DataFrame, subsets_path) -> None:
    """Refuse corrupted score files and artifacts of another benchmark before
    computing anything: the score files must match their manifest's
    checksums, share the ground truth's provenance, and the ground truth must
    have been measured on the subsets of ``subsets_frame``."""
    score_provenance = verify_checksums(manifest_path, {"scores": scores_path, "sweep": sweep_path})
    truth_provenance = read_parquet_metadata(truth_path)
    check_compatible(score_provenance, truth_provenance, scores_path, truth_path, required=SHARED_KEYS)
    check_compatible({"subsets_sha256": subsets_sha256(subsets_frame)}, truth_provenance, subsets_path, truth_path, required=["subsets_sha256"])


def subset_mask(subsets_frame: pd.DataFrame, n_train: int, n_subsets: int, subsets_name) -> np.ndarray:
    """``[M, N]`` boolean membership from the subsets table, checked to hold
    the configured number of subsets (``benchmark.subsets``)."""
    mask = subsets_from_frame(subsets_frame, n_train)
    if mask.shape[0] != n_subsets:
        raise ValueError(f"{subsets_name} holds {mask.shape[0]} subsets but benchmark.subsets is {n_subsets}")
    return mask


def check_scores(scores: np.ndarray, n_queries: int, name, n_train: int | None = None, finite: bool = True) -> None:
    """Raise, naming ``name`` (a method or a file), unless ``scores`` is a
    ``[Q, N]`` matrix of the ground truth's Q queries (and, given
    ``n_train``, of N = ``n_train`` training examples) that holds no NaN or
    infinity (unless not ``finite``)."""
    shape = np.shape(scores)
    if len(shape) != 2:
        raise ValueError(f"{name}: scores must be a [queries, training examples] matrix, got shape {shape}")
    if shape[0] != n_queries:
        raise ValueError(f"{name} has {shape[0]} queries but the ground truth has {n_queries}; they come from different query sets")
    if n_train is not None and shape[1] != n_train:
        raise ValueError(f"{name} has {shape[1]} training examples but the subsets are drawn from {n_train}")
    if finite and not np.isfinite(scores).all():
        rows = np.flatnonzero(~np.isfinite(scores).all(axis=1))
        raise ValueError(f"{name} holds non-finite scores (queries {rows[:10].tolist()})")


def method_lds(method: str, measurement: str, hyperparameter, values, scores, mask: np.ndarray, truth: np.ndarray) -> MethodLDS:
    """Group predictions and LDS of one method at every value it was scored at.

    Args:
        method, measurement: the names in the tables.
        hyperparameter: the swept value's name (``damping`` or ``lambda``), or
            None for a method without one.
        values: ``[L]`` the values, the untuned default first.
        scores: L ``[Q, N]`` score matrices, one per value in that order.
        mask: ``[M, N]`` boolean subset membership.
        truth: ``[M, Q]`` seed-averaged ground truth.

    Returns:
        A :class:`MethodLDS`.
    """
    predictions = np.stack([group_predictions(value_scores, mask) for value_scores in scores])
    return sweep_lds(method, measurement, hyperparameter, values, predictions, truth)


def sweep_lds(method: str, measurement: str, hyperparameter, values, predictions: np.ndarray, truth: np.ndarray) -> MethodLDS:
    """LDS of one method at every value from its ``[L, M, Q]`` group
    predictions (:func:`method_lds` without the scores)."""
    values = np.asarray(values, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64)
    if predictions.ndim != 3 or predictions.shape[0] != values.size:
        raise ValueError(f"{method} on {measurement}: {values.size} values need [L, M, Q] = [{values.size}, M, Q] group predictions, got {predictions.shape}")
    queries = np.arange(truth.shape[1])
    per_query = pd.DataFrame({"method": method, "measurement": measurement, "query": queries, "lds": spearman_per_query(predictions[0], truth)})
    frames = [
        pd.DataFrame(
            {
                "method": method,
                "measurement": measurement,
                "hyperparameter": hyperparameter,
                "value": float(value),
                "query": queries,
                "lds": spearman_per_query(value_predictions, truth),
            }
        )
        for value, value_predictions in zip(values, predictions, strict=True)
    ]
    return MethodLDS(values=values, predictions=predictions, per_query=per_query, sweep=pd.concat(frames, ignore_index=True))
