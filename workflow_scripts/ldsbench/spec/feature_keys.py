"""Projected training feature sets and the names of their files (torch-free).

A feature set (``projected_features``) is decided by its settings: the
model, the output function, the training draws and the projection. Methods
declare the sets they read (``methods.MethodType.training_features``); equal
settings give one file, ``features/{model}-{output_fn}-{hash}.npy``, which
every such method reads. With the default config, TRAK, the first member of
the TRAK ensemble and Journey-TRAK read the same file. A method's own
hyperparameters (lambda, its query side) are not part of the settings, so
changing them never recomputes features.
"""

from __future__ import annotations

from ldsbench.runtime.io import config_hash

# What a feature file name may look like (a Snakemake wildcard constraint).
FEATURE_KEY_PATTERN = r"full(_seed_\d+)?-[a-z0-9_]+-[0-9a-f]{12}"


def full_model_name(seed: int) -> str:
    """The folder under ``models/`` of the full-data model of training seed ``seed``."""
    return "full" if seed == 0 else f"full_seed_{seed}"


def projected_feature_sets(method: dict, output_fn: str, members: int = 1) -> list[dict]:
    """The feature sets of a projected-gradient method: for each of its
    ``members`` full-data models, the gradients of ``output_fn`` with the
    method's training draws and projection."""
    shared = {key: method[key] for key in ("projection_dim", "projection", "train_draws", "seed")}
    return [{"model": full_model_name(seed), "output_fn": output_fn, **shared, "gradient_draws": method.get("gradient_draws")} for seed in range(members)]


def feature_key(settings: dict) -> str:
    """``{model}-{output_fn}-{hash of every setting}``."""
    return f"{settings['model']}-{settings['output_fn']}-{config_hash(settings)[:12]}"
