"""Fit K-FAC or EK-FAC factors of the full model's training-loss GGN."""

import torch

from ldsbench.attribution.curvature import CurvatureSettings, fit_kronecker_eigenbases, save_eigenbases
from ldsbench.attribution.curvature_data import NoisedTrainingData, batch_size_of
from ldsbench.data.image_sets import load_image_set
from ldsbench.diffusion.model import FlatNoisePredictor, attributed_modules
from ldsbench.runtime.jobs import load_model, select_device, start_job

log = start_job(snakemake)
settings = snakemake.params.settings
dtype = {"float64": torch.float64, "float32": torch.float32}[settings["dtype"]]
device = select_device(snakemake.params.device)
unet, scheduler, _ = load_model(snakemake.input.model, device)
model = FlatNoisePredictor(unet).to(dtype)
data = NoisedTrainingData(
    torch.from_numpy(load_image_set(snakemake.input.train).images),
    scheduler,
    settings["draws_per_example"],
    settings["seed"],
    batch_size=settings["batch_size"],
    dtype=dtype,
    device=device,
)
# One fit gives K-FAC, and EK-FAC if a method needs it (same factors).
curvature = CurvatureSettings(
    kind="ekfac" if "ekfac" in settings["kinds"] else "kfac",
    kfac_approx=settings["kfac_approx"],
    fisher_type=settings["fisher_type"],
    mc_samples=settings["mc_samples"],
    seed=settings["seed"],
)
names = [f"unet.{name}" for name, _ in attributed_modules(unet)]
log.info("fitting %s on %s modules, %s data points", curvature, len(names), data.num_data)
bases = fit_kronecker_eigenbases(model, names, data, curvature, num_data=data.num_data, batch_size_fn=batch_size_of, progressbar=True)
save_eigenbases(snakemake.output[0], {kind: bases[kind] for kind in settings["kinds"]})
for kind in settings["kinds"]:
    log.info("%s: %s parameters, mean eigenvalue %.3e", kind, bases[kind].num_params(), bases[kind].mean_eigenvalue())
