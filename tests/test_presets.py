"""Every shipped preset validates and schedules its full protocol at full
scale (500 retrainings), and its plan fits one 80 GB GPU, given data in its
expected layout (a CIFAR-10 archive in the real format, or a folder of
CelebA-sized JPEGs)."""

import re

import numpy as np
import pytest
from PIL import Image

from cifar_archive import write_cifar10_archive
from ldsbench.config import validate_config
from ldsbench.footprint import cached_model_footprint
from ldsbench.memory import GIB
from ldsbench.plan import over_budget, rule_estimates
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
    return {"cifar2": archive, "cifar10": archive, "celeba": faces}


@pytest.mark.parametrize("preset", ["cifar2", "cifar10", "celeba"])
def test_preset_schedules_its_protocol_and_fits_its_gpu(preset, data, tmp_path):
    config = with_changes(load_yaml(ROOT / "configs" / f"{preset}.yaml"), {"dataset.path": str(data[preset]), "results": "results"})
    validated = validate_config(config)
    files = dry_run(config, tmp_path)
    assert sum(bool(re.search(r"results/models/subset_\d+/seed_\d+$", f)) for f in files) == 500
    footprint = cached_model_footprint(validated["model"]["unet"], tmp_path / "plan")
    budget = int(validated["runtime"]["gpu_memory_gb"] * GIB)
    rows = rule_estimates(validated, footprint, budget, "runtime.gpu_memory_gb")
    assert over_budget(rows, budget, "runtime.gpu_memory_gb") == []
