"""The plan before launch: estimates per rule, `snakemake plan`, and a run
that does not fit stopped before any job."""

from pathlib import Path

import pandas as pd
import pytest

from cifar_archive import write_cifar10_archive
from ldsbench.planning.footprint import model_footprint
from ldsbench.planning.memory import GIB
from ldsbench.planning.plan import (
    FORWARD,
    DeviceRates,
    JobEstimate,
    device_rates,
    job_budget,
    measurement_passes,
    method_passes,
    over_budget,
    plan_table,
    read_calibration,
    rule_estimates,
)
from ldsbench.spec.config import validate_config
from workflow_api import ROOT, default_config, load_yaml, run_workflow, tiny_config, with_changes


def cifar2_config(tmp_path, **changes):
    archive = write_cifar10_archive(tmp_path / "cifar-10-python.tar.gz", per_batch=10)
    config = with_changes(load_yaml(ROOT / "configs" / "cifar2.yaml"), {"dataset.path": str(archive), **changes})
    return config


@pytest.fixture(scope="module")
def cifar2_footprint():
    return model_footprint(load_yaml(ROOT / "configs" / "cifar2.yaml")["model"]["unet"])


def test_cifar2_preset_fits_one_80_gb_gpu(tmp_path, cifar2_footprint):
    config = validate_config(cifar2_config(tmp_path))
    budget, setting = job_budget(config["runtime"], "cuda")
    rows = rule_estimates(config, cifar2_footprint, budget, setting)
    assert over_budget(rows, budget, setting) == []
    table = plan_table(rows, device_rates(1000.0, None))
    by_rule = table.set_index("rule")
    assert by_rule.loc["train_subset_model", "jobs"] == 500
    assert by_rule.loc["measure_model", "jobs"] == 500, "one job per retrained model, all its measurements"
    assert by_rule.loc["train_subset_model", "passes"] == 16000 * 128
    assert by_rule.loc["train_subset_model", "forward_passes"] == 0
    # Measuring is forward passes alone: 1000 queries, 5000 loss draws and 2500 elbo draws of two passes.
    assert by_rule.loc["measure_model", "passes"] == 0
    assert by_rule.loc["measure_model", "forward_passes"] == measurement_passes(config["measurements"], 1000) == 1000 * (5000 + 2 * 2500)
    assert (table["peak_memory_gb"] <= 80).all() and (table["peak_memory_gb"] > 0).all()
    # NDA: no network pass; its peak is nda_bytes (1.7 GB, docs/methods.md) over the process and the model.
    assert by_rule.loc["score_method[nda]", "passes"] == 0
    assert 2.0 < by_rule.loc["score_method[nda]", "peak_memory_gb"] < 3.0
    # Passes / throughput: 500 subset trainings of 16k steps x 128 draws at 1000/s.
    assert by_rule.loc["train_subset_model", "device_hours"] == pytest.approx(500 * 16000 * 128 / 1000 / 3600)


def test_device_hours_divide_each_kind_of_pass_by_its_own_rate():
    rows = [JobEstimate("train", 3, 0, passes=7200, setting=""), JobEstimate("measure", 2, 0, passes=0, setting="", forward_passes=36000)]
    calibration = {
        "device": "GPU",
        "precision": "fp32",
        "training_batch": 128,
        "measurement_batch": 256,
        "train_draws_per_second": 2.0,
        "forward_draws_per_second": 5.0,
    }
    rates = device_rates(None, calibration)
    assert rates == DeviceRates(2.0, 5.0, rates.source) and "GPU" in rates.source
    hours = plan_table(rows, rates).set_index("rule")["device_hours"]
    assert hours["train"] == 3 * 7200 / 2.0 / 3600 == 3.0
    assert hours["measure"] == 2 * 36000 / 5.0 / 3600 == 4.0
    # A typed-in rate wins over a calibration and counts a forward pass a third of a step.
    typed = device_rates(2.0, calibration)
    assert (typed.train, typed.forward) == (2.0, 2.0 / FORWARD)
    assert plan_table(rows, None)["device_hours"].isna().all()


def test_the_summary_counts_a_forward_pass_a_third_of_a_step(tmp_path):
    """``gradient_passes`` in the LDS summary keeps its unit: unlearning's
    forward passes count a third."""
    config = validate_config(tiny_config())
    rows = {row.rule: row for row in rule_estimates(config, model_footprint(config["model"]["unet"]), 64 * GIB, "runtime.memory_gb")}
    row = rows["score_method[unlearning]"]
    assert row.forward_passes > 0
    assert method_passes("unlearning", config, rows) == int(row.passes + row.forward_passes * FORWARD)


def test_a_calibration_file_that_is_not_one_is_named(tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text('{"device": "cpu"}')
    with pytest.raises(ValueError, match="calibration.json.*train_draws_per_second"):
        read_calibration(path)


def test_a_small_gpu_chunks_influence_instead_of_failing(tmp_path, cifar2_footprint):
    config = validate_config(cifar2_config(tmp_path, **{"runtime.gpu_memory_gb": 24}))
    budget, setting = job_budget(config["runtime"], "cuda")
    rows = {row.rule: row for row in rule_estimates(config, cifar2_footprint, budget, setting)}
    roomy = {row.rule: row for row in rule_estimates(config, cifar2_footprint, 80 * GIB, setting)}
    influence = rows["score_method[ekfac_influence]"]
    assert influence.peak_bytes <= 24 * GIB
    assert influence.passes > roomy["score_method[ekfac_influence]"].passes, "chunks recompute training gradients"


def test_training_batch_over_budget_names_the_setting(tmp_path, cifar2_footprint):
    config = validate_config(cifar2_config(tmp_path, **{"training.batch_size": 4096}))
    budget, setting = job_budget(config["runtime"], "cuda")
    lines = over_budget(rule_estimates(config, cifar2_footprint, budget, setting), budget, setting)
    assert lines and all("training.batch_size" in line and "runtime.gpu_memory_gb" in line for line in lines)


@pytest.mark.slow
def test_snakemake_plan_writes_and_prints_the_table(tmp_path):
    config = cifar2_config(tmp_path, **{"runtime.device": "cuda", "runtime.draws_per_second": 2000.0, "results": "results"})
    result = run_workflow(config, tmp_path, "plan")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results" / "plan.tsv", sep="\t")
    assert list(table.columns) == ["rule", "jobs", "peak_memory_gb", "passes", "forward_passes", "device_hours"]
    assert "score_method[ekfac_influence]" in set(table["rule"]) and table["device_hours"].notna().all()
    assert "every job fits" in (tmp_path / "results" / "logs" / "plan.log").read_text()
    assert not (tmp_path / "results" / "models").exists()
    assert not (tmp_path / "results" / "calibration.json").exists(), "a typed-in rate needs no calibration"


@pytest.mark.slow
def test_snakemake_plan_measures_the_rates_it_needs(tmp_path):
    """Without runtime.draws_per_second the plan runs `calibrate` on this
    machine first and prints device-hours from its two rates."""
    config = tiny_config()
    result = run_workflow(config, tmp_path, "plan")
    assert result.returncode == 0, result.stderr[-3000:]
    calibration = read_calibration(tmp_path / "results" / "calibration.json")
    assert calibration["device"].startswith("CPU") and calibration["training_batch"] == config["training"]["batch_size"]
    assert calibration["forward_draws_per_second"] > calibration["train_draws_per_second"] > 0
    table = pd.read_csv(tmp_path / "results" / "plan.tsv", sep="\t").set_index("rule")
    rates = device_rates(None, calibration)
    assert table.loc["measure_model", "device_hours"] == pytest.approx(
        table.loc["measure_model", "jobs"] * table.loc["measure_model", "forward_passes"] / rates.forward / 3600, rel=1e-6
    )
    assert table["device_hours"].notna().all()
    assert "measured on CPU" in (tmp_path / "results" / "logs" / "plan.log").read_text()
    assert not (tmp_path / "results" / "models").exists()


@pytest.mark.slow
def test_run_over_budget_stops_before_any_job(tmp_path):
    config = with_changes(tiny_config(), {"runtime.memory_gb": 0.1})
    result = run_workflow(config, tmp_path)
    assert result.returncode != 0
    assert "exceeds the budget" in result.stderr and "runtime.memory_gb" in result.stderr
    assert not (tmp_path / "results" / "data").exists()
    # `snakemake plan` still shows it.
    shown = run_workflow(config, tmp_path, "plan")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "over budget" in (tmp_path / "results" / "logs" / "plan.log").read_text()


def test_default_estimates_are_declared_as_resources(tmp_path):
    """Every GPU-capable rule declares mem_mb from the plan."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=2),
            config_settings=ConfigSettings(config=default_config(), replace_workflow_config=True),
            snakefile=ROOT / "Snakefile",
            workdir=Path(tmp_path),
        )
        rules = {rule.name: rule for rule in workflow._workflow.rules}
    for name in ("train_full_model", "train_subset_model", "measure_model", "fit_curvature", "score_method", "generate_queries", "calibrate", "measure_pilot"):
        assert "mem_mb" in rules[name].resources, name
    # Every rule that asks for a GPU goes to the SLURM profile's GPU partition.
    profile = load_yaml(ROOT / "profiles" / "slurm" / "config.yaml")
    for name, rule in rules.items():
        if "gpu" in rule.resources:
            assert profile["set-resources"].get(name, {}).get("slurm_partition") == "?gpu_partition", name
