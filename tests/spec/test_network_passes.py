"""runtime.compile and runtime.channels_last reach the jobs in the key of
``NetworkPasses``, which is the precision alone when neither is on, so a
results folder that uses neither keeps the rule parameters it had."""

import pytest

from ldsbench.spec.config import validate_config
from ldsbench.spec.network_passes import NetworkPasses, scoring_precision
from workflow_api import tiny_config


def test_the_default_runtime_passes_the_precision_alone():
    runtime = validate_config(tiny_config())["runtime"]
    assert (runtime["compile"], runtime["channels_last"]) == (False, False)
    assert NetworkPasses.from_runtime(runtime).key == runtime["precision"] == "fp32"
    assert NetworkPasses.from_runtime({**runtime, "precision": "bf16"}).key == "bf16"


@pytest.mark.parametrize(
    "passes, key",
    [
        (NetworkPasses("bf16", compile=True), "bf16+compile"),
        (NetworkPasses("fp32", channels_last=True), "fp32+channels_last"),
        (NetworkPasses("tf32", compile=True, channels_last=True), "tf32+compile+channels_last"),
    ],
)
def test_a_key_names_every_option_and_reads_back(passes, key):
    assert passes.key == key
    assert NetworkPasses.from_key(key) == passes


def test_unknown_precisions_and_options_are_refused_by_name():
    with pytest.raises(ValueError, match="fp16"):
        NetworkPasses.from_key("fp16")
    with pytest.raises(ValueError, match="'cudagraphs'"):
        NetworkPasses.from_key("fp32+cudagraphs")


def test_scoring_precision_follows_precision_unless_set():
    runtime = validate_config(tiny_config())["runtime"]
    assert runtime["scoring_precision"] is None
    assert scoring_precision({**runtime, "precision": "bf16"}) == "bf16"
    assert scoring_precision({**runtime, "precision": "bf16", "scoring_precision": "fp32"}) == "fp32"
