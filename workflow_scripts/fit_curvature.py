"""Fit K-FAC or EK-FAC factors of the full model's training-loss GGN."""

import numpy as np
import torch

from ldsbench.curvature import CurvatureSettings, fit_kronecker_eigenbasis
from ldsbench.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.data import load_image_set
from ldsbench.jobs import load_model, select_device, start_job
from ldsbench.model import FlatNoisePredictor, attributed_modules

log = start_job(snakemake)
settings = snakemake.params.settings
dtype = {"float64": torch.float64, "float32": torch.float32}[settings["dtype"]]
device = select_device(snakemake.params.device)
unet, scheduler, _ = load_model(snakemake.input.model, device)
model = FlatNoisePredictor(unet).to(dtype)
data = NoisedTrainingData(
    torch.from_numpy(load_image_set(snakemake.input.train).images), scheduler, settings["draws_per_example"], settings["seed"], dtype=dtype, device=device
)
curvature = CurvatureSettings(
    kind=settings["kind"], kfac_approx=settings["kfac_approx"], fisher_type=settings["fisher_type"], mc_samples=settings["mc_samples"], seed=settings["seed"]
)
names = [f"unet.{name}" for name, _ in attributed_modules(unet)]
log.info("fitting %s on %s modules, %s data points", curvature, len(names), data.num_data)
basis = fit_kronecker_eigenbasis(model, names, data, curvature, num_data=data.num_data, batch_size_fn=batch_size_of)
basis.save(snakemake.output[0])
log.info("%s parameters, mean eigenvalue %.3e", basis.num_params(), basis.mean_eigenvalue())
