"""DAS, the Diffusion Attribution Score (Lin, Tao, Dong and Xu, "Diffusion
Attribution Score: Evaluating Training Data Influence in Diffusion Models",
ICLR 2025, arXiv:2410.18639; code github.com/Jinxu-Lin/DAS). The
``jacobian`` output below is the paper's derivation (Sec. 4: KL divergence,
linearised noise predictor, one Newton step) in this package's notation; the
scalar outputs follow the authors' scoring scripts (their DAS1 / DAS1squ:
D-TRAK's kernel times a training residual, squared or not).

What DAS measures
-----------------
DAS compares the model's *predicted distributions* with and without training
example i, not its loss. With a fixed reverse variance sigma_t^2, the KL
divergence between the reverse Gaussians p_theta(x_{t-1} | x_t) of the model
trained with i (theta*) and without i (theta_\\i) is

    KL_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)) ||eps_theta*(x_t, t) - eps_theta_\\i(x_t, t)||^2,

so, as the paper does (like the simplified loss), DAS drops the per-timestep
weight and averages over t ~ U{0..T-1} and eps ~ N(0, I) of the query's x_t:

    DAS(q, i) = E_{t, eps} (1/D) ||eps_theta*(x_t^q, t) - eps_theta_\\i(x_t^q, t)||^2

(per pixel, D = C H W, like every squared error in this package).

Linearisation (the paper's derivation)
--------------------------------------
The noise predictor is linearised around theta*,
eps_theta(x, t) ~ eps_theta*(x, t) + J(x, t) (theta - theta*) with the
output Jacobian J = d eps_theta / d theta ([D, P], attributed weights), and
theta* - theta_\\i comes from one Newton step on the linearised least-squares
problem (a Gauss-Newton H built from output Jacobians, as in TRAK):

    G        = sum_i E_d J_{i,d}^T J_{i,d}                        [P, P]
    psi_i    = E_d J_{i,d}^T r_{i,d},  r_{i,d} = eps_d - eps_theta*(x_t^{i,d}, t_d)    [P]
    dtheta_i = theta* - theta_\\i = (G + lambda I)^{-1} psi_i
    delta_q(i) = J_q dtheta_i                                     [D] per query draw
    DAS(q, i)  = E_d (1/D) ||J_{q,d} dtheta_i||^2

with d running over (t, eps) draws. The constants are exact for this
package's objective L = (1/N) sum_i loss_i (loss per pixel): its GGN is
F = 2 G / (N D) and J^T r = -(D/2) grad loss, so dtheta_i =
SCORE_SIGN (1/N) F^{-1} grad loss_i, the parameter change behind the
influence defined in docs/definitions.md; ``lambda`` is added to G, i.e. an
absolute lambda = (N D / 2) x an influence damping (``lambda_scale:
mean_eigenvalue``: a multiple of trace(G) / k). Every per-example quantity
is an average over that example's draws (``train_draws`` /
``query_draws``: the paper's "number of timesteps"). The draws are laid out
by ``noise.GradientDraws``: by default as the authors do, fixed evenly
spaced timesteps with one noise per timestep for every example and query
(``fixed_common``); the Jacobian rows, the loss gradient and the residual
of an example share the same draws.

Choices made here (the paper leaves them open or the authors' code differs):

- No leverage correction. The exact leave-one-out of the linearised problem
  has (I - J_i G^{-1} J_i^T)^{-1} r_i in place of r_i (Sherman-Morrison /
  Woodbury); like TRAK and D-TRAK this factor is dropped (it tends to I when
  N is large against the feature dimension).
- Random projection as in TRAK: theta = theta* + R w with the package's
  ``projection.RandomProjector`` R [P, k]; G, psi and J_q are replaced by
  R^T G R, R^T psi and J_q R. ``projection_dim: None`` is the exact,
  unprojected formula (then every Jacobian row is held in memory: tiny
  models only).
- Projected Jacobians by vector-Jacobian products. J^T J is never formed:
  for S output directions v per draw, the rows J^T v (gradients of
  <v, eps_theta(x_t, t)>) are projected and summed as outer products,
  (1/S) sum_s (R^T J^T v_s)(R^T J^T v_s)^T. With ``output_directions: None``
  the v are the D standard basis vectors (S = D, no 1/S), which is exact;
  with an integer S <= D they are sqrt(D) times S random orthonormal
  vectors: an unbiased estimate of J^T J that is exact at S = D. The same
  holds for the query's ||J_q R u||^2. The estimate of G is unbiased, its
  inverse is not: keep N * train_draws * S well above k. psi uses the exact
  residual direction: it is SCORE_SIGN (D/2) times the projected loss
  gradient of ``gradients.iter_example_gradients`` on the same draws.
- The Gram matrix sums outer products of per-draw rows (a Gauss-Newton
  matrix); it does not multiply draw-averaged features as TRAK does.

Cost (per scoring job): training side N * train_draws forward passes and
N * train_draws * S vector-Jacobian products (batched with ``torch.func``),
plus N * train_draws * (S + 1) projections of a P-vector to k dims
(P k flops each) and one k x k eigendecomposition; the distance form adds the
same for Q * query_draws * S query rows and L * Q * query_draws * S * k * N
flops to score. The projections dominate (P k = 375M multiply-adds per row
on the default 8x8 model, P = 183k, k = 2048, against about 70M for a
vector-Jacobian product). Memory: the k x k Gram matrix,
``rows_per_projection`` x P floats of unprojected rows, the projection
matrix (cached up to ``projection_cache_bytes``), Q * query_draws * S * k
projected query rows. Measured on that model on one busy CPU core: N = 16,
Q = 4, 16 draws, S = 8, k = 2048 took 39 s (distance) and 31 s (signed),
linear in N * train_draws * S and Q * query_draws * S. Exact directions
cost D products per draw (64 on 8x8 digits, 3072 on 32x32 RGB); random
directions (S = 4 to 16) keep 32x32 images tractable.

The cheaper variants of the authors
-----------------------------------
``output: "squared_norm"`` or ``"mean"`` compresses the output to one scalar
per draw before differentiating, as D-TRAK does (the authors' scripts use
the mean over pixels of eps_theta, ``mean``, and D-TRAK's squared norm):
features phi = R^T E_d grad f are draw-averaged projected gradients, the
Gram matrix is Phi^T Phi (TRAK's kernel, ``trak.trak_kernel_scores``), and
the residual is the scalar r_i = E_d sqrt(mean over pixels of
(eps - eps_theta)^2) (the authors' "error", a root-mean-square residual):

    raw(q, i) = phi_q^T (Phi^T Phi + lambda I)^{-1} phi_i r_i,
    distance: DAS(q, i) = raw(q, i)^2,    signed: raw(q, i).

Query features use the same scalar output, whatever the measurement (as
D-TRAK). The authors' further accelerations (unit-normalising per-timestep
gradients, model compression, screening candidates by CLIP similarity) are
not reproduced.

Orientation: which measurement the score predicts
-------------------------------------------------
The package's tau(q, i) predicts m(with i) - m(without i) (positive:
including i raises m(q)). Two forms are offered (``form``):

- ``"distance"`` (the paper's score): DAS >= 0 is a squared distance. It says
  how much including i moves the query's predicted noise, not in which
  direction any loss moves, and it does not depend on the measurement.
  Following the authors' own LDS evaluation (they rank subsets by
  -sum DAS against the query's simplified loss, as for TRAK scores) it is
  mapped as tau = SCORE_SIGN * DAS: a larger DAS predicts a larger decrease
  of m(q) when i is included. That is meaningful for lower-is-better
  measurements (``loss``, ``simplified_elbo``); on higher-is-better ones
  (``elbo``, ``log_likelihood``) it predicts the wrong direction by design,
  and a negative LDS there is no sign error (as for D-TRAK).
- ``"signed"``: the signed first-order change of the measurement under the
  same parameter change, tau(q, i) = grad m(q)^T dtheta_i (projected), with
  grad m(q) the gradient of the measurement's per-draw output function
  (``measurement.measurement_output_fn``). With exact directions and no
  projection it equals the influence defined in docs/definitions.md with the exact
  GGN in place of K-FAC. For the scalar outputs, ``signed`` is the unsquared
  raw(q, i) mapped as tau = SCORE_SIGN * raw (the D-TRAK convention); it
  ignores the measurement.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ldsbench.attribution.gradients import iter_example_gradients
from ldsbench.attribution.jacobians import jacobian_row_chunks
from ldsbench.attribution.projection import RandomProjector
from ldsbench.attribution.ridge import LAMBDA_SCALES, check_lambdas, fit_ridge_solver
from ldsbench.attribution.scoring import SCORE_SIGN
from ldsbench.diffusion.model import attributed_modules
from ldsbench.diffusion.noise import GradientDraws, as_gradient_draws, content_key
from ldsbench.diffusion.outputs import MeanOutput, noised, output_key
from ldsbench.diffusion.precision import network_forward
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.methods.trak import trak_kernel_scores
from ldsbench.spec.measurement_types import query_output_groups, same_for_every_measurement
from ldsbench.spec.method_types import query_follows_measurement, scored_values
from ldsbench.spec.schema import defs_enum

log = logging.getLogger(__name__)

__all__ = [
    "FORMS",
    "OUTPUTS",
    "das_scores",
    "query_stream",
    "rms_residuals",
    "train_stream",
]

#: Its output functions and score forms (the schema's ``das_method`` block).
OUTPUTS = defs_enum("das_method", "output")
FORMS = defs_enum("das_method", "form")


def _scalar_output(output: str):
    return MeanOutput() if output == "mean" else output


def train_stream(seed: int, output: str = "jacobian", draws: GradientDraws | None = None) -> int:
    """Stream seed of the training draws (Jacobian rows, residuals and loss
    gradients share it, so they use the same (t, eps) draws); with common
    ``draws``, the one stream of every side (``GradientDraws.stream``)."""
    return (draws or GradientDraws(1)).stream(seed, "das_train", output)


def query_stream(seed: int, output_fn, draws: GradientDraws | None = None) -> int:
    """Stream seed of a query's draws for ``output_fn`` ("jacobian" for the
    query Jacobian rows, else a per-draw output function); with common
    ``draws``, the one stream of every side."""
    return (draws or GradientDraws(1)).stream(seed, "das_query", *output_key(output_fn))


def rms_residuals(unet, scheduler, images: torch.Tensor, n_draws: int | GradientDraws, stream: int, batch_size: int = 256) -> torch.Tensor:
    """r_i = E_d sqrt(mean over pixels of (eps_d - eps_theta(x_t, t_d))^2) for images [N, C, H, W]: [N] float64.

    Draws as in ``jacobian_row_chunks`` and ``gradients.iter_example_gradients``
    (``noise.GradientDraws.draws`` keyed by (stream, content key)).
    """
    plan = as_gradient_draws(n_draws)
    n_draws = plan.count
    unet.eval()
    shape, num_timesteps = tuple(images.shape[1:]), scheduler.config.num_train_timesteps
    out = torch.zeros(len(images), dtype=torch.float64)
    with torch.no_grad():
        for row, image in enumerate(images):
            key = content_key(image)
            total = 0.0
            for start in range(0, n_draws, batch_size):
                count = min(batch_size, n_draws - start)
                timesteps, noise = plan.draws(stream, key, start, count, shape, num_timesteps)
                noise, timesteps = noise.to(image.device, image.dtype), timesteps.to(image.device)
                x0 = image.unsqueeze(0).expand(count, *shape)
                prediction = network_forward(unet, noised(scheduler, x0, noise, timesteps), timesteps)
                total += (prediction - noise).pow(2).flatten(start_dim=1).mean(dim=1).sqrt().double().sum().item()
            out[row] = total / n_draws
    return out


def _projected_blocks(chunks: Iterable[tuple[int, torch.Tensor]], projector: RandomProjector, rows_per_projection: int):
    """Concatenate (owner, rows [r, P]) chunks into blocks of at least
    ``rows_per_projection`` rows and project them: yields (owners [R] int64, [R, k] float32)."""
    owners, rows, count = [], [], 0
    for owner, block in chunks:
        owners.append(torch.full((len(block),), owner, dtype=torch.long))
        rows.append(block)
        count += len(block)
        if count >= rows_per_projection:
            yield torch.cat(owners), projector.project(torch.cat(rows))
            owners, rows, count = [], [], 0
    if rows:
        yield torch.cat(owners), projector.project(torch.cat(rows))


def _projected_gradients(batches, projector: RandomProjector) -> torch.Tensor:
    """[N, k] float32 from (rows, [B, P]) gradient batches, holding one batch at a time."""
    features = []
    for _, grads in batches:
        features.append(projector.project(grads))
        del grads  # before the next block is built (``gradients.iter_example_gradients``)
    return torch.cat(features)


def _check_settings(output: str, form: str, directions: int | None, pixels: int, train_draws: int, query_draws: int) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"DAS output {output!r} is not one of: {', '.join(OUTPUTS)}")
    if form not in FORMS:
        raise ValueError(f"DAS form {form!r} is not one of: {', '.join(FORMS)}")
    if directions is not None and (isinstance(directions, bool) or int(directions) != directions or not 1 <= directions <= pixels):
        raise ValueError(f"output_directions must be an int in 1..{pixels} (the output size) or None, got {directions!r}")
    for name, value in (("train_draws", train_draws), ("query_draws", query_draws)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def das_scores(
    unet,
    scheduler,
    train_images: torch.Tensor,
    queries: torch.Tensor,
    lambdas: Sequence[float],
    *,
    measurement="loss",
    output: str = "jacobian",
    form: str = "distance",
    output_directions: int | None = 8,
    projection_dim: int | None,
    projection_seed: int,
    train_draws: int,
    query_draws: int,
    seed: int,
    gradient_draws: dict | None = None,
    lambda_scale: str = "absolute",
    batch_examples: int = 64,
    rows_per_projection: int = 512,
    projection_cache_bytes: int = 2 * 1024**3,
) -> np.ndarray:
    """DAS attribution tau(q, i) for every lambda: [L, Q, N] float32.

    Args:
        train_images: [N, C, H, W]; queries: [Q, C, H, W].
        lambdas: L ridge values >= 0 (added to G, or to Phi^T Phi for the
            scalar outputs); all are scored from one pass over the gradients.
        measurement: a measurement type or settings; only ``form="signed"``
            with ``output="jacobian"`` uses it (the query's gradient).
        output: ``"jacobian"`` (the full noise-prediction output, the paper's
            score), or the scalar ``"mean"`` / ``"squared_norm"`` (the
            authors' cheaper variants).
        form: ``"distance"`` (tau = SCORE_SIGN * DAS) or ``"signed"``
            (tau = first-order change of the measurement); see the module
            docstring.
        output_directions: output directions S <= D per draw (random orthonormal), or
            None for the exact Jacobian (S = D). Only for ``"jacobian"``.
        projection_dim: k, or None for no projection (tiny models only).
        projection_seed: selects the random projection.
        train_draws, query_draws: (t, eps) draws per training example / query.
        seed: selects the draws and output directions.
        gradient_draws: their layout (``noise.GradientDraws``: timesteps,
            antithetic, common); None: uniform. Every per-example quantity
            (Jacobian rows, loss gradient, residual) uses the same draws.
        lambda_scale: ``"absolute"`` (lambdas as given) or ``"mean_eigenvalue"``
            (multiples of trace(G) / k, or trace(Phi^T Phi) / k, as for TRAK).
        batch_examples: examples per gradient block (memory only).
        rows_per_projection: Jacobian rows projected at once (memory and
            speed only).
        projection_cache_bytes: keep the projection matrix in memory up to
            this size (``RandomProjector``'s cache; speed only: every
            projection of a block of rows otherwise regenerates it).

    Scores depend neither on the batch sizes nor on the order of training
    examples or queries (draws are keyed by content).
    """
    pixels = math.prod(train_images.shape[1:])
    _check_settings(output, form, output_directions, pixels, train_draws, query_draws)
    train_draws, query_draws = GradientDraws.of(train_draws, gradient_draws), GradientDraws.of(query_draws, gradient_draws)
    lambdas = check_lambdas(lambdas)
    if lambda_scale not in LAMBDA_SCALES:  # before any gradient is computed
        raise ValueError(f"lambda_scale must be one of {LAMBDA_SCALES}, got {lambda_scale!r}")
    unet.eval()
    num_params = sum(module.weight.numel() for _, module in attributed_modules(unet))
    projector = RandomProjector(num_params, projection_dim, projection_seed, cache_bytes=projection_cache_bytes)
    if output != "jacobian":
        return _scalar_output_scores(
            unet,
            scheduler,
            train_images,
            queries,
            lambdas,
            projector,
            output=output,
            form=form,
            train_draws=train_draws,
            query_draws=query_draws,
            seed=seed,
            batch_examples=batch_examples,
            lambda_scale=lambda_scale,
        )

    stream = train_stream(seed, draws=train_draws)

    # Gauss-Newton matrix G (projected) from the training Jacobian rows.
    blocks = iter(
        block
        for _, block in _projected_blocks(
            jacobian_row_chunks(unet, scheduler, train_images, train_draws, output_directions, stream), projector, rows_per_projection
        )
    )
    solver = fit_ridge_solver(blocks, math.inf if projection_dim is None else projection_dim)
    if lambda_scale == "mean_eigenvalue":
        log.info("G: mean eigenvalue %.4g (the lambda unit)", solver.mean_eigenvalue)
        lambdas = [lam * solver.mean_eigenvalue for lam in lambdas]

    # psi_i = E_d J^T r = SCORE_SIGN (D/2) grad loss_i: theta(with i) - theta(without i) = (G + lambda)^{-1} psi_i.
    loss_grads = _projected_gradients(iter_example_gradients(unet, scheduler, train_images, "loss", train_draws, stream, batch_examples), projector)
    psi = SCORE_SIGN * (pixels / 2) * loss_grads.double()

    if form == "signed":
        query_fn = measurement_output_fn(measurement)
        query_grads = _projected_gradients(
            iter_example_gradients(unet, scheduler, queries, query_fn, query_draws, query_stream(seed, query_fn, query_draws), batch_examples), projector
        ).double()
        tau = torch.stack([query_grads.to(psi.device) @ solver.solve(psi, lam).T for lam in lambdas])
        return tau.cpu().numpy().astype(np.float32)

    # Distance: DAS(q, i) = E_d (1/D) ||J_{q,d} dtheta_i||^2 from the query's Jacobian rows.
    owners, rows = [], []
    chunks = jacobian_row_chunks(unet, scheduler, queries, query_draws, output_directions, query_stream(seed, "jacobian", query_draws))
    for block_owners, block in _projected_blocks(chunks, projector, rows_per_projection):
        owners.append(block_owners)
        rows.append(block)
    rows = torch.cat(rows)
    owners = torch.cat(owners).to(rows.device)
    distances = torch.zeros(len(lambdas), len(queries), len(train_images), dtype=torch.float64)
    for index, lam in enumerate(lambdas):
        solutions = solver.solve(psi, lam)  # [N, k]
        for query in range(len(queries)):
            changes = rows[owners == query].double().to(solutions.device) @ solutions.T  # [rows, N]
            distances[index, query] = changes.square().sum(dim=0).cpu() / pixels
    return (SCORE_SIGN * distances).numpy().astype(np.float32)


def _scalar_output_scores(
    unet, scheduler, train_images, queries, lambdas, projector, *, output, form, train_draws, query_draws, seed, batch_examples, lambda_scale
) -> np.ndarray:
    """The authors' compressed-output variants (module docstring): [L, Q, N] float32."""
    output_fn = _scalar_output(output)
    stream = train_stream(seed, output, train_draws)
    train_features = _projected_gradients(iter_example_gradients(unet, scheduler, train_images, output_fn, train_draws, stream, batch_examples), projector)
    query_features = _projected_gradients(
        iter_example_gradients(unet, scheduler, queries, output_fn, query_draws, query_stream(seed, output_fn, query_draws), batch_examples), projector
    )
    residuals = rms_residuals(unet, scheduler, train_images, train_draws, stream)
    raw = trak_kernel_scores(query_features, train_features, lambdas, lambda_scale=lambda_scale).cpu() * residuals
    scores = raw.square() if form == "distance" else raw
    return (SCORE_SIGN * scores).numpy().astype(np.float32)


def score_das(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: das`` (``methods``): the default lambda and its
    grid. Only the signed Jacobian form depends on the measurement (it is
    scored per measurement group); every other form once for all."""
    method = job.method
    lambdas = scored_values(method)
    settings = dict(
        output=method["output"],
        form=method["form"],
        output_directions=method["output_directions"],
        projection_dim=method["projection_dim"],
        projection_seed=method["seed"],
        train_draws=method["train_draws"],
        query_draws=method["query_draws"],
        seed=method["seed"],
        gradient_draws=method.get("gradient_draws"),
        lambda_scale=method["lambda_scale"],
    )
    if not query_follows_measurement(method):
        return lambdas, same_for_every_measurement(job, das_scores(job.unet, job.scheduler, job.train, job.queries, lambdas, **settings))
    scores = {}
    for measurement, names in query_output_groups(job.measurements):
        group = das_scores(job.unet, job.scheduler, job.train, job.queries, lambdas, measurement=measurement, **settings)
        scores.update({name: group for name in names})
    return lambdas, scores
