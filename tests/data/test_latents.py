"""Latent diffusion with a local AutoencoderKL: latents are the VAE's scaled
posterior mean or a seeded draw that does not depend on the batch size,
decoding inverts the scaling, every misfit between the VAE, the data, the
UNet and the measurements stops config validation with a message that names
it, and a tiny benchmark runs end to end on latents."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import AutoencoderKL

from ldsbench.data.image_sets import load_image_set
from ldsbench.data.latents import decode_latents, encode_images, vae_config
from ldsbench.diffusion.sampling import ddpm_sample
from ldsbench.planning.footprint import model_footprint
from ldsbench.planning.plan import rule_estimates
from ldsbench.spec.config import ConfigError, validate_config
from workflow_api import dry_run, run_workflow, tiny_config, with_changes

# Digits (1 x 8 x 8) -> latents 2 x 4 x 4 (one downsampling).
LATENT_CHANNELS, LATENT_SIDE = 2, 4


def save_tiny_vae(path, in_channels: int = 1, shift_factor=None):
    """A randomly initialised AutoencoderKL, saved as a user's VAE folder is."""
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        block_out_channels=[8, 16],
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=4,
        sample_size=8,
        scaling_factor=0.5,
        shift_factor=shift_factor,
    )
    vae.save_pretrained(path)
    return vae.eval()


@pytest.fixture
def vae_path(tmp_path):
    save_tiny_vae(tmp_path / "vae")
    return tmp_path / "vae"


def latent_config(vae_path, **vae):
    """The tiny benchmark on the latents of digits: a UNet of latent size and channels, no clipping, no ELBO."""
    config = with_changes(
        tiny_config(),
        {
            "model.unet.sample_size": LATENT_SIDE,
            "model.unet.in_channels": LATENT_CHANNELS,
            "model.unet.out_channels": LATENT_CHANNELS,
            "model.scheduler.clip_sample": False,
            "model.vae": {"path": str(vae_path), **vae},
        },
    )
    del config["measurements"]["elbo"]
    return config


def _errors(config) -> str:
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    return str(error.value)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, 1, 8, 8)).astype(np.float32)


def test_mean_latents_are_the_scaled_shifted_posterior_mean_at_any_batch_size(tmp_path):
    vae = save_tiny_vae(tmp_path / "vae", shift_factor=0.25)
    images = _images(7)
    latents = encode_images(vae, images, "mean", 0, "train", batch_size=3)
    with torch.no_grad():
        expected = (vae.encode(torch.from_numpy(images)).latent_dist.mean - 0.25) * 0.5
    assert latents.shape == (7, LATENT_CHANNELS, LATENT_SIDE, LATENT_SIDE)
    np.testing.assert_allclose(latents, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encode_images(vae, images, "mean", 0, "train", batch_size=7), latents, rtol=1e-5, atol=1e-6)


def test_sampled_latents_are_seeded_per_row_and_split(tmp_path):
    vae = save_tiny_vae(tmp_path / "vae")
    images = _images(6)
    first = encode_images(vae, images, "sample", 3, "train", batch_size=4)
    np.testing.assert_allclose(encode_images(vae, images, "sample", 3, "train", batch_size=1), first, rtol=1e-5, atol=1e-6)
    mean = encode_images(vae, images, "mean", 3, "train", batch_size=6)
    assert not np.allclose(first, mean)
    assert not np.allclose(encode_images(vae, images, "sample", 4, "train", batch_size=6), first)
    assert not np.allclose(encode_images(vae, images, "sample", 3, "heldout", batch_size=6), first)


def test_decoding_undoes_the_scaling_and_clips_to_the_image_range(tmp_path):
    vae = save_tiny_vae(tmp_path / "vae", shift_factor=0.25)
    latents = np.random.default_rng(1).normal(size=(5, LATENT_CHANNELS, LATENT_SIDE, LATENT_SIDE)).astype(np.float32)
    images = decode_latents(vae, latents, batch_size=2)
    with torch.no_grad():
        expected = vae.decode(torch.from_numpy(latents) / 0.5 + 0.25).sample.clamp(-1, 1)
    assert images.shape == (5, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
    np.testing.assert_allclose(images, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_samples_are_clipped_only_where_the_scheduler_clips():
    from ldsbench.diffusion.model import build_scheduler, build_unet

    unet_config = {**tiny_config()["model"]["unet"], "sample_size": 4}
    torch.manual_seed(0)
    unet = build_unet(unet_config)
    settings = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02}
    clipped = ddpm_sample(unet, build_scheduler({**settings, "clip_sample": True}), 2, 5, seed=0)
    latent = ddpm_sample(unet, build_scheduler({**settings, "clip_sample": False}), 2, 5, seed=0)
    assert clipped.abs().max() <= 1
    assert latent.abs().max() > 1  # an untrained model's samples leave [-1, 1]


def test_a_vae_folder_without_weights_or_config_is_named(vae_path, tmp_path):
    (vae_path / "diffusion_pytorch_model.safetensors").unlink()
    assert "no weights in" in _errors(latent_config(vae_path)) and "diffusion_pytorch_model.safetensors" in _errors(latent_config(vae_path))
    assert "is not a folder" in _errors(latent_config(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "no config.json in" in _errors(latent_config(tmp_path / "empty"))
    other = json.loads((vae_path / "config.json").read_text())
    (vae_path / "config.json").write_text(json.dumps({**other, "_class_name": "UNet2DModel"}))
    assert "not an AutoencoderKL" in _errors(latent_config(vae_path))


def test_a_unet_or_data_that_does_not_fit_the_vae_is_named(vae_path, tmp_path):
    channels = with_changes(latent_config(vae_path), {"model.unet.in_channels": 1, "model.unet.out_channels": 1})
    assert "must be the VAE's latent_channels (2)" in _errors(channels)
    size = with_changes(latent_config(vae_path), {"model.unet.sample_size": 8})
    assert "8 latents x the VAE's downsampling 2 = 16, but digits images are 8x8 (set sample_size to 4)" in _errors(size)
    save_tiny_vae(tmp_path / "rgb", in_channels=3)
    assert "the VAE takes 3-channel images, digits images are 1-channel" in _errors(latent_config(tmp_path / "rgb"))


def test_clipping_and_grey_level_measurements_are_refused_on_latents(vae_path):
    clipped = with_changes(latent_config(vae_path), {"model.scheduler.clip_sample": True})
    assert "model.scheduler.clip_sample: must be false with model.vae" in _errors(clipped)
    elbo = with_changes(latent_config(vae_path), {"measurements.elbo": {"type": "elbo", "draws": 32, "strata": 8}})
    assert "measurements.elbo: type elbo needs the data's grey levels" in _errors(elbo)
    dequantised = with_changes(latent_config(vae_path), {"training.dequantise": True})
    assert "training.dequantise: dequantises grey levels" in _errors(dequantised)


def test_the_plan_has_encoding_and_decoding_jobs_sized_by_the_vae(vae_path):
    config = validate_config(latent_config(vae_path, batch_size=4))
    footprint = model_footprint(config["model"]["unet"])
    rows = {row.rule: row for row in rule_estimates(config, footprint, 8 << 30, "runtime.memory_gb")}
    assert rows["encode_latents"].jobs == rows["decode_queries"].jobs == 1
    assert rows["encode_latents"].passes == config["dataset"]["n_train"] + config["dataset"]["n_heldout"]
    larger = {row.rule: row for row in rule_estimates(validate_config(latent_config(vae_path, batch_size=8)), footprint, 8 << 30, "runtime.memory_gb")}
    assert larger["encode_latents"].peak_bytes > rows["encode_latents"].peak_bytes
    assert vae_config(vae_path)["latent_channels"] == LATENT_CHANNELS


def test_pixel_runs_have_no_latent_files_and_latent_runs_encode_once(vae_path, tmp_path):
    pixel_files = dry_run(tiny_config(), tmp_path / "pixels")
    assert "results/data/train.npz" in pixel_files
    assert not any("data/pixels" in f or f.endswith(("latents.json", "queries/images.npz")) for f in pixel_files)
    latent_files = dry_run(latent_config(vae_path), tmp_path / "latents")
    assert {"results/data/pixels/train.npz", "results/data/train.npz", "results/data/latents.json", "results/queries/images.npz"} <= set(latent_files)


@pytest.mark.slow
def test_a_tiny_benchmark_runs_on_latents(vae_path, tmp_path):
    config = with_changes(
        latent_config(vae_path, latents="sample", seed=1),
        {"removal": {"measurement": "loss", "queries": [0], "fractions": [0.1], "methods": ["trak"], "seeds": 1}},
    )
    config["methods"] = {name: config["methods"][name] for name in ("ekfac_influence", "trak", "pixels", "random")}
    config["methods"]["trak"]["models"] = 1
    run = tmp_path / "run"
    result = run_workflow(config, run)
    assert result.returncode == 0, result.stderr[-5000:]
    results = run / "results"
    train, pixels = load_image_set(results / "data" / "train.npz"), load_image_set(results / "data" / "pixels" / "train.npz")
    assert train.images.shape[1:] == (LATENT_CHANNELS, LATENT_SIDE, LATENT_SIDE) and pixels.images.shape[1:] == (1, 8, 8)
    np.testing.assert_array_equal(train.labels, pixels.labels)
    provenance = json.loads((results / "data" / "latents.json").read_text())
    assert provenance["latents"] == "sample" and len(provenance["vae_weights_sha256"]) == 64
    queries, shown = np.load(results / "queries" / "queries.npz"), np.load(results / "queries" / "images.npz")
    assert queries["images"].shape[1:] == (LATENT_CHANNELS, LATENT_SIDE, LATENT_SIDE) and shown["images"].shape[1:] == (1, 8, 8)
    summary = pd.read_parquet(results / "lds_summary.parquet")
    assert {"ekfac_influence", "trak", "pixels", "random"} <= set(summary["method"])
    removal = pd.read_parquet(results / "removal_changes.parquet")
    assert len(removal) and (results / "attribution_grid.png").exists()
