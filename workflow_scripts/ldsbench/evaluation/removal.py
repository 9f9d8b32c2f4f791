"""Retraining without the top influences (the counterfactual evaluation).

For a query q, a method's scores tau(q, .) [N] and a fraction f, the removed
set is the k = round(f N) **proponents** of q: the training examples whose
inclusion the method predicts to improve m(q) the most. Improvement follows
the measurement's orientation, since tau predicts m(with i) - m(without i):

    lower is better (loss):   the k most negative tau(q, i)
    higher is better (ELBO):  the k most positive tau(q, i)

The scores themselves are never flipped; the orientation only says which end
of the ranking is "top". A method that ranks well makes m(q) worse when its
proponents are removed: the change m(without) - m(all data) is positive for
a lower-is-better measurement and negative for a higher-is-better one. The
control removes k examples drawn uniformly at random.

Both sides of a change are trained with the same seed (``removal_training_
seed``), and seed 0 is the full model's own seed, so the full model is the
seed-0 reference and a generated query regenerated from its sampling noise
by the full model is the query itself.
"""

from __future__ import annotations

import numpy as np

from ldsbench.spec.measurement_types import HIGHER_IS_BETTER, LOWER_IS_BETTER

PROPONENT_SIGN = {LOWER_IS_BETTER: -1.0, HIGHER_IS_BETTER: 1.0}


def removal_size(n_train: int, fraction: float) -> int:
    """k = round(fraction * n_train) examples removed."""
    k = int(round(fraction * n_train))
    if not 1 <= k < n_train:
        raise ValueError(f"fraction {fraction} of {n_train} examples removes {k}; need 1..{n_train - 1}")
    return k


def top_proponents(scores: np.ndarray, k: int, orientation: str) -> np.ndarray:
    """Rows of the k proponents of one query: [N] scores -> [k] int64, best first.

    Ties keep the lower row first (a stable sort), so the set is deterministic.
    """
    if orientation not in PROPONENT_SIGN:
        raise ValueError(f"orientation {orientation!r} has no direction of improvement; need one of {sorted(PROPONENT_SIGN)}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or not np.isfinite(scores).all():
        raise ValueError("scores must be a finite vector [N]")
    improvement = PROPONENT_SIGN[orientation] * scores
    return np.argsort(-improvement, kind="stable")[:k].astype(np.int64)


def random_removal(n_train: int, k: int, seed: int, query: int) -> np.ndarray:
    """The control: k rows drawn without replacement, [k] int64, sorted. The
    draw depends on (seed, query, k) only, so each fraction has its own."""
    from ldsbench.runtime.seeds import stream_seed

    rng = np.random.default_rng(stream_seed(seed, "removal_control", query, k))
    return np.sort(rng.choice(n_train, size=k, replace=False)).astype(np.int64)


def removal_changes(measured, reference):
    """Change of each query's measurement caused by each removal.

    Args:
        measured: one row per (ranker, target query, fraction, seed, measured
            query) with columns ranker, target, fraction, k, seed, query,
            value, stderr, image_l2 (NaN when not regenerated).
        reference: the all-data models, one row per (seed, query) with
            columns seed, query, value, stderr, image_l2.

    Returns:
        ``measured`` restricted to the target query (the one whose
        proponents were removed), with ``reference_value``, ``change =
        value - reference_value`` and ``change_stderr`` (the two Monte Carlo
        errors combined as if independent, an upper bound under common
        random numbers) and ``reference_image_l2``.
    """
    target = measured[measured["query"] == measured["target"]]
    ref = reference.rename(columns={"value": "reference_value", "stderr": "reference_stderr", "image_l2": "reference_image_l2"})
    merged = target.merge(
        ref[["seed", "query", "reference_value", "reference_stderr", "reference_image_l2"]], on=["seed", "query"], how="left", validate="many_to_one"
    )
    missing = merged["reference_value"].isna()
    if missing.any():
        pairs = merged.loc[missing, ["seed", "query"]].drop_duplicates().to_records(index=False).tolist()
        raise ValueError(f"no all-data reference measurement for (seed, query) {pairs}")
    merged["change"] = merged["value"] - merged["reference_value"]
    merged["change_stderr"] = np.hypot(merged["stderr"], merged["reference_stderr"])
    return merged.reset_index(drop=True)


def summarize_changes(changes):
    """Mean change per (ranker, fraction) over target queries and seeds.

    ``change_se`` is the standard error of that mean from the spread over
    (query, seed) pairs (NaN with one pair); image distances are averaged
    over the generated queries only (NaN if none).
    """
    import pandas as pd

    rows = []
    for (ranker, fraction), group in changes.groupby(["ranker", "fraction"], sort=False):
        n = len(group)
        images = group["image_l2"].dropna()
        references = group["reference_image_l2"].dropna()
        rows.append(
            {
                "ranker": ranker,
                "fraction": float(fraction),
                "k": int(group["k"].iloc[0]),
                "change": float(group["change"].mean()),
                "change_se": float(group["change"].std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
                "image_l2": float(images.mean()) if len(images) else float("nan"),
                "reference_image_l2": float(references.mean()) if len(references) else float("nan"),
                "n": n,
            }
        )
    return pd.DataFrame(rows)
