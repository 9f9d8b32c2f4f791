"""Support for the workflow's step scripts: logs, threads, devices, models on disk.

A trained model is a diffusers pipeline folder (``model_index.json``,
``unet/``, ``scheduler/``) that ``DDPMPipeline.from_pretrained`` and
``UNet2DModel.from_pretrained(path, subfolder="unet")`` load, plus a
``manifest.json`` with provenance and checksums.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ldsbench.runtime.device_slots import claim_device_for_job
from ldsbench.runtime.io import file_sha256, library_versions, save_json
from ldsbench.runtime.provenance import CorruptedArtifactError

if TYPE_CHECKING:
    import torch

MANIFEST = "manifest.json"

# The job's thread count (``start_job``), for torch. A step that uses torch
# gets it when ``start_job`` runs (its script imported torch already) or at
# the latest when it picks its device; the steps that never use torch (the
# statistics, tables and figures) never import it, which saves each about
# two seconds of start-up.
_job_threads: int | None = None


def _set_torch_threads() -> None:
    if _job_threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(_job_threads)


def start_job(snakemake) -> logging.Logger:
    """Send this job's output to its log file, set its thread count, and give
    a GPU job its own device (before anything initialises CUDA)."""
    global _job_threads
    log_path = Path(snakemake.log[0])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(log_path, "w", buffering=1)
    sys.stdout = sys.stderr = handle
    logging.basicConfig(stream=handle, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    _job_threads = max(1, int(snakemake.threads))
    _set_torch_threads()
    logger = logging.getLogger(snakemake.rule)
    logger.info("rule %s, wildcards %s, threads %s", snakemake.rule, dict(snakemake.wildcards), snakemake.threads)
    resources = getattr(snakemake, "resources", None)
    gpu_requested = int(resources.get("gpu", 0) or 0) if resources is not None else 0
    claim_device_for_job(gpu_requested, snakemake.config.get("runtime", {}), log=logger)
    return logger


def select_device(setting: str = "auto") -> torch.device:
    """``auto``: the first visible CUDA device if any, else CPU."""
    import torch

    _set_torch_threads()
    if setting == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        # Every job runs the same shapes many times: let cuDNN pick the
        # fastest convolution kernels once.
        torch.backends.cudnn.benchmark = True
        return torch.device("cuda")
    if setting == "cuda":
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is visible")
    return torch.device("cpu")


def save_model(unet, scheduler, path, manifest: dict) -> None:
    """Write the pipeline folder under a temporary name, then rename it."""
    from diffusers import DDPMPipeline

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp, safe_serialization=True)
    weights = {str(p.relative_to(tmp)): file_sha256(p) for p in sorted(tmp.rglob("*.safetensors"))}
    save_json(tmp / MANIFEST, {**manifest, "weights_sha256": weights, "versions": library_versions()})
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def load_model(path, device="cpu", verify: bool = True):
    """Load (unet, scheduler, manifest); with ``verify`` the weight checksums
    must match the manifest, so a corrupted file is never used silently."""
    import json

    from diffusers import DDPMScheduler, UNet2DModel

    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text())
    if verify:
        for name, expected in manifest["weights_sha256"].items():
            if file_sha256(path / name) != expected:
                raise CorruptedArtifactError(f"{path / name}: checksum does not match {path / MANIFEST}; the file is corrupted, delete {path} and rerun")
    unet = UNet2DModel.from_pretrained(path, subfolder="unet").to(device)
    scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
    unet.eval()
    return unet, scheduler, manifest
