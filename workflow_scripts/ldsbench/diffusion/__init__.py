"""The diffusion model and what is computed from it: the UNet and scheduler,
the training objective and every per-draw output function (one table,
``outputs.NAMED_OUTPUTS``), noise draws, numerical precision, sampling and
training."""
