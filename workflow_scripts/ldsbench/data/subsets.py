"""Random training subsets for the Linear Datamodeling Score.

Each LDS subset S_j holds exactly ``round(fraction * n_train)`` of the N
training indices. Subsets are stored as a boolean mask of shape ``[M, N]``
(row j = subset j, column i = training index i) and, on disk, as a long
table with one row per (subset, train_index) member.

Rounding uses Python's built-in ``round`` (round half to even), so the subset
size is ``round(fraction * n_train)`` literally; :func:`subset_size` is the
single place where that number is computed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "subset_size",
    "stratified_quotas",
    "sample_subsets",
    "subsets_to_frame",
    "subsets_from_frame",
]


def subset_size(n_train: int, fraction: float) -> int:
    """Number of members per subset: ``round(fraction * n_train)``."""
    return int(round(fraction * n_train))


def stratified_quotas(labels: np.ndarray, fraction: float) -> dict:
    """Per-class member counts for a stratified subset.

    Each class c of size n_c starts at ``round(fraction * n_c)``. The per-class
    roundings need not add up to ``round(fraction * N)``, so the difference
    ``d`` is settled by a largest-remainder rule that is deterministic:

    * ``d > 0``: add one member to each of the ``d`` classes whose exact share
      ``fraction * n_c`` exceeds its rounded quota the most (ties: smaller class
      label first), skipping classes that are already taken whole;
    * ``d < 0``: remove one member from each of the ``|d|`` classes whose
      rounded quota exceeds its exact share the most (ties: smaller class label
      first), skipping classes whose quota is already 0.

    Args:
        labels: class label per training example, shape ``[N]``.
        fraction: subset fraction in (0, 1).

    Returns:
        ``{label: quota}`` in sorted label order; quotas sum to
        ``round(fraction * N)``.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    exact = fraction * counts.astype(np.float64)
    quotas = np.array([int(round(x)) for x in exact], dtype=np.int64)
    target = subset_size(labels.size, fraction)
    # Positive remainder: the class was rounded down and "deserves" one more.
    remainder = exact - quotas

    diff = target - int(quotas.sum())
    # One pass over the classes settles |diff|, since every per-class rounding
    # error is at most 1/2; the loop guards the bookkeeping anyway.
    while diff != 0:
        if diff > 0:
            eligible = np.flatnonzero(quotas < counts)
            # Stable sort on -remainder keeps smaller labels first on ties.
            order = eligible[np.argsort(-remainder[eligible], kind="stable")]
            step = 1
        else:
            eligible = np.flatnonzero(quotas > 0)
            order = eligible[np.argsort(remainder[eligible], kind="stable")]
            step = -1
        for c in order[: abs(diff)]:
            quotas[c] += step
            remainder[c] -= step
        diff = target - int(quotas.sum())
    return {cls.item(): int(q) for cls, q in zip(classes, quotas)}


def sample_subsets(
    n_train: int,
    n_subsets: int,
    fraction: float,
    seed: int,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Draw M random training subsets of equal size.

    Every subset is drawn independently and uniformly without replacement
    from ``numpy.random.default_rng(seed)``, so the same arguments always give
    the same mask. Independent draws may in principle coincide; for any
    realistic N this has negligible probability.

    With ``labels``, every subset is stratified: class c contributes exactly
    ``stratified_quotas(labels, fraction)[c]`` members (the rounding rule is
    documented there), the same counts in every subset.

    Args:
        n_train: number of training examples N.
        n_subsets: number of subsets M (>= 1).
        fraction: subset fraction alpha in (0, 1).
        seed: seed of the numpy Generator.
        labels: optional class labels, shape ``[N]``.

    Returns:
        Boolean mask, shape ``[M, N]``; each row has ``round(fraction * N)``
        True entries.

    Raises:
        ValueError: naming ``fraction``, ``n_subsets``, ``n_train`` or
            ``labels`` when an argument is invalid or the subset size would be
            0 or N.
    """
    n_train = int(n_train)
    n_subsets = int(n_subsets)
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    size = subset_size(n_train, fraction)
    if size == 0 or size == n_train:
        raise ValueError(f"fraction={fraction} with n_train={n_train} gives subset size {size}; a subset must hold between 1 and {n_train - 1} examples")

    rng = np.random.default_rng(seed)
    mask = np.zeros((n_subsets, n_train), dtype=bool)

    if labels is None:
        for j in range(n_subsets):
            mask[j, rng.choice(n_train, size=size, replace=False)] = True
        return mask

    labels = np.asarray(labels)
    if labels.shape != (n_train,):
        raise ValueError(f"labels must have shape ({n_train},), got {labels.shape}")
    quotas = stratified_quotas(labels, fraction)
    # Fixed class order (sorted labels) keeps the random stream reproducible.
    members = {cls: np.flatnonzero(labels == cls) for cls in quotas}
    for j in range(n_subsets):
        for cls, quota in quotas.items():
            if quota:
                mask[j, rng.choice(members[cls], size=quota, replace=False)] = True
    return mask


def subsets_to_frame(mask: np.ndarray) -> pd.DataFrame:
    """Long table of subset membership.

    Args:
        mask: boolean mask, shape ``[M, N]``.

    Returns:
        DataFrame with int64 columns ``subset`` and ``train_index``, one row per
        member, sorted by subset then train index.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != bool:
        raise ValueError(f"mask must be a 2-D boolean array, got ndim={mask.ndim} dtype={mask.dtype}")
    # np.nonzero walks the array in row-major order, which is the sort order.
    subset, train_index = np.nonzero(mask)
    return pd.DataFrame(
        {
            "subset": subset.astype(np.int64),
            "train_index": train_index.astype(np.int64),
        }
    )


def subsets_from_frame(frame: pd.DataFrame, n_train: int) -> np.ndarray:
    """Inverse of :func:`subsets_to_frame`.

    The number of subsets M is ``max(subset) + 1``; every id in ``0..M-1``
    must have at least one member.

    Args:
        frame: table with integer columns ``subset`` and ``train_index``.
        n_train: number of training examples N.

    Returns:
        Boolean mask, shape ``[M, N]``.

    Raises:
        ValueError: on missing columns, an empty frame, negative subset ids,
            train indices outside ``[0, n_train)``, duplicated members or
            subset ids absent from ``0..M-1``.
    """
    missing_cols = {"subset", "train_index"} - set(frame.columns)
    if missing_cols:
        raise ValueError(f"frame lacks columns {sorted(missing_cols)}")
    if len(frame) == 0:
        raise ValueError("frame has no rows, hence no subsets")
    subset = frame["subset"].to_numpy()
    train_index = frame["train_index"].to_numpy()
    for name, values in (("subset", subset), ("train_index", train_index)):
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"column {name} must be integer, got {values.dtype}")

    if subset.min() < 0:
        raise ValueError(f"negative subset ids: {sorted(set(subset[subset < 0]))[:10]}")
    bad = (train_index < 0) | (train_index >= n_train)
    if bad.any():
        raise ValueError(f"train_index out of range [0, {n_train}): {sorted(set(train_index[bad].tolist()))[:10]}")
    n_subsets = int(subset.max()) + 1
    absent = np.setdiff1d(np.arange(n_subsets), subset)
    if absent.size:
        raise ValueError(f"missing subsets (no members): {absent[:10].tolist()}")
    dup = frame.duplicated(subset=["subset", "train_index"])
    if dup.any():
        rows = frame.loc[dup, ["subset", "train_index"]].head(10)
        raise ValueError(f"duplicated members: {rows.to_records(index=False).tolist()}")

    mask = np.zeros((n_subsets, int(n_train)), dtype=bool)
    mask[subset, train_index] = True
    return mask
