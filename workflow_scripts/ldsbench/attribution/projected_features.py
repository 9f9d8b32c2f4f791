"""Projected training features: the training side shared by TRAK, D-TRAK,
TRAK ensemble members and Journey-TRAK.

A feature set is ``Phi`` [N, k]: row i is the randomly projected gradient of
training example i's output function, averaged over its (t, eps) draws,

    phi_i = R^T (1/D) sum_d grad f(theta; x_i, t_d, eps_d),    R [P, k],

at one model's weights. It is decided by the model, the output function,
the draws (count, layout, seed) and the projection (k, kind, seed), which
``feature_keys`` turns into the file's name, so every method asking for the
same set reads one file (``project_training_features``). Draws are keyed by
each example's content, and the projection by (seed, parameter block), so
the file does not depend on how examples were batched: a method that reads
it gets the same features it would have computed itself.

A query side must use the same ``R``: ``feature_projector`` rebuilds it from
the settings. ``torch.Generator`` streams differ between device types, so a
file records the device type it was projected on and ``load_training_features``
refuses a job on another type (it would project its queries with another R).

Memory (one job): one batch of B raw gradients [B, P] and their projections,
the cached projection blocks, one gradient pass, and the features [N, k]
float32. No query and no [k, k] matrix is held.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ldsbench.attribution.projection import RandomProjector
from ldsbench.attribution.scoring import training_gradient_batches
from ldsbench.diffusion.model import attributed_parameters
from ldsbench.diffusion.noise import GradientDraws
from ldsbench.diffusion.outputs import named_output
from ldsbench.planning.memory import FEATURE_BATCH, choose_feature_batch, feature_sizes
from ldsbench.runtime.io import save_npy
from ldsbench.runtime.provenance import ArtifactMismatchError, check_compatible, verify_checksums, write_checksums


def feature_projector(num_params: int, settings: dict) -> RandomProjector:
    """The projector ``R`` [P, k] of a feature set (``projection_dim`` None: identity)."""
    return RandomProjector(num_params, settings["projection_dim"], settings["seed"], kind=settings["projection"])


def feature_draws(settings: dict) -> GradientDraws:
    """The (t, eps) draws of each training example's gradient."""
    return GradientDraws.of(settings["train_draws"], settings.get("gradient_draws"))


def projected_training_features(
    unet,
    scheduler,
    train_images,
    output_fn,
    train_draws: int | GradientDraws,
    seed: int,
    projection_dim,
    projection_seed: int,
    batch_examples: int = FEATURE_BATCH,
    draws_per_pass: int = 64,
    projection: str = "rademacher",
):
    """(features [N, k] float32, projector): the randomly projected gradients
    of each training example's ``output_fn`` (train_images [N, C, H, W]); k
    is ``projection_dim``, or the number of attributed weights without
    projection. ``batch_examples`` gradients [B, P] are held at once (memory
    only); ``projection`` is the random matrix's kind (``projection.RandomProjector``)."""
    features, projector = [], None
    settings = {"projection_dim": projection_dim, "seed": projection_seed, "projection": projection}
    # Large blocks: the projection matrix is generated (or read from cache)
    # once per block, which dominates the cost for small blocks.
    for _, grads in training_gradient_batches(unet, scheduler, train_images, output_fn, train_draws, seed, batch_examples, draws_per_pass=draws_per_pass):
        if projector is None:
            projector = feature_projector(grads.shape[1], settings)
        features.append(projector.project(grads))
        del grads  # before the next block is built (``gradients.iter_example_gradients``)
    return torch.cat(features), projector


def features_of(unet, scheduler, train_images, settings: dict, *, batch_examples: int = FEATURE_BATCH, draws_per_pass: int = 64) -> torch.Tensor:
    """The feature set ``settings`` (``feature_keys.projected_feature_set``) of a model: [N, k] float32."""
    features, _ = projected_training_features(
        unet,
        scheduler,
        train_images,
        named_output(settings["output_fn"]),
        feature_draws(settings),
        settings["seed"],
        settings["projection_dim"],
        settings["seed"],
        batch_examples,
        draws_per_pass,
        settings["projection"],
    )
    return features


def job_training_features(job, member: int, settings: dict, unet, scheduler, manifest: dict | None, batch_examples: int):
    """(features [N, k], projector) of a scoring job's model ``member`` (0:
    the full model, then its ensemble): read from the job's feature file
    when the workflow computed it (``job.inputs["training_features"]``),
    else computed here (a scorer called on its own). Both give the same features."""
    paths = job.inputs.get("training_features") or []
    projector = feature_projector(sum(p.numel() for p in attributed_parameters(unet)), settings)
    if paths:
        path = Path(paths[member])
        device = job.device if job.device is not None else "cpu"
        features = load_training_features(path, path.with_suffix(".json"), model_manifest=manifest, settings=settings, device=device)
    else:
        features = features_of(unet, scheduler, job.train, settings, batch_examples=batch_examples, draws_per_pass=job.draws_per_pass)
    return features, projector


def feature_batch(unet, settings: dict, *, n_train: int, budget_bytes: int, budget_setting: str, draws_per_pass: int) -> int:
    """Training gradients per batch of a feature job: at most ``FEATURE_BATCH``,
    fewer if ``budget_bytes`` needs it (``memory.choose_feature_batch``, as the plan)."""
    from ldsbench.planning.footprint import footprint_of

    return choose_feature_batch(budget_bytes, setting=budget_setting, **feature_sizes(footprint_of(unet), settings, n_train, draws_per_pass))


def save_training_features(path, manifest_path, features: torch.Tensor, settings: dict, provenance: dict) -> None:
    """Write the features (float32 ``.npy``), then their manifest: the
    settings, the model's provenance, the device type of the projection and
    the file's checksum. A features file with a manifest is complete."""
    save_npy(path, features.detach().cpu().numpy().astype(np.float32))
    write_checksums(manifest_path, {"features": path}, {**provenance, "settings": settings, "device_type": features.device.type})


def load_training_features(path, manifest_path, *, model_manifest: dict, settings: dict, device) -> torch.Tensor:
    """Features [N, k] on ``device``, after checking that they are intact, of
    this model (its weight checksums), of these settings, and projected on
    this device type. Raises ``ArtifactMismatchError`` (naming what differs)
    otherwise."""
    provenance = verify_checksums(manifest_path, {"features": path})
    device = torch.device(device)
    check_compatible(
        {"weights_sha256": provenance.get("weights_sha256"), "settings": provenance.get("settings")},
        {"weights_sha256": model_manifest["weights_sha256"], "settings": settings},
        str(path),
        "the model and method settings of this scoring job",
    )
    if settings["projection_dim"] is not None and provenance["device_type"] != device.type:
        raise ArtifactMismatchError(
            f"{path} was projected on {provenance['device_type']}, this scoring job runs on {device.type}: random projections differ "
            "between device types, so its queries would be projected with another matrix. Set runtime.device so that both jobs use the "
            f"same kind of device, or delete {path} and rerun."
        )
    return torch.from_numpy(np.load(path)).to(device)
