"""EK-FAC influence from kronfluence on the benchmark's full model, written as a score file.

    PYTHONPATH=/tmp/kfpkgs:workflow_scripts .venv/bin/python docs/examples/kronfluence_ekfac.py \
        --results results --config config.yaml --measurement loss --out scores/ekfac_loss.npz

kronfluence's pairwise score is the plain inner product
grad m(q)^T (G + damping I)^-1 grad loss_i (kronfluence/module/linear.py,
``compute_pairwise_score``: no minus sign; positive when including i lowers
m(q)), so the file is ``layout: query_by_train`` ([Q, N]) and
``sign: influence_as_reported``. It is not divided by N (a positive scale the
LDS ignores). Every gradient is a Monte Carlo mean over ``--draws`` (t, eps)
draws per example and query (t uniform, or the measurement's own timestep
proposal, e.g. the ELBO's; independent per example, the authors' ``uniform``
layout). The EK-FAC fit takes ``--fit-draws`` draws per training example,
each draw one data point, with Monte Carlo targets (kronfluence's true Fisher).
"""

import argparse
import math
import time

import numpy as np
import torch
import yaml
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments, ScoreArguments
from kronfluence.task import Task
from torch import nn
from torch.utils.data import TensorDataset

from ldsbench.data.image_sets import load_image_set, to_unit_range
from ldsbench.diffusion.outputs import noised, per_draw_output, simplified_loss, timestep_probabilities
from ldsbench.diffusion.precision import network_forward
from ldsbench.measurement.estimators import measurement_output_fn
from ldsbench.runtime.fingerprints import folder_fingerprint
from ldsbench.runtime.jobs import load_model
from ldsbench.spec.datasets import dataset_type
from ldsbench.spec.measurement_types import measurement_type


class WeightOnly(nn.Module):
    """A Linear or Conv2d split into a bias-free layer (what kronfluence tracks)
    and its bias, added after: the benchmark attributes weights only, while
    kronfluence would fold the bias into the same Kronecker factor."""

    def __init__(self, layer):
        super().__init__()
        self.bias, self.conv = layer.bias, isinstance(layer, nn.Conv2d)
        layer.register_parameter("bias", None)
        self.layer = layer  # kronfluence replaces it with its TrackedModule

    def forward(self, x):
        y = self.layer(x)
        return y + (self.bias.view(-1, 1, 1) if self.conv else self.bias)


def weights_only(model):
    for name, module in list(model.named_modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, WeightOnly(module))
    return model


def rows(batch):
    """(x0, eps, t) one row per draw; a scoring batch holds [B, D] draws per example."""
    x0, eps, t = batch
    if eps.dim() == x0.dim() + 1:  # grouped: x0 [B, C, H, W], eps [B, D, C, H, W], t [B, D]
        x0, eps, t = x0.repeat_interleave(eps.shape[1], 0), eps.flatten(0, 1), t.flatten()
    return x0, eps, t


class DiffusionTask(Task):
    """Train loss: the simplified diffusion loss (mean over pixels of the eps
    error) summed over draws; measurement: the per-draw output function of a
    benchmark measurement summed over draws. When scoring, ``group`` (draws
    per example) is set and each example's per-draw gradients are averaged
    (passes of one forward, as the ELBO's two, summed): the gradient of the
    Monte Carlo mean, as the benchmark's influence uses it."""

    enable_post_process_per_sample_gradient = True

    def __init__(self, scheduler, measurement_fn):
        self.scheduler, self.measurement_fn, self.group, self.examples = scheduler, measurement_fn, None, None

    def compute_train_loss(self, batch, model, sample=False):
        x0, eps, t = rows(batch)
        self.examples = len(batch[0])
        if not sample:
            return simplified_loss(model, self.scheduler, x0, eps, t).sum()
        # True Fisher: targets y ~ N(pred, D/2) give E[grad grad^T] = J^T (2/D) J, the GGN of this loss.
        pred = network_forward(model, noised(self.scheduler, x0, eps, t), t)
        y = pred.detach() + math.sqrt(pred[0].numel() / 2) * torch.randn_like(pred)
        return (pred - y).pow(2).flatten(1).mean(1).sum()

    def compute_measurement(self, batch, model):
        x0, eps, t = rows(batch)
        self.examples = len(batch[0])
        return per_draw_output(model, self.scheduler, x0, eps, t, self.measurement_fn).sum()

    def post_process_per_sample_gradient(self, module_name, gradient):
        if self.group is None:  # the fit: every draw is a data point
            return gradient
        grouped = gradient.view(-1, self.examples, self.group, *gradient.shape[1:])  # [passes, B, D, ...]
        return grouped.sum(0).mean(1)


def draws(images, count, scheduler, output_fn, generator):
    """eps [N, count, C, H, W] and t [N, count]: t from the output function's proposal (uniform if none)."""
    probs = timestep_probabilities(output_fn, scheduler)
    probs = torch.full((scheduler.config.num_train_timesteps,), 1.0) if probs is None else probs.float()
    t = torch.multinomial(probs, len(images) * count, replacement=True, generator=generator).view(len(images), count)
    return torch.randn((len(images), count, *images.shape[1:]), generator=generator), t


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--config", default="config.yaml", help="for the measurement's settings")
    parser.add_argument("--measurement", default="loss", help="a name in the config's measurements")
    parser.add_argument("--out", required=True)
    parser.add_argument("--damping", type=float, default=1e-8, help="absolute; kronfluence's default, also the benchmark's untuned value")
    parser.add_argument("--draws", type=int, default=64, help="(t, eps) draws per training example and query for gradients")
    parser.add_argument("--fit-draws", type=int, default=8, help="draws per training example for the EK-FAC fit")
    parser.add_argument("--with-biases", action="store_true", help="kronfluence's default: track biases too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/kf_influence_results")
    args = parser.parse_args()
    torch.manual_seed(args.seed)  # kronfluence's sampled Fisher targets use the global generator
    start = time.time()

    config = yaml.safe_load(open(args.config))
    entry = dict(config["measurements"][args.measurement])
    if measurement_type(entry["type"]).needs_levels and "levels" not in entry:
        entry["levels"] = dataset_type(config["dataset"]["name"]).levels  # as the workflow fills it in
    measurement_fn = measurement_output_fn(entry)

    unet, scheduler, _ = load_model(f"{args.results}/models/full")
    train = torch.from_numpy(to_unit_range(load_image_set(f"{args.results}/data/train.npz").images))
    with np.load(f"{args.results}/queries/queries.npz") as data:
        queries = torch.from_numpy(to_unit_range(data["images"]))

    task = DiffusionTask(scheduler, measurement_fn)
    model = prepare_model(unet if args.with_biases else weights_only(unet), task)
    analyzer = Analyzer("ldsbench", model, task, cpu=True, output_dir=args.workdir, disable_tqdm=True)

    g = torch.Generator().manual_seed(args.seed)
    fit_eps, fit_t = draws(train, args.fit_draws, scheduler, "loss", g)
    fit_set = TensorDataset(train.repeat_interleave(args.fit_draws, 0), fit_eps.flatten(0, 1), fit_t.flatten())
    factors = f"ekfac_fit{args.fit_draws}_seed{args.seed}" + ("_biases" if args.with_biases else "")
    factor_args = FactorArguments(
        strategy="ekfac", activation_covariance_dtype=torch.float64, gradient_covariance_dtype=torch.float64, lambda_dtype=torch.float64
    )
    analyzer.fit_all_factors(factors, fit_set, per_device_batch_size=256, factor_args=factor_args, overwrite_output_dir=True)

    task.group = args.draws  # from here on, gradients are per example and query
    train_set = TensorDataset(train, *draws(train, args.draws, scheduler, "loss", g))
    query_set = TensorDataset(queries, *draws(queries, args.draws, scheduler, measurement_fn, g))
    score_args = ScoreArguments(
        damping_factor=args.damping, per_sample_gradient_dtype=torch.float64, precondition_dtype=torch.float64, score_dtype=torch.float64
    )
    analyzer.compute_pairwise_scores(
        "pairwise",
        factors,
        query_set,
        train_set,
        per_device_query_batch_size=len(queries),
        per_device_train_batch_size=4,
        score_args=score_args,
        overwrite_output_dir=True,
    )
    scores = analyzer.load_pairwise_scores("pairwise")["all_modules"].double().numpy()
    assert scores.shape == (len(queries), len(train)) and np.isfinite(scores).all()

    # kronfluence's orientation, as reported: the config says sign: influence_as_reported.
    np.savez(args.out, scores=scores.astype(np.float32), benchmark=np.array(folder_fingerprint(args.results)))
    print(f"{args.out}: [{scores.shape[0]}, {scores.shape[1]}] scores, {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
