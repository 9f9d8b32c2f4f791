"""Influence with the exact GGN, solved iteratively, preconditioned by EK-FAC.

tau(q, i) = SCORE_SIGN (1/N) g_i^T (G + lam I)^{-1} g_q (``scoring``), as
``influence``, but with G the exact GGN of the training loss instead of its
Kronecker approximation (ASTRA, arXiv 2507.14740, solves the same system
with an EK-FAC-preconditioned iterative solver). G is that of the K-FAC
fit (``curvature``): the mean-MSE GGN over the noised training data of
``curvature_data.NoisedTrainingData`` with the method's ``curvature``
settings (the same draws the EK-FAC was fitted on), over the ``ggn_examples``
training examples of smallest content key (all of them by default), and
restricted to the attributed weights (``modules``). It is applied by
products only (``iterative_solvers.GGNMatmat``).

For each damping, the S Q query gradients (one per query per measurement
output function) of a chunk of Qc are solved together by block PCG
(``iterative_solvers.block_pcg``), preconditioned by (F + lam I)^{-1}, F the
curvature block's K-FAC or EK-FAC, and started at x_0 = (F + lam I)^{-1} g_q,
EK-FAC influence's own solution: ``max_iterations: 0`` is ``influence``
exactly, and where G equals F the start already solves the system. Each PCG
iteration is one product of G with the chunk's columns still iterating, one
pass over the GGN data shared by all of them. The L solutions of the chunk
are kept ([L, Qc, P] float64) and the training gradients streamed once per
chunk against all of them.

Peak memory is ``memory.iterative_influence_bytes``: (L + 6) Qc P 8 (the L
solutions, the right-hand sides and CG's x, r, z, p, A p), one training
batch B P (4 + 8), the GGN pass (a float64 copy of the model and the
double-backward graph of one batch of GGN draws), the eigenbasis and the
scores [L, S Q, N].
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch

from ldsbench.attribution.curvature import KroneckerEigenbasis
from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.attribution.iterative_solvers import GGNMatmat, block_pcg
from ldsbench.attribution.scoring import SCORE_SIGN, stacked_query_gradient_batches, training_gradient_batches
from ldsbench.diffusion.model import FlatNoisePredictor, selected_module_names
from ldsbench.diffusion.noise import GradientDraws, as_gradient_draws, content_keys
from ldsbench.diffusion.precision import network_precision
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.planning.footprint import footprint_of
from ldsbench.planning.memory import choose_iterative_influence_chunking, ggn_batch_draws, method_sizes
from ldsbench.spec.measurement_types import query_output_groups, split_by_group
from ldsbench.spec.method_types import scored_values

log = logging.getLogger(__name__)

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def ggn_training_images(train_images: torch.Tensor, ggn_examples: int | None) -> torch.Tensor:
    """The training examples the exact GGN averages over: the ``ggn_examples``
    of smallest content key (``noise.content_keys``; all for None), so the
    subset does not depend on the order of the training set."""
    if ggn_examples is None or ggn_examples >= len(train_images):
        return train_images
    keys = content_keys(train_images)
    rows = sorted(range(len(train_images)), key=lambda row: (keys[row], row))[:ggn_examples]
    return train_images[sorted(rows)]


def exact_ggn(unet, scheduler, train_images, module_names: list[str], curvature: dict, *, ggn_examples: int | None, draws_per_pass: int) -> GGNMatmat:
    """The exact GGN of the K-FAC fit of ``curvature`` (its ``draws_per_example``,
    ``seed`` and ``dtype``) as a product, on a copy of the model in that dtype."""
    dtype = _DTYPES[curvature.get("dtype", "float64")]
    device = next(unet.parameters()).device
    model = FlatNoisePredictor(copy.deepcopy(unet)).to(dtype).eval()
    data = NoisedTrainingData(
        ggn_training_images(train_images, ggn_examples),
        scheduler,
        curvature["draws_per_example"],
        curvature["seed"],
        batch_size=ggn_batch_draws(draws_per_pass, curvature["draws_per_example"]),
        dtype=dtype,
        device=device,
    )
    return GGNMatmat(model, module_names, data, num_data=data.num_data, batch_size_fn=batch_size_of)


def stacked_iterative_influence_scores(
    unet,
    scheduler,
    train_images,
    queries,
    basis: KroneckerEigenbasis,
    dampings,
    *,
    query_fns: list,
    curvature: dict,
    ggn_examples: int | None,
    max_iterations: int,
    tolerance: float,
    train_draws: int | GradientDraws,
    query_draws: int | GradientDraws,
    seed: int,
    modules: str | None = None,
    budget_bytes: int | None = None,
    batch_examples: int = 32,
    draws_per_pass: int = 64,
    budget_setting: str = "runtime.memory_gb",
    ggn=None,
) -> np.ndarray:
    """Exact-GGN influence for every damping: [L, S Q, N] float32, row s Q + q
    the query q under ``query_fns[s]`` (as ``influence.stacked_influence_scores``).

    ``basis`` is the preconditioner's curvature (its modules' columns of the
    flat gradients are the attributed ones, ``modules`` selecting among
    them); ``curvature`` the settings of its fit, which the exact GGN's data
    follows; ``ggn`` (tests) replaces the exact GGN by any product
    ``V [P, K] -> G V`` in the selected modules' layout.
    """
    dampings = [float(d) for d in dampings]
    n_rows, n_train = len(query_fns) * len(queries), len(train_images)
    names = selected_module_names(unet, modules, prefix="unet.")
    columns = [c for name, c in basis.module_slices() if name in names]
    selected = KroneckerEigenbasis(names, basis.q_out, basis.q_in, basis.eigenvalues, basis.settings)
    if ggn is None:
        ggn = exact_ggn(unet, scheduler, train_images, names, curvature, ggn_examples=ggn_examples, draws_per_pass=draws_per_pass)
    if budget_bytes is None:
        chunk, batch = n_rows, batch_examples
    else:
        draws = min(draws_per_pass, max(as_gradient_draws(train_draws).count, as_gradient_draws(query_draws).count))
        plan = choose_iterative_influence_chunking(
            budget_bytes,
            queries=n_rows,
            batch_examples=min(batch_examples, n_train),
            setting=budget_setting,
            train=n_train,
            values=len(dampings),
            ggn_draws=ggn_batch_draws(draws_per_pass, curvature["draws_per_example"]),
            **method_sizes(footprint_of(unet), "influence", draws),
        )
        chunk, batch = plan.queries_per_chunk, plan.batch_examples
        log.info(
            "iterative influence: %d right-hand sides per chunk (%d chunks), %d training examples per batch, estimated peak %.2f GiB",
            chunk,
            plan.chunks,
            batch,
            plan.peak_bytes / 2**30,
        )

    def select(grads: torch.Tensor) -> torch.Tensor:
        return torch.cat([grads[:, c] for c in columns], dim=1).to(torch.float64)

    scores = np.zeros((len(dampings), n_rows, n_train), dtype=np.float64)
    for first in range(0, n_rows, chunk):
        rows = range(first, min(first + chunk, n_rows))
        rhs = None
        for block_rows, grads in stacked_query_gradient_batches(
            unet, scheduler, queries, query_fns, rows, query_draws, seed, batch, draws_per_pass=draws_per_pass
        ):
            if rhs is None:
                rhs = torch.empty(len(rows), selected.num_params(), dtype=torch.float64, device=grads.device)
            rhs[block_rows] = select(grads)
            del grads
        solutions = []
        for damping in dampings:

            def damped(vectors, damping=damping):
                return ggn(vectors) + damping * vectors

            def precondition(residuals, damping=damping):
                return selected.solve(residuals.T, damping).T

            with network_precision("fp32"):
                solution, info = block_pcg(
                    damped,
                    rhs.T,
                    precondition,
                    tolerance=tolerance,
                    max_iterations=max_iterations,
                    start=precondition(rhs.T),
                    on_iteration=lambda step, residuals: log.info(
                        "damping %.3g, iteration %d: %d of %d right-hand sides above %g, largest relative residual %.2e",
                        damping,
                        step,
                        int((residuals > tolerance).sum()),
                        len(residuals),
                        tolerance,
                        residuals.max().item(),
                    ),
                )
            log.info(
                "damping %.3g: %d PCG iterations, relative residuals %.2e .. %.2e%s",
                damping,
                info.iterations,
                info.relative_residuals.min().item(),
                info.relative_residuals.max().item(),
                "" if info.converged else f" (not all below {tolerance:g})",
            )
            solutions.append(solution.T.contiguous())
            del solution
        del rhs
        for train_rows, grads in training_gradient_batches(unet, scheduler, train_images, "loss", train_draws, seed, batch, draws_per_pass=draws_per_pass):
            train = select(grads)
            del grads
            for index, solution in enumerate(solutions):
                scores[index, rows.start : rows.stop, train_rows] = (solution @ train.T).cpu().numpy()
            del train
    return (SCORE_SIGN * scores / n_train).astype(np.float32)


def score_iterative_influence(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: iterative_influence`` (``methods``): the default
    damping and its grid, for every measurement from one stream of training
    gradients per query chunk."""
    method = job.method
    dampings = scored_values(method)
    basis = KroneckerEigenbasis.load(job.inputs["curvature"], method["curvature"]["kind"])
    if job.device is not None:
        basis = basis.to(job.device)
    groups = query_output_groups(job.measurements)
    scores = stacked_iterative_influence_scores(
        job.unet,
        job.scheduler,
        job.train,
        job.queries,
        basis,
        dampings,
        query_fns=[measurement_output_fn(settings) for settings, _ in groups],
        curvature=method["curvature"],
        ggn_examples=method["ggn_examples"],
        max_iterations=method["max_iterations"],
        tolerance=method["tolerance"],
        train_draws=GradientDraws.of(method["train_draws"], method.get("gradient_draws")),
        query_draws=GradientDraws.of(method["query_draws"], method.get("gradient_draws")),
        seed=method["seed"],
        modules=method["modules"],
        budget_bytes=job.budget_bytes,
        draws_per_pass=job.draws_per_pass,
        budget_setting=job.budget_setting,
    )
    return dampings, split_by_group(scores, groups)
