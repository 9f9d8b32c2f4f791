"""Is the log-likelihood's ranking of subset models reproducible across
measurement seeds, with and without dequantised training?

    .venv/bin/python benchmarks/likelihood_reproducibility.py
    .venv/bin/python benchmarks/likelihood_reproducibility.py --models 10 --queries 16 --variants draws=4 draws=16 draws=4,probes=4

Trains ``--models`` subset models of the config (each on its own random half
of the training set, ``training.subset_steps`` steps, training seed = model
index) twice: on the exact grey levels and with ``training.dequantise``.
Every model is measured on the first ``--queries`` held-out images with the
config's ``log_likelihood`` settings (``configs/full.yaml``'s entry unless
the config has one) under two measurement seeds, in each of ``--variants``
(settings that replace the entry's, e.g. ``draws=16``, ``t_min=1e-5``,
``probes=4``; ``t_min=none`` is 1 / T, the default), and with the ELBO for
comparison. Printed per (training, measurement):

- bits: mean value over models and queries (bits per dimension);
- stderr: mean Monte Carlo standard error of one value;
- spread: mean over queries of the standard deviation across models (what
  the LDS ranks);
- retest: mean over queries of the Spearman correlation across models
  between the two measurement seeds (1: the ground truth's subset ranking
  does not depend on the measurement's draws).

Models are trained in a scratch folder and removed afterwards.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from scipy.stats import spearmanr

from ldsbench.data.image_sets import load_dataset_split
from ldsbench.diffusion.model import build_scheduler
from ldsbench.diffusion.training import TrainingSettings, train_diffusion_model
from ldsbench.measurement.estimators import estimate
from ldsbench.spec.config import DATASET_LEVELS, validate_config

ROOT = Path(__file__).resolve().parents[1]


def retest(first: np.ndarray, second: np.ndarray) -> float:
    """Mean over queries of Spearman's rho across models, [models, Q] each."""
    return float(np.nanmean([spearmanr(first[:, q], second[:, q])[0] for q in range(first.shape[1])]))


def parse_variant(text: str) -> dict:
    """``"draws=16,t_min=none"`` -> ``{"draws": 16, "t_min": None}``."""
    settings = dict(item.split("=", 1) for item in text.split(","))
    return {key: None if value == "none" else yaml.safe_load(value) if key != "t_min" else float(value) for key, value in settings.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=ROOT / "config.yaml", type=Path)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trainings", nargs="+", default=["exact", "dequantised"], choices=["exact", "dequantised"])
    parser.add_argument("--variants", nargs="+", default=["draws=4", "draws=4,t_min=1e-5"], help="key=value,... settings of log_likelihood")
    args = parser.parse_args()

    config = validate_config(yaml.safe_load(args.config.read_text()))
    full = yaml.safe_load((ROOT / "configs" / "full.yaml").read_text())["measurements"]["log_likelihood"]
    likelihood = next((m for m in config["measurements"].values() if m["type"] == "log_likelihood"), full)
    levels = DATASET_LEVELS[config["dataset"]["name"]]
    likelihood = {**likelihood, "levels": levels, "queries_per_solve": args.queries}
    elbo = {"type": "elbo", "draws": 128, "strata": 16, "levels": levels}
    train, heldout = load_dataset_split(config["dataset"])
    queries = torch.from_numpy(heldout.images[: args.queries])
    images = torch.from_numpy(train.images)
    scheduler = build_scheduler(config["model"]["scheduler"])
    half = round(config["benchmark"]["fraction"] * len(train))
    torch.set_num_threads(args.threads)

    measurements = {f"log_likelihood {variant}": {**likelihood, **parse_variant(variant)} for variant in args.variants}
    measurements["elbo"] = elbo
    print(f"{args.models} models per training, {args.queries} held-out queries; {likelihood}")
    print(f"{'training':<12} {'measurement':<34} {'bits':>8} {'stderr':>8} {'spread':>8} {'retest':>7} {'s/model':>8}")
    for training in args.trainings:
        extra = {"dequantise": True, "levels": levels} if training == "dequantised" else {}
        values = {name: {seed: [] for seed in (0, 1)} for name in measurements}
        errors = {name: [] for name in measurements}
        seconds = {name: 0.0 for name in measurements}
        with tempfile.TemporaryDirectory() as scratch:
            for model in range(args.models):
                rows = np.sort(np.random.default_rng(model).permutation(len(train))[:half])
                settings = TrainingSettings.from_config(config["training"], steps=config["training"]["subset_steps"], seed=model, **extra)
                unet = train_diffusion_model(images[rows], config["model"]["unet"], scheduler, settings, Path(scratch) / str(model))
                for name, measurement in measurements.items():
                    for seed in (0, 1):
                        start = time.perf_counter()
                        result = estimate(unet, scheduler, queries, {**measurement, "seed": seed})
                        seconds[name] += time.perf_counter() - start
                        values[name][seed].append(result.mean)
                        errors[name].append(result.stderr)
        for name in measurements:
            first, second = np.array(values[name][0]), np.array(values[name][1])
            print(
                f"{training:<12} {name:<34} {first.mean():8.3f} {np.mean(errors[name]):8.4f} "
                f"{first.std(axis=0, ddof=1).mean():8.4f} {retest(first, second):7.3f} {seconds[name] / (2 * args.models):8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
