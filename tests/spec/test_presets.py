"""Every shipped preset validates and schedules its full protocol at full
scale (500 retrainings; ArtBench's 250), and its plan fits one 80 GB GPU,
given data in its expected layout (a CIFAR-10 archive in the real format, a
folder of CelebA-sized JPEGs, or ArtBench's style folders of 256x256 JPEGs
and a VAE folder). Only headers are read before a job runs: the files are
links to one image, and the VAE folder holds Stable Diffusion's VAE
config.json beside a weight file that the dry run never opens."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from cifar_archive import write_cifar10_archive
from ldsbench.planning.footprint import cached_model_footprint
from ldsbench.planning.memory import GIB
from ldsbench.planning.plan import over_budget, rule_estimates
from ldsbench.spec.config import validate_config
from workflow_api import ROOT, dry_run, load_yaml, with_changes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    archive = write_cifar10_archive(folder / "cifar-10-python.tar.gz", per_batch=20)
    faces = folder / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    # As many files as the preset splits; only the first is decoded before a job.
    Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(faces / "000000.jpg")
    for i in range(1, 6000):
        (faces / f"{i:06d}.jpg").write_bytes((faces / "000000.jpg").read_bytes())
    paintings = folder / "artbench"
    first = paintings / "style_0" / "0.jpg"
    for style in [f"style_{k}" for k in range(10)]:
        (paintings / style).mkdir(parents=True)
        if not first.exists():
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(first)
        for i in range(5100):
            if not (paintings / style / f"{i}.jpg").exists():
                os.link(first, paintings / style / f"{i}.jpg")
    vae = folder / "sd-vae"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps(SD_VAE_CONFIG))
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    return {"cifar2": archive, "cifar10": archive, "celeba": faces, "artbench": paintings, "artbench_vae": vae}


# Stable Diffusion's VAE (4 latent channels, downsampling 8), as its config.json has it.
SD_VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
RETRAININGS = {"cifar2": 500, "cifar10": 500, "celeba": 500, "artbench": 250}


@pytest.mark.parametrize("preset", ["cifar2", "cifar10", "celeba", "artbench"])
def test_preset_schedules_its_protocol_and_fits_its_gpu(preset, data, tmp_path):
    changes = {"dataset.path": str(data[preset]), "results": "results"}
    if preset == "artbench":
        changes["model.vae.path"] = str(data["artbench_vae"])
    config = with_changes(load_yaml(ROOT / "configs" / f"{preset}.yaml"), changes)
    validated = validate_config(config)
    files = dry_run(config, tmp_path)
    assert sum(bool(re.search(r"results/models/subset_\d+/seed_\d+$", f)) for f in files) == RETRAININGS[preset]
    footprint = cached_model_footprint(validated["model"]["unet"], tmp_path / "plan")
    budget = int(validated["runtime"]["gpu_memory_gb"] * GIB)
    rows = rule_estimates(validated, footprint, budget, "runtime.gpu_memory_gb")
    assert over_budget(rows, budget, "runtime.gpu_memory_gb") == []
