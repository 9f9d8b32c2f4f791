"""The rates `snakemake calibrate` measures for the plan."""

import torch

from ldsbench.planning.plan import CALIBRATION_KEYS, device_rates
from ldsbench.planning.throughput import measure_rates, timed
from workflow_api import tiny_config


def test_timed_runs_a_warm_up_then_at_least_the_repeats():
    calls = []
    seconds = timed(lambda: calls.append(1), torch.device("cpu"), repeats=3)
    assert len(calls) == 4 and seconds >= 0


def test_measure_rates_gives_the_plan_both_rates_of_the_configured_unet():
    model = tiny_config()["model"]
    rates = measure_rates(model, torch.device("cpu"), "fp32", training_batch=4, measurement_batch=16, min_seconds=0.0)
    assert set(rates) == set(CALIBRATION_KEYS)
    assert (rates["training_batch"], rates["measurement_batch"], rates["precision"]) == (4, 16, "fp32")
    assert rates["train_draws_per_second"] > 0 and rates["forward_draws_per_second"] > 0
    plan_rates = device_rates(None, rates)
    assert (plan_rates.train, plan_rates.forward) == (rates["train_draws_per_second"], rates["forward_draws_per_second"])
