"""TRAK / D-TRAK kernel scores from (projected) gradient features.

With training features ``Phi`` (``[N, k]``, one row ``phi_i`` per training
example) and a query feature ``q``, the TRAK attribution of training example
``i`` to the query is the kernel value

    score(q, i) = q^T (Phi^T Phi + lambda I)^{-1} phi_i .

``lambda`` is added to the *sum* ``Phi^T Phi`` over the N training
examples, not to a mean. With ``lambda_scale: absolute`` (the default) it is
used as given; with ``lambda_scale: mean_eigenvalue`` the configured value
is a multiple of the mean eigenvalue of ``Phi^T Phi`` over its k dimensions,
``trace(Phi^T Phi) / k`` (kronfluence scales its damping the same way), so
one grid spans the spectrum whatever the features' scale, the number of
examples or k. Each ensemble member uses its own spectrum's mean. Values
are returned raw, with no sign flipping; callers apply the package's score
orientation.

The solve is ``attribution.ridge``: ``Phi^T Phi`` is diagonalised once
(``GramSpectrum``, streamed batch by batch with ``accumulate_gram`` for a
large N) and every ``lambda`` of the sweep is a reweighting of its
eigenvalues, with the pseudo-inverse at ``lambda = 0``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from ldsbench.attribution.projected_features import job_training_features, projected_training_features
from ldsbench.attribution.projection import RandomProjector
from ldsbench.attribution.ridge import LAMBDA_SCALES, GramSpectrum, check_lambdas
from ldsbench.attribution.scoring import SCORE_SIGN, stacked_query_gradient_batches
from ldsbench.diffusion.noise import GradientDraws
from ldsbench.diffusion.outputs import named_output
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.runtime.jobs import load_model
from ldsbench.spec.feature_keys import projected_feature_sets
from ldsbench.spec.measurement_types import query_output_groups, same_for_every_measurement, split_by_group
from ldsbench.spec.method_types import query_follows_measurement, scored_values

log = logging.getLogger(__name__)

__all__ = [
    "projected_query_features",
    "trak_kernel_scores",
    "trak_scores",
    "trak_scores_from_features",
    "score_trak",
]


def trak_kernel_scores(
    query_features: torch.Tensor,
    train_features: torch.Tensor,
    lambdas: Sequence[float],
    rtol: float | None = None,
    lambda_scale: str = "absolute",
) -> torch.Tensor:
    """TRAK kernel scores for every query, training example and lambda.

    Args:
        query_features: ``[Q, k]`` query features.
        train_features: ``[N, k]`` training features ``Phi``.
        lambdas: ``L`` absolute ridge values ``>= 0``.
        rtol: relative eigenvalue cut-off for the pseudo-inverse at
            ``lambda = 0`` (see the module docstring); ``None`` for ``k * eps``.
        lambda_scale: ``"absolute"``, or ``"mean_eigenvalue"``: every lambda
            is multiplied by ``trace(Phi^T Phi) / k``.

    Returns:
        ``[L, Q, N]`` float64, entry ``(l, q, i)`` =
        ``query_q^T (Phi^T Phi + lambda_l I)^{-1} phi_i``.
    """
    if lambda_scale not in LAMBDA_SCALES:
        raise ValueError(f"lambda_scale must be one of {LAMBDA_SCALES}, got {lambda_scale!r}")
    spectrum = GramSpectrum.from_features(train_features, rtol=rtol)
    lambdas = check_lambdas(lambdas)
    if lambda_scale == "mean_eigenvalue":
        scale = spectrum.mean_eigenvalue
        log.info(
            "Phi^T Phi: mean eigenvalue %.4g (the lambda unit), eigenvalues %.4g to %.4g",
            scale,
            float(spectrum.eigenvalues.min()),
            float(spectrum.eigenvalues.max()),
        )
        lambdas = [lam * scale for lam in lambdas]
    return spectrum.kernel_scores(query_features, train_features, lambdas)


def projection_batch(unet, job, *, projection_dim, n_queries: int, n_train: int, values: int, batch_examples: int = 256) -> int:
    """Training gradients per batch for a projected-gradient scorer: at most
    ``batch_examples``, fewer if the job's memory budget needs it
    (``memory.choose_projection_batch``)."""
    if job.budget_bytes is None:
        return batch_examples
    from ldsbench.planning.footprint import footprint_of
    from ldsbench.planning.memory import choose_projection_batch, method_sizes, projection_cache_bytes

    draws = max(job.method.get("train_draws", 1), job.method.get("query_draws", 1))
    sizes = method_sizes(footprint_of(unet), "projection", min(job.draws_per_pass, draws))
    return choose_projection_batch(
        job.budget_bytes,
        batch_examples=min(batch_examples, n_train),
        setting=job.budget_setting,
        dim=projection_dim,
        queries=n_queries,
        train=n_train,
        values=values,
        projection_cache_bytes=projection_cache_bytes(sizes["params"], projection_dim, job.method.get("projection", "rademacher")),
        **sizes,
    )


def projected_query_features(
    unet,
    scheduler,
    queries,
    output_fns: list,
    query_draws: int | GradientDraws,
    seed: int,
    projector: RandomProjector,
    batch_examples: int = 256,
    draws_per_pass: int = 64,
) -> torch.Tensor:
    """[S Q, k] projected query gradients of the stacked queries (row s Q + q:
    query q under ``output_fns[s]``). Gradients are gathered into blocks of
    up to ``batch_examples`` rows before each projection: a dense projection
    matrix beyond the cache is regenerated per call, which dominates small blocks."""
    rows = range(len(output_fns) * len(queries))
    batches = stacked_query_gradient_batches(
        unet, scheduler, queries, output_fns, rows, query_draws, seed, min(32, batch_examples), draws_per_pass=draws_per_pass
    )
    # One buffer of at most batch_examples rows: the peak is a training batch's.
    features, buffer, filled = [], None, 0
    for _, grads in batches:
        if buffer is None:
            buffer = grads.new_empty(min(batch_examples, len(rows)), grads.shape[1])
        if filled + len(grads) > len(buffer):
            features.append(projector.project(buffer[:filled]))
            filled = 0
        buffer[filled : filled + len(grads)] = grads
        filled += len(grads)
        del grads  # before the next block is built (``gradients.iter_example_gradients``)
    if filled:
        features.append(projector.project(buffer[:filled]))
    return torch.cat(features)


def trak_scores(unet, scheduler, train_images, queries, lambdas, *, measurement, **settings) -> np.ndarray:
    """TRAK or D-TRAK for one measurement: [L, Q, N] float32 (``stacked_trak_scores``)."""
    return stacked_trak_scores(unet, scheduler, train_images, queries, lambdas, measurements=[measurement], **settings)


def stacked_trak_scores(
    unet,
    scheduler,
    train_images,
    queries,
    lambdas,
    *,
    measurements: list,
    output_fn: str,
    projection_dim,
    projection_seed: int,
    train_draws: int | GradientDraws,
    query_draws: int | GradientDraws,
    seed: int,
    batch_examples: int = 256,
    draws_per_pass: int = 64,
    projection: str = "rademacher",
    lambda_scale: str = "absolute",
) -> np.ndarray:
    """TRAK (output_fn "loss") or D-TRAK (output_fn "squared_norm"): [L, S Q, N]
    float32, row s Q + q the query q for ``measurements[s]``: the training
    features (``projected_features``), then ``trak_scores_from_features``."""
    train_features, projector = projected_training_features(
        unet,
        scheduler,
        train_images,
        named_output(output_fn),
        train_draws,
        seed,
        projection_dim,
        projection_seed,
        batch_examples,
        draws_per_pass,
        projection,
    )
    return trak_scores_from_features(
        unet,
        scheduler,
        train_features,
        projector,
        queries,
        lambdas,
        measurements=measurements,
        output_fn=output_fn,
        query_draws=query_draws,
        seed=seed,
        batch_examples=batch_examples,
        draws_per_pass=draws_per_pass,
        lambda_scale=lambda_scale,
    )


def trak_scores_from_features(
    unet,
    scheduler,
    train_features: torch.Tensor,
    projector: RandomProjector,
    queries,
    lambdas,
    *,
    measurements: list,
    output_fn: str,
    query_draws: int | GradientDraws,
    seed: int,
    batch_examples: int = 256,
    draws_per_pass: int = 64,
    lambda_scale: str = "absolute",
) -> np.ndarray:
    """[L, S Q, N] float32 scores from training features [N, k] and their
    projector: for queries the gradient of each measurement when output_fn
    is "loss", otherwise of the same output function (as in D-TRAK; then
    every measurement's rows are the same)."""
    train_fn = named_output(output_fn)
    query_fns = [measurement_output_fn(m) for m in measurements] if output_fn == "loss" else [train_fn]
    query_features = projected_query_features(unet, scheduler, queries, query_fns, query_draws, seed, projector, batch_examples, draws_per_pass)
    raw = trak_kernel_scores(query_features, train_features, lambdas, lambda_scale=lambda_scale)
    if len(query_fns) < len(measurements):
        raw = raw.repeat(1, len(measurements), 1)
    return (SCORE_SIGN * raw.cpu().numpy()).astype(np.float32)


def score_trak(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: trak`` (``methods``): the default lambda and its
    grid, for every measurement from one set of training features per model
    (``projected_features.job_training_features``). With ``models: E > 1``
    the scores are averaged over the full model and the E - 1 full-data
    models of other training seeds (``job.inputs["ensemble"]``), as TRAK
    ensembles its models."""
    method = job.method
    lambdas = scored_values(method)
    groups = query_output_groups(job.measurements)
    # D-TRAK's query side is its own output function: one query set for all.
    follows = query_follows_measurement(method)
    query_settings = [settings for settings, _ in groups] if follows else [groups[0][0]]
    members = [(job.unet, job.scheduler, job.model_manifest)] + [load_model(path, job.device) for path in job.inputs.get("ensemble", [])]
    feature_sets = projected_feature_sets(method, method["output_fn"], len(members))
    batch = projection_batch(
        job.unet, job, projection_dim=method["projection_dim"], n_queries=len(query_settings) * len(job.queries), n_train=len(job.train), values=len(lambdas)
    )
    total = None
    for member, ((unet, scheduler, manifest), settings) in enumerate(zip(members, feature_sets)):
        train_features, projector = job_training_features(job, member, settings, unet, scheduler, manifest, batch)
        scores = trak_scores_from_features(
            unet,
            scheduler,
            train_features,
            projector,
            job.queries,
            lambdas,
            measurements=query_settings,
            output_fn=method["output_fn"],
            query_draws=GradientDraws.of(method["query_draws"], method.get("gradient_draws")),
            seed=method["seed"],
            batch_examples=batch,
            draws_per_pass=job.draws_per_pass,
            lambda_scale=method["lambda_scale"],
        )
        total = scores.astype(np.float64) if total is None else total + scores
    scores = (total / len(members)).astype(np.float32)
    return lambdas, split_by_group(scores, groups) if follows else same_for_every_measurement(job, scores)
