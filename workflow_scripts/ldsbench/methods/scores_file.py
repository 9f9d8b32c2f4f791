"""Scores computed elsewhere (``type: scores_file``): a matrix per measurement
from another library (kronfluence, dattri, traker, ...), read from a file and
turned into the benchmark's orientation, so that it gets the benchmark's LDS,
intervals, ceiling, controls and paired differences.

A file holds one matrix, [Q, N] (``layout: query_by_train``) or [N, Q]
(``train_by_query``), and names the benchmark it scores: the fingerprint of
the training data, queries, architecture and training settings
(``runtime.fingerprints.benchmark_fingerprint``). A file of another benchmark,
of the wrong shape or with non-finite values stops the job with a message
naming the method and the file.

``sign`` says what the numbers mean:

- ``effect_of_including``: the benchmark's orientation already, tau(q, i)
  predicts m(with i) - m(without i) (``attribution.scoring``);
- ``influence_as_reported``: the inner product grad m(q)^T H^-1 grad loss_i
  (or its TRAK kernel analogue) that influence libraries report, whose
  positive values mean that including i lowers m(q); it is multiplied by
  ``SCORE_SIGN`` (-1). The 1/N of the benchmark's formula is a positive
  scale and changes no rank.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ldsbench.attribution.scoring import SCORE_SIGN
from ldsbench.spec.external_files import read_fingerprint_sidecar, score_file_paths, shape_errors

#: The factor applied to a file's scores for each declared ``sign``.
SIGN_FACTORS = {"effect_of_including": 1.0, "influence_as_reported": SCORE_SIGN}


class ScoreFileError(ValueError):
    """A score file that cannot be evaluated on this benchmark."""


def read_score_matrix(path) -> tuple[np.ndarray, str]:
    """(matrix as stored, benchmark fingerprint) of a ``.npz``, ``.pt`` or ``.npy`` score file."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return np.asarray(archive["scores"]), str(archive["benchmark"])
    if path.suffix == ".pt":
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or not {"scores", "benchmark"} <= set(payload):
            raise ScoreFileError(f"{path} must hold a dict with keys 'scores' and 'benchmark'")
        return torch.as_tensor(payload["scores"]).numpy(), str(payload["benchmark"])
    return np.load(path, allow_pickle=False), read_fingerprint_sidecar(path)


def oriented_scores(path, *, layout: str, sign: str, n_queries: int, n_train: int, benchmark: str, method: str = "") -> np.ndarray:
    """The file's scores as [Q, N] float32 in the benchmark's orientation,
    after checking that they score ``benchmark``, have the shape ``layout``
    says and are finite."""
    matrix, named = read_score_matrix(path)
    label = f"method {method}: " if method else ""
    if named != benchmark:
        raise ScoreFileError(
            f"{label}{path} scores benchmark {named}, not this one ({benchmark}): it was computed for other data, "
            "queries or models (docs/external-methods.md, 'Which benchmark a file scores')"
        )
    problems = shape_errors(path, matrix.shape, layout, n_queries, n_train)
    if problems:
        raise ScoreFileError(label + problems[0])
    if not np.isfinite(matrix).all():
        raise ScoreFileError(f"{label}{path} holds {int((~np.isfinite(matrix)).sum())} NaN or infinite values")
    matrix = matrix if layout == "query_by_train" else matrix.T
    return (SIGN_FACTORS[sign] * matrix.astype(np.float64)).astype(np.float32)


def score_scores_file(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: scores_file``: each measurement's file, oriented."""
    method = job.method
    paths = score_file_paths(method, list(job.measurements))
    scores = {
        name: oriented_scores(
            paths[name],
            layout=method["layout"],
            sign=method["sign"],
            n_queries=len(job.queries),
            n_train=len(job.train),
            benchmark=job.benchmark,
            method=job.name,
        )[None]
        for name in job.measurements
    }
    return [float("nan")], scores
