"""Methods from the user's own file (``type: external``; docs/external-methods.md).

The file defines a function (``scorer``, default ``score``) that takes one
argument, a ``MethodInputs``, and returns either

- ``{measurement: tau [Q, N]}``: one score matrix per measurement, or
- ``(values, {measurement: tau [L, Q, N]})``: the scores of ``L`` values of
  its own hyperparameter, the untuned default first; the benchmark tunes
  over them by cross-fitting, like any built-in method's grid.

tau is in the benchmark's orientation (``attribution.scoring``): tau(q, i)
predicts m(with i) - m(without i). ``MethodInputs`` is the stable interface:
what built-in scorers use (the full model and scheduler, the training images
and queries, each measurement's per-draw output function, per-example
gradients, the random projector, the ridge solver, the curvature and other
declared inputs, the memory budget, the device), under names that do not
follow the package's internals.

After the scorer returns, wrong shapes, a wrong set of measurements, values
that do not match the grid and NaN or infinite scores stop the job with a
message naming the method.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ldsbench.attribution.curvature import KroneckerEigenbasis
from ldsbench.attribution.projection import RandomProjector
from ldsbench.attribution.ridge import GramSpectrum
from ldsbench.attribution.scoring import SCORE_SIGN, query_gradient_batches, training_gradient_batches
from ldsbench.diffusion.model import attributed_parameters
from ldsbench.diffusion.noise import GradientDraws
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.methods.trak import trak_kernel_scores
from ldsbench.runtime.jobs import load_model
from ldsbench.spec.measurement_types import orientation_of


class ExternalMethodError(RuntimeError):
    """An external method's file or its returned scores cannot be used."""


@dataclass
class MethodInputs:
    """What an external scorer receives. Attributes:

    - ``name``: the method's name in the config; ``params``: its ``params`` block;
    - ``unet``, ``scheduler``: the full model (diffusers ``UNet2DModel``, EMA
      weights, eval mode) and its ``DDPMScheduler``;
    - ``train`` [N, C, H, W] and ``queries`` [Q, C, H, W]: float32 in [-1, 1]
      (latents for a latent model), on ``device``;
    - ``measurements``: the measurement names to score, in order;
    - ``device``; ``budget_bytes``: memory the job may use on it (None: no limit);
    - ``benchmark``: the fingerprint of the benchmark scored;
    - ``training``: the full model's training settings (with ``needs: [training]``);
    - ``trajectory``: the folder of the full model's replayed training (with
      ``needs: [trajectory]``: ``trajectory.json`` and ``step_{k}.pt`` checkpoints).

    Methods: ``output_function``, ``orientation``, ``query_gradients``, ``training_gradients``,
    ``num_params``, ``projector``, ``ridge_scores``, ``curvature``,
    ``ensemble_models``; ``SCORE_SIGN`` is the sign that turns an inner
    product grad m^T H^-1 grad loss into the benchmark's orientation.
    """

    name: str
    params: dict
    unet: torch.nn.Module
    scheduler: object
    train: torch.Tensor
    queries: torch.Tensor
    measurements: list[str]
    device: torch.device
    budget_bytes: int | None
    benchmark: str | None
    training: dict | None
    trajectory: Path | None
    _gradient_settings: dict
    _method: dict
    _inputs: dict
    _draws_per_pass: int = 64

    SCORE_SIGN = SCORE_SIGN

    def output_function(self, measurement: str):
        """The per-draw output function whose mean over (t, eps) draws is
        measurement ``measurement`` (for ``log_likelihood``, its ELBO
        surrogate): its gradient is the measurement's query gradient."""
        return measurement_output_fn(self._gradient_settings[measurement])

    def orientation(self, measurement: str) -> str:
        """Whether lower or higher values of ``measurement`` are better, or
        neither (``spec.measurement_types``): what a similarity needs to
        become a score (``methods.similarity.similarity_sign``)."""
        return orientation_of(self._gradient_settings[measurement])

    def num_params(self) -> int:
        """P: the number of attributed weights (every Linear and Conv2d weight)."""
        return sum(p.numel() for p in attributed_parameters(self.unet))

    def query_gradients(
        self, measurement: str, draws: int, seed: int = 0, *, layout: dict | None = None, batch: int = 32
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Stream of (rows, [B, P]) gradients of each query's measurement,
        averaged over ``draws`` (t, eps) draws laid out by ``layout`` (a
        ``gradient_draws`` block: timesteps, antithetic, common; None:
        independent uniform draws). Memory: one [B, P] block at a time; drop
        it (``del``) before asking for the next."""
        return query_gradient_batches(
            self.unet,
            self.scheduler,
            self.queries,
            self.output_function(measurement),
            GradientDraws.of(draws, layout),
            seed,
            batch,
            draws_per_pass=self._draws_per_pass,
        )

    def training_gradients(
        self, draws: int, seed: int = 0, *, output="loss", layout: dict | None = None, batch: int = 32
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """Stream of (rows, [B, P]) gradients of each training example's
        ``output`` (a name of ``diffusion.outputs.NAMED_OUTPUTS``, default
        the training loss, or an output function), averaged over ``draws``."""
        return training_gradient_batches(
            self.unet, self.scheduler, self.train, output, GradientDraws.of(draws, layout), seed, batch, draws_per_pass=self._draws_per_pass
        )

    def projector(self, dim: int, seed: int = 0, kind: str = "rademacher") -> RandomProjector:
        """A random projection of [B, P] gradients to [B, dim] (``projector.project``)."""
        return RandomProjector(self.num_params(), dim, seed, kind, device=self.device)

    @staticmethod
    def ridge_scores(query_features: torch.Tensor, train_features: torch.Tensor, lambdas: Sequence[float], lambda_scale: str = "absolute") -> np.ndarray:
        """[L, Q, N] float64 kernel values q^T (Phi^T Phi + lambda I)^-1 phi_i
        for every lambda (TRAK's solve, one eigendecomposition for all),
        with no sign applied; ``lambda_scale: mean_eigenvalue`` reads lambdas
        in units of trace(Phi^T Phi) / k."""
        return trak_kernel_scores(query_features, train_features, lambdas, lambda_scale=lambda_scale).cpu().numpy()

    @staticmethod
    def gram_spectrum(train_features: torch.Tensor) -> GramSpectrum:
        """The eigendecomposition of Phi^T Phi (``attribution.ridge.GramSpectrum``), to solve with your own lambdas."""
        return GramSpectrum.from_features(train_features)

    def curvature(self) -> KroneckerEigenbasis:
        """The K-FAC or EK-FAC fit of the method's ``curvature`` block (with
        ``needs: [curvature]``): ``.solve(grads [B, P], damping)`` gives
        (F + damping I)^-1 g per row."""
        if "curvature" not in self._inputs:
            raise ExternalMethodError(f"method {self.name}: curvature() needs `needs: [curvature]` in its config entry")
        return KroneckerEigenbasis.load(self._inputs["curvature"], self._method["curvature"]["kind"]).to(self.device)

    def ensemble_models(self) -> list[tuple[torch.nn.Module, object]]:
        """(unet, scheduler) of the full-data models of training seeds 1 ..
        models - 1 (with ``needs: [ensemble]``), loaded on ``device``."""
        if not self._inputs.get("ensemble"):
            raise ExternalMethodError(f"method {self.name}: ensemble_models() needs `needs: [ensemble]` and models >= 2 in its config entry")
        return [load_model(path, self.device)[:2] for path in self._inputs["ensemble"]]


def load_scorer(path, function: str, name: str):
    """The scorer ``function`` of the user's file ``path``; the file's folder
    is put first on ``sys.path`` so that it can import its own modules."""
    path = Path(path).resolve()
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"ldsbench_external_{name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scorer = getattr(module, function, None)
    if not callable(scorer):
        raise ExternalMethodError(f"method {name}: {path} has no function {function!r}")
    return scorer


def method_inputs(job) -> MethodInputs:
    """The ``MethodInputs`` of a scoring job (``spec.method_types.ScoringJob``)."""
    trajectory = job.inputs.get("trajectory")
    return MethodInputs(
        name=job.name,
        params=dict(job.method["params"]),
        unet=job.unet,
        scheduler=job.scheduler,
        train=job.train,
        queries=job.queries,
        measurements=list(job.measurements),
        device=job.device if job.device is not None else torch.device("cpu"),
        budget_bytes=job.budget_bytes,
        benchmark=job.benchmark,
        training=job.training,
        trajectory=None if trajectory is None else Path(trajectory),
        _gradient_settings=dict(job.measurements),
        _method=job.method,
        _inputs=job.inputs,
        _draws_per_pass=job.draws_per_pass,
    )


def checked_scores(returned, name: str, measurements: list[str], n_queries: int, n_train: int) -> tuple[list[float], dict[str, np.ndarray]]:
    """A scorer's return value as (values, {measurement: [L, Q, N] float32}),
    or an ``ExternalMethodError`` naming the method and what is wrong."""
    if isinstance(returned, tuple) and len(returned) == 2:
        values, scores, stacked = [float(v) for v in np.asarray(returned[0], dtype=np.float64).ravel()], returned[1], True
    else:
        values, scores, stacked = [float("nan")], returned, False
    if not isinstance(scores, dict):
        raise ExternalMethodError(
            f"method {name}: the scorer returned {type(scores).__name__}; expected {{measurement: scores}} or (values, {{measurement: scores}})"
        )
    if sorted(scores) != sorted(measurements):
        raise ExternalMethodError(f"method {name}: the scorer returned scores for {sorted(scores)}; expected every measurement, {sorted(measurements)}")
    if stacked and (not values or len(set(values)) != len(values)):
        raise ExternalMethodError(f"method {name}: values {values} must be one or more distinct numbers, the untuned default first")
    checked = {}
    for measurement in measurements:
        array = scores[measurement]
        array = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
        expected = (len(values), n_queries, n_train) if stacked else (n_queries, n_train)
        if array.shape != expected:
            layout = "[L, Q, N]" if stacked else "[Q, N]"
            raise ExternalMethodError(f"method {name}, measurement {measurement}: scores of shape {list(array.shape)}; expected {layout} = {list(expected)}")
        with np.errstate(over="ignore"):  # an overflow is reported below
            array = (array if stacked else array[None]).astype(np.float32)
        if not np.isfinite(array).all():
            raise ExternalMethodError(f"method {name}, measurement {measurement}: {int((~np.isfinite(array)).sum())} scores are NaN or infinite (in float32)")
        checked[measurement] = array
    return values, checked


def score_external(job) -> tuple[list[float], dict[str, np.ndarray]]:
    """Scorer of ``type: external``: the user's function, its result checked."""
    method = job.method
    scorer = load_scorer(method["path"], method["scorer"], job.name)
    returned = scorer(method_inputs(job))
    return checked_scores(returned, job.name, list(job.measurements), len(job.queries), len(job.train))
