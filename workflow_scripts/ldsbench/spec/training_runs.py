"""The four kinds of training run the benchmark makes, and what each one
trains on (torch-free).

* ``full``: the full-data model, every training row, the configured steps
  and seed.
* ``full_seed``: a full-data model of another training seed (TRAK
  ensembles; the all-data references of the removal branch); seed s >= 1
  trains with ``removal.removal_training_seed(seed, s)``.
* ``subset``: the model of one (subset j, seed k): the rows of subset j,
  ``training.subset_steps`` steps, seed ``stream_seed(seed, "subset", j, k)``.
* ``removal``: a full-data model without a removed set, with the removal
  seed's training seed, so that it differs from its all-data reference of
  the same seed only by the removed rows.

Every run is a pure function of its kind, its indices and the config, so
the rules only name the kind; ``train_model.py`` asks :func:`training_run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ldsbench.runtime.seeds import stream_seed

TRAINING_KINDS = ("full", "full_seed", "subset", "removal")


@dataclass(frozen=True)
class TrainingRun:
    """One training run.

    Attributes:
        kind: one of :data:`TRAINING_KINDS`.
        name: how logs and the model's metadata call it.
        rows: ``[n]`` int64 sorted training-set rows it trains on.
        overrides: ``TrainingSettings`` fields that differ from the
            ``training`` config (steps, seed).
        removed_rows: the rows a removal run leaves out (empty otherwise).
    """

    kind: str
    name: str
    rows: np.ndarray
    overrides: dict = field(default_factory=dict)
    removed_rows: tuple = ()


def training_run(kind: str, n_train: int, training: dict, subset: int | None = None, seed: int | None = None, subset_rows=None, removed_rows=()) -> TrainingRun:
    """The :class:`TrainingRun` of ``kind``.

    Args:
        kind: one of :data:`TRAINING_KINDS`.
        n_train: N, the size of the training set.
        training: the validated ``training`` config (``seed``, ``subset_steps``).
        subset: j, for ``subset``.
        seed: k for ``subset``; the training seed index for ``full_seed``
            (>= 1) and ``removal`` (>= 0).
        subset_rows: the rows of subset j (``subset`` only).
        removed_rows: the removed rows (``removal`` only; none for an
            all-data reference).

    Raises:
        ValueError: for an unknown kind or missing or surplus indices.
    """
    if kind not in TRAINING_KINDS:
        raise ValueError(f"unknown training kind {kind!r}; known: {', '.join(TRAINING_KINDS)}")
    wants = {"full": (False, False), "full_seed": (False, True), "subset": (True, True), "removal": (False, True)}[kind]
    if (subset is not None, seed is not None) != wants:
        raise ValueError(
            f"a {kind} training run takes {'a subset and ' if wants[0] else ''}{'a seed' if wants[1] else 'no subset or seed'}; got subset={subset}, seed={seed}"
        )
    everything = np.arange(n_train, dtype=np.int64)
    if kind == "full":
        return TrainingRun(kind, "full model", everything)
    if kind == "full_seed":
        if seed < 1:
            raise ValueError(f"full-data seed {seed}: seed 0 is the full model itself")
        return TrainingRun(kind, f"full model seed {seed}", everything, {"seed": removal_training_seed(training["seed"], seed)})
    if kind == "removal":
        removed = tuple(int(r) for r in removed_rows)
        return TrainingRun(
            kind,
            f"removal model seed {seed} without {len(removed)} examples",
            kept_rows(n_train, removed),
            {"seed": removal_training_seed(training["seed"], seed)},
            removed,
        )
    rows = np.sort(np.asarray(subset_rows if subset_rows is not None else [], dtype=np.int64))
    if rows.size == 0:
        raise ValueError(f"subset {subset} has no training rows")
    return TrainingRun(
        kind, f"subset {subset} seed {seed}", rows, {"steps": training["subset_steps"], "seed": stream_seed(training["seed"], "subset", subset, seed)}
    )


# The removal branch's control: as many random examples as a method removes.
RANDOM_CONTROL = "random_control"


# Reference models: the full training set, one per removal seed.
ALL_DATA = "all_data"


def kept_rows(n_train: int, removed) -> np.ndarray:
    """Training rows left after removing ``removed``: [N - k] int64, sorted."""
    removed = np.asarray(removed, dtype=np.int64)
    if removed.size and (removed.min() < 0 or removed.max() >= n_train or np.unique(removed).size != removed.size):
        raise ValueError(f"removed rows must be distinct and in 0..{n_train - 1}")
    return np.setdiff1d(np.arange(n_train, dtype=np.int64), removed)


def removal_training_seed(base_seed: int, seed: int) -> int:
    """Training seed of removal seed ``seed``: the full model's own seed for 0,
    otherwise a stream derived from it (shared by the all-data reference)."""
    return base_seed if seed == 0 else stream_seed(base_seed, "removal", seed)
