"""The ground truth as an array: the measurements of every retrained model
on every query, from their long table (``ground_truth/<measurement>.parquet``)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def ground_truth_array(frame: pd.DataFrame, n_subsets: int, n_seeds: int, n_queries: int) -> np.ndarray:
    """Dense ``[K, M, Q]`` ground truth from a long table.

    Args:
        frame: columns ``subset``, ``seed``, ``query`` (integer indices in
            ``[0, n_subsets)``, ``[0, n_seeds)``, ``[0, n_queries)``) and
            ``value`` (the measurement, finite).
        n_subsets: M.
        n_seeds: K (number of seeds, indexed 0..K-1).
        n_queries: Q.

    Returns:
        ``[K, M, Q]`` float64 array with ``out[seed, subset, query] = value``.

    Raises:
        ValueError: naming the missing column, out-of-range ids, duplicated or
            missing (subset, seed, query) combinations, or non-finite values.
    """
    keys = ["subset", "seed", "query"]
    missing_cols = set(keys + ["value"]) - set(frame.columns)
    if missing_cols:
        raise ValueError(f"ground-truth frame lacks columns {sorted(missing_cols)}")

    sizes = {"subset": int(n_subsets), "seed": int(n_seeds), "query": int(n_queries)}
    ids = {}
    for name in keys:
        col = frame[name].to_numpy()
        if len(col) and not np.issubdtype(col.dtype, np.integer):
            raise ValueError(f"column {name} must be integer, got {col.dtype}")
        col = col.astype(np.int64)
        bad = (col < 0) | (col >= sizes[name])
        if bad.any():
            raise ValueError(f"column {name} has ids outside [0, {sizes[name]}): {sorted(set(col[bad].tolist()))[:10]}")
        ids[name] = col

    dup = frame.duplicated(subset=keys, keep=False)
    if dup.any():
        rows = frame.loc[dup, keys].drop_duplicates().head(10)
        raise ValueError(f"duplicated (subset, seed, query) entries: {rows.to_records(index=False).tolist()}")

    values = frame["value"].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        rows = frame.loc[~np.isfinite(values), keys].head(10)
        raise ValueError(f"non-finite value for (subset, seed, query): {rows.to_records(index=False).tolist()}")

    out = np.full((sizes["seed"], sizes["subset"], sizes["query"]), np.nan)
    out[ids["seed"], ids["subset"], ids["query"]] = values
    absent = np.argwhere(np.isnan(out))
    if absent.size:
        # argwhere gives (seed, subset, query); report as (subset, seed, query).
        examples = [(int(j), int(k), int(q)) for k, j, q in absent[:10]]
        affected = (
            f"subsets {np.unique(absent[:, 1])[:10].tolist()}, seeds {np.unique(absent[:, 0])[:10].tolist()}, queries {np.unique(absent[:, 2])[:10].tolist()}"
        )
        raise ValueError(f"ground truth incomplete: {len(absent)} of {out.size} (subset, seed, query) entries missing ({affected}), e.g. {examples}")
    return out
