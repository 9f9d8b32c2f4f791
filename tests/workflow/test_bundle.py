"""Benchmark bundles: what a bundle carries, its manifest and verification,
and one export of the tiny benchmark rescored from a fresh copy of the
workflow, bitwise as the original run."""

import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from files import flip_byte
from ldsbench.spec.bundles import (
    MANIFEST,
    BundleContents,
    BundleError,
    build_manifest,
    bundle_config,
    bundle_contents,
    list_files,
    missing_inputs,
    verify_bundle,
    write_bundle,
)
from ldsbench.spec.config import validate_config
from workflow_api import copy_run, copy_workflow, run_workflow, tiny_config, with_changes, workflow_command


@pytest.fixture(scope="module")
def tiny():
    return validate_config(tiny_config())


_FILES = ["data/train.npz", "queries/queries.npz", "subsets.parquet", "ground_truth/loss.parquet", "models/full/manifest.json", "models/full/unet/w.bin"]
_CONTENTS = BundleContents(files=tuple(f for f in _FILES if not f.startswith("models/")), models=("models/full",))


def _results(root):
    """A small results folder with the tiny benchmark's layout (content is arbitrary)."""
    for index, relative in enumerate(_FILES):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(bytes(range(index, index + 64)))
    return _CONTENTS


def _bundle(tmp_path, config):
    """Export ``tmp_path``/results (made on the first call) to ``tmp_path``/bundle."""
    contents = _results(tmp_path / "results") if not (tmp_path / "results").exists() else _CONTENTS
    made = {"package_version": "0", "created": "today", "created_by": "someone", "command": "snakemake bundle"}
    return write_bundle(
        tmp_path / "results",
        tmp_path / "bundle",
        contents,
        lambda files: build_manifest(config, files, {"train_sha256": "t"}, "f" * 16, {}, made),
        lambda manifest: "card\n",
    )


def test_a_bundle_carries_what_scoring_reads(tiny):
    contents = bundle_contents(tiny)
    assert contents.files == ("data/train.npz", "queries/queries.npz", "subsets.parquet", "ground_truth/elbo.parquet", "ground_truth/loss.parquet")
    # TracIn reads the trajectory; the TRAK ensemble of 2 the seed-1 full model.
    assert contents.models == ("models/full", "models/full_trajectory", "models/full_seed_1") and contents.prepared == ()
    fewer = {name: method for name, method in tiny["methods"].items() if name in ("ekfac_influence", "random")}
    assert bundle_contents({**tiny, "methods": fewer}).models == ("models/full",)
    # CIFAR's licence forbids redistributing it: the receiver prepares it.
    cifar = with_changes(tiny, {"dataset.name": "cifar2"})
    assert "data/train.npz" not in bundle_contents(cifar).files and bundle_contents(cifar).prepared == ("data/train.npz",)
    with pytest.raises(BundleError, match="latent-diffusion benchmark of cifar2"):
        bundle_contents(with_changes(cifar, {"model.vae": {"path": "vae"}}))
    latent = bundle_contents(with_changes(tiny, {"model.vae": {"path": "vae"}})).files
    assert {"data/pixels/train.npz", "queries/images.npz", "data/latents.json"} <= set(latent)


def test_the_manifest_lists_every_file_with_its_checksum_and_size(tmp_path, tiny):
    manifest = _bundle(tmp_path, tiny)
    on_disk = json.loads((tmp_path / "bundle" / MANIFEST).read_text())
    assert on_disk == manifest and verify_bundle(tmp_path / "bundle") == manifest
    assert {"format", "format_version", "package_version", "created", "created_by", "command", "benchmark_fingerprint", "provenance", "config", "files"} <= set(
        manifest
    )
    assert list(manifest["config"]["measurements"]) == list(tiny["measurements"]), "the order of the tables travels"
    for relative, entry in manifest["files"].items():
        assert entry["size"] == (tmp_path / "results" / relative).stat().st_size and len(entry["sha256"]) == 64
    assert "models/full/unet/w.bin" in manifest["files"] and (tmp_path / "bundle" / "CARD.md").is_file()
    assert not list(tmp_path.glob(".bundle.tmp-*")), "the temporary folder is gone"


def test_verification_names_the_first_bad_file(tmp_path, tiny):
    manifest = _bundle(tmp_path, tiny)
    bundle = tmp_path / "bundle"
    for relative in manifest["files"]:
        original = (bundle / relative).read_bytes()
        flip_byte(bundle / relative)
        with pytest.raises(BundleError, match=f"{relative} does not match its sha256"):
            verify_bundle(bundle)
        (bundle / relative).write_bytes(original + b"\0")
        with pytest.raises(BundleError, match=f"{relative} has {len(original) + 1} bytes"):
            verify_bundle(bundle)
        (bundle / relative).write_bytes(original)
    (bundle / "subsets.parquet").unlink()
    with pytest.raises(BundleError, match="subsets.parquet is missing"):
        verify_bundle(bundle)
    (bundle / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BundleError, match="format version 99 is newer"):
        verify_bundle(bundle)
    with pytest.raises(BundleError, match="no manifest.json"):
        verify_bundle(tmp_path)


def test_an_existing_bundle_is_replaced_only_by_the_same_files(tmp_path, tiny):
    _bundle(tmp_path, tiny)
    _bundle(tmp_path, tiny)  # the same files again: a rewrite
    flip_byte(tmp_path / "results" / "ground_truth" / "loss.parquet")
    with pytest.raises(BundleError, match="holds another bundle .1 files differ, e.g. ground_truth/loss.parquet"):
        _bundle(tmp_path, tiny)
    verify_bundle(tmp_path / "bundle")


def test_bundle_mode_takes_the_protocol_and_turns_removal_off(tiny):
    manifest = {"config": with_changes(tiny, {"benchmark.subsets": 6, "dataset.path": "/theirs"}), "prepared": {"data/train.npz": {}}}
    yours = with_changes(tiny_config(), {"dataset.path": "/mine", "results": "elsewhere"})
    config, replaced = bundle_config(yours, manifest, validate_config(with_changes(yours, {"dataset.path": None})))
    assert config["benchmark"]["subsets"] == 6 and replaced == ["dataset", "benchmark"]
    # Paths on the receiver's machine and everything outside the protocol stay theirs.
    assert config["dataset"]["path"] == "/mine" and config["results"] == "elsewhere" and config["methods"] == yours["methods"]
    assert config["removal"] == {"queries": []}


def test_methods_that_need_more_than_the_bundle_carries_are_named(tmp_path, tiny):
    files = {"models/full/manifest.json": {}, "data/train.npz": {}}
    assert missing_inputs({**tiny, "methods": {"r": {"type": "random"}}}, {"files": files}) == []
    missing = missing_inputs(tiny, {"files": files})
    assert missing == ["models/full_trajectory (read by tracin, retrac)", "models/full_seed_1 (read by trak)"]


def test_list_files_needs_every_file(tmp_path):
    contents = _results(tmp_path)
    (tmp_path / "subsets.parquet").unlink()
    with pytest.raises(BundleError, match="subsets.parquet does not exist"):
        list_files(tmp_path, contents)


# One export of the tiny benchmark and one rescore from it (about 2 minutes).


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run's bundle, copied away from its results folder: (config, run folder, bundle)."""
    config, workdir = tiny_run
    run = copy_run(workdir, tmp_path_factory.mktemp("producer") / "run")
    result = run_workflow(config, run, "bundle")
    assert result.returncode == 0, result.stderr[-5000:]
    bundle = tmp_path_factory.mktemp("shared") / "tiny-bundle"
    shutil.copytree(run / "results" / "bundle", bundle)
    return config, run, bundle


def _rescore(workflow, workdir, config, bundle, *extra):
    """`snakemake rescore --config bundle=...` with another copy of the workflow."""
    command = workflow_command(config, workdir, "rescore", "--config", f"bundle={bundle}", *extra)
    command[command.index("--snakefile") + 1] = str(workflow / "Snakefile")
    return subprocess.run(command, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_a_bundle_rescored_elsewhere_gives_the_same_lds(exported, tmp_path):
    config, run, bundle = exported
    workflow = copy_workflow(tmp_path / "clone")
    # The receiver's own protocol settings are replaced by the bundle's.
    receiver = with_changes(config, {"results": "scored", "benchmark.subsets": 8})
    result = _rescore(workflow, tmp_path / "work", receiver, bundle)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "replaced yours in: benchmark" in result.stderr
    assert not any(name in result.stderr for name in ("rule train_", "rule measure_", "rule generate_queries", "rule removal")), "trains nothing"
    original, scored = run / "results", tmp_path / "work" / "scored"
    for method in config["methods"]:
        for measurement in config["measurements"]:
            relative = f"lds/{method}/{measurement}.parquet"
            assert (scored / relative).read_bytes() == (original / relative).read_bytes(), relative
    columns = ["method", "measurement", "lds", "ci_low", "ci_high", "default_lds", "all_subsets_lds"]
    pd.testing.assert_frame_equal(pd.read_parquet(scored / "lds_summary.parquet")[columns], pd.read_parquet(original / "lds_summary.parquet")[columns])
    np.testing.assert_array_equal(np.load(scored / "scores" / "trak" / "loss.npy"), np.load(original / "scores" / "trak" / "loss.npy"))


@pytest.mark.slow
def test_a_corrupted_bundle_is_refused_before_any_job(exported, tmp_path):
    config, _, bundle = exported
    corrupted = tmp_path / "bundle"
    shutil.copytree(bundle, corrupted)
    flip_byte(corrupted / "models" / "full" / "unet" / "diffusion_pytorch_model.safetensors")
    result = _rescore(copy_workflow(tmp_path / "clone"), tmp_path / "work", config, corrupted, "--dry-run")
    assert result.returncode != 0
    assert "models/full/unet/diffusion_pytorch_model.safetensors does not match its sha256" in result.stderr + result.stdout
    assert not (tmp_path / "work" / "results").exists()
