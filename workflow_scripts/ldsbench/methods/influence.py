"""K-FAC / EK-FAC influence for many dampings, within a memory budget.

tau(q, i) = SCORE_SIGN (1/N) g_q^T (F + lam I)^{-1} g_i (``scoring``), F the
K-FAC or EK-FAC curvature (``curvature.KroneckerEigenbasis``). Per module,
with R = Q_out^T G Q_in,

    g_q^T (F + lam I)^{-1} g_i = sum_ab R_q[a, b] R_i[a, b] / (E[a, b] + lam),

so the query gradients are rotated once, preconditioned at the smallest
damping, and kept in ``storage`` precision (``quantization.RowStore``:
float64, float32, bfloat16 or int8 per row); each batch of training
gradients is rotated once, and every damping only reweights the rotated
training batch before one [Qc, s] x [s, B] product per module. L dampings cost L products, never L copies of anything of size P.

Peak memory is ``memory.influence_bytes``: Qc P b for the rotated queries
plus one training batch B P 4 and per-module temporaries. When all Q query
gradients do not fit the budget, the queries are scored in chunks of Qc,
and each chunk recomputes the training gradients (``chunks`` times the
training-gradient passes). All measurements are scored together: their
query gradients are stacked (S Q rows) against one stream of training
gradients. Chunking changes no score: every gradient's
draws are keyed by its image's content.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ldsbench.attribution.curvature import KroneckerEigenbasis
from ldsbench.attribution.quantization import RowStore
from ldsbench.attribution.scoring import SCORE_SIGN, stacked_query_gradient_batches, training_gradient_batches
from ldsbench.diffusion.model import selected_module_names
from ldsbench.diffusion.noise import GradientDraws, as_gradient_draws
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.planning.footprint import footprint_of
from ldsbench.planning.memory import choose_influence_chunking, method_sizes
from ldsbench.spec.measurement_types import query_output_groups, split_by_group
from ldsbench.spec.method_types import scored_values

log = logging.getLogger(__name__)


class RotatedQueryGradients:
    """Query gradients in each module's Kronecker eigenbasis, preconditioned
    at the smallest damping lam_0: ``R_q / (E + lam_0)``, one ``RowStore`` per
    module, ``[Qc, d_out * d_in]`` in ``storage`` precision. Another damping
    lam >= lam_0 multiplies by ``(E + lam_0) / (E + lam) <= 1``, so rounding
    errors of the stored values are never amplified by small eigenvalues (as
    the paper quantises preconditioned query gradients)."""

    def __init__(self, basis: KroneckerEigenbasis, modules: list[str], n_queries: int, storage: str, reference_damping: float, device):
        self.basis, self.reference = basis, reference_damping
        self.columns = {name: columns for name, columns in basis.module_slices() if name in modules}
        self.stores = {name: RowStore(n_queries, c.stop - c.start, storage, device) for name, c in self.columns.items()}

    def put(self, rows: slice, grads: torch.Tensor) -> None:
        """Rotate, precondition and store flat query gradients ``grads`` [len(rows), P]."""
        for name, columns in self.columns.items():
            rotated = self.basis.rotate(name, grads[:, columns])
            self.stores[name].put(rows, rotated * self.basis.inverse_eigenvalues(name, self.reference, rotated.device))

    def scores(self, train_grads: torch.Tensor, dampings: list[float]) -> torch.Tensor:
        """[L, Qc, B] float64: g_q^T (F + lam)^-1 g_i for the stored queries
        and flat training gradients ``train_grads`` [B, P]."""
        n_queries = next(iter(self.stores.values())).values.shape[0]
        out = torch.zeros(len(dampings), n_queries, len(train_grads), dtype=torch.float64, device=train_grads.device)
        for name, columns in self.columns.items():
            store = self.stores[name]
            queries = store.read()
            rotated = self.basis.rotate(name, train_grads[:, columns])
            shifted = self.basis.eigenvalues[name].to(rotated.device).reshape(-1) + self.reference
            for index, damping in enumerate(dampings):
                weighted = rotated * (shifted * self.basis.inverse_eigenvalues(name, damping, rotated.device))
                out[index] += (queries @ weighted.to(store.compute_dtype).T).to(torch.float64)
        return out


def influence_scores(unet, scheduler, train_images, queries, basis: KroneckerEigenbasis, dampings, *, measurement, **settings) -> np.ndarray:
    """K-FAC/EK-FAC influence for one measurement: [L, Q, N] float32
    (``stacked_influence_scores`` with one output function)."""
    return stacked_influence_scores(unet, scheduler, train_images, queries, basis, dampings, query_fns=[measurement_output_fn(measurement)], **settings)


def stacked_influence_scores(
    unet,
    scheduler,
    train_images,
    queries,
    basis: KroneckerEigenbasis,
    dampings,
    *,
    query_fns: list,
    train_draws: int | GradientDraws,
    query_draws: int | GradientDraws,
    seed: int,
    modules: str | None = None,
    storage: str = "float64",
    budget_bytes: int | None = None,
    batch_examples: int = 32,
    draws_per_pass: int = 64,
    budget_setting: str = "runtime.memory_gb",
) -> np.ndarray:
    """K-FAC/EK-FAC influence for every damping in one pass: [L, S Q, N]
    float32, row s Q + q the query q under output function ``query_fns[s]``
    (one per measurement; the training gradients are shared by all S).

    ``modules`` (a regular expression of module names, ``model.selected_module_names``)
    restricts the attribution to those layers' weights: K-FAC is
    block-diagonal over modules, so this is exactly the influence of those
    weights alone, from the same factors. ``storage`` is the precision the
    rotated query gradients are kept in; ``budget_bytes`` (None: no limit)
    decides the query chunk and training batch (``memory.choose_influence_chunking``),
    a chunk being rows of the S Q stacked queries.
    """
    dampings = [float(d) for d in dampings]
    n_rows, n_train = len(query_fns) * len(queries), len(train_images)
    device = train_images.device
    names = selected_module_names(unet, modules, prefix="unet.")
    if budget_bytes is None:
        chunk, batch = n_rows, batch_examples
    else:
        sizes = method_sizes(
            footprint_of(unet), "influence", min(draws_per_pass, max(as_gradient_draws(train_draws).count, as_gradient_draws(query_draws).count))
        )
        plan = choose_influence_chunking(
            budget_bytes,
            queries=n_rows,
            batch_examples=min(batch_examples, n_train),
            setting=budget_setting,
            train=n_train,
            values=len(dampings),
            storage=storage,
            **sizes,
        )
        chunk, batch = plan.queries_per_chunk, plan.batch_examples
        log.info(
            "influence: %d quer%s per chunk (%d chunks), %d training examples per batch, estimated peak %.2f GiB",
            chunk,
            "y" if chunk == 1 else "ies",
            plan.chunks,
            batch,
            plan.peak_bytes / 2**30,
        )
    scores = np.zeros((len(dampings), n_rows, n_train), dtype=np.float64)
    for first in range(0, n_rows, chunk):
        rows = range(first, min(first + chunk, n_rows))
        store = RotatedQueryGradients(basis, names, len(rows), storage, min(dampings), device)
        for block_rows, grads in stacked_query_gradient_batches(
            unet, scheduler, queries, query_fns, rows, query_draws, seed, batch, draws_per_pass=draws_per_pass
        ):
            store.put(block_rows, grads)
            del grads  # before the next block is built (``gradients.iter_example_gradients``)
        for train_rows, grads in training_gradient_batches(unet, scheduler, train_images, "loss", train_draws, seed, batch, draws_per_pass=draws_per_pass):
            scores[:, rows.start : rows.stop, train_rows] = store.scores(grads, dampings).cpu().numpy()
            del grads
    return (SCORE_SIGN * scores / n_train).astype(np.float32)


def score_influence(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: influence`` (``methods``): the default damping
    and its grid, for every measurement from one pass over the training gradients."""
    method = job.method
    dampings = scored_values(method)
    basis = KroneckerEigenbasis.load(job.inputs["curvature"], method["curvature"]["kind"])
    if job.device is not None:
        basis = basis.to(job.device)  # once, not per batch
    groups = query_output_groups(job.measurements)
    scores = stacked_influence_scores(
        job.unet,
        job.scheduler,
        job.train,
        job.queries,
        basis,
        dampings,
        query_fns=[measurement_output_fn(settings) for settings, _ in groups],
        train_draws=GradientDraws.of(method["train_draws"], method.get("gradient_draws")),
        query_draws=GradientDraws.of(method["query_draws"], method.get("gradient_draws")),
        seed=method["seed"],
        modules=method["modules"],
        storage=method["query_storage"],
        budget_bytes=job.budget_bytes,
        draws_per_pass=job.draws_per_pass,
        budget_setting=job.budget_setting,
    )
    return dampings, split_by_group(scores, groups)
