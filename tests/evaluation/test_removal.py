"""Retraining without the top influences: which examples are removed, the
seeds, the changes and their summary, and regenerating a query."""

import numpy as np
import pandas as pd
import pytest
import torch

from ldsbench.diffusion.model import build_scheduler, build_unet
from ldsbench.diffusion.sampling import ddpm_resample_rows, ddpm_sample
from ldsbench.evaluation.removal import random_removal, removal_changes, removal_size, summarize_changes, top_proponents
from ldsbench.spec.config import ConfigError, validate_config
from ldsbench.spec.training_runs import kept_rows, removal_training_seed
from tiny_models import UNET
from workflow_api import ROOT, load_yaml, with_changes


def full_config() -> dict:
    """configs/full.yaml: the default plus every measurement and the removal branch."""
    return load_yaml(ROOT / "configs" / "full.yaml")


def test_proponents_follow_the_orientation_without_flipping_scores():
    # tau predicts m(with i) - m(without i).
    scores = np.array([0.5, -2.0, 0.0, 3.0, -1.0])
    # Loss (lower is better): including 1 and 4 lowers the loss the most.
    assert top_proponents(scores, 2, "lower_is_better").tolist() == [1, 4]
    # ELBO (higher is better): including 3 and 0 raises it the most.
    assert top_proponents(scores, 2, "higher_is_better").tolist() == [3, 0]
    with pytest.raises(ValueError, match="no direction of improvement"):
        top_proponents(scores, 2, "not_a_quality_measure")
    with pytest.raises(ValueError, match="finite"):
        top_proponents(np.array([1.0, np.nan]), 1, "lower_is_better")


def test_ties_are_broken_by_row():
    assert top_proponents(np.zeros(6), 3, "lower_is_better").tolist() == [0, 1, 2]


def test_removal_size_and_kept_rows():
    assert removal_size(256, 0.02) == 5
    assert removal_size(256, 0.1) == 26
    with pytest.raises(ValueError, match="removes 0"):
        removal_size(10, 0.01)
    assert kept_rows(6, [4, 1]).tolist() == [0, 2, 3, 5]
    with pytest.raises(ValueError, match="distinct"):
        kept_rows(6, [1, 1])


def test_random_control_is_reproducible_and_differs_per_query_and_size():
    a = random_removal(100, 10, seed=0, query=3)
    assert a.tolist() == random_removal(100, 10, seed=0, query=3).tolist()
    assert len(set(a.tolist())) == 10 and a.min() >= 0 and a.max() < 100
    assert a.tolist() != random_removal(100, 10, seed=0, query=4).tolist()
    assert a.tolist() != random_removal(100, 10, seed=1, query=3).tolist()


def test_seed_zero_is_the_full_models_seed():
    assert removal_training_seed(7, 0) == 7
    assert removal_training_seed(7, 1) != removal_training_seed(7, 2) != 7


def _measured():
    rows = []
    for ranker, shift in [("ekfac", 0.3), ("random_control", 0.0)]:
        for seed in range(2):
            for query in (0, 1):
                rows.append(
                    dict(
                        ranker=ranker,
                        target=0,
                        fraction=0.1,
                        k=5,
                        seed=seed,
                        query=query,
                        value=1.0 + seed + (shift if query == 0 else 0.0) + 0.01 * seed,
                        stderr=0.01,
                        image_l2=0.5 if query == 0 else np.nan,
                    )
                )
    return pd.DataFrame(rows)


def _reference():
    return pd.DataFrame([dict(seed=s, query=q, value=1.0 + s, stderr=0.02, image_l2=0.1 * s) for s in range(2) for q in (0, 1)])


def test_changes_pair_each_model_with_its_seed_reference():
    changes = removal_changes(_measured(), _reference())
    # Only the target query of each removal.
    assert set(changes["query"]) == {0}
    ekfac = changes[changes["ranker"] == "ekfac"].sort_values("seed")
    np.testing.assert_allclose(ekfac["change"], [0.3, 0.31])
    np.testing.assert_allclose(ekfac["change_stderr"], np.hypot(0.01, 0.02))
    summary = summarize_changes(changes).set_index("ranker")
    assert summary.loc["ekfac", "change"] == pytest.approx(0.305)
    assert summary.loc["ekfac", "change_se"] == pytest.approx(np.std([0.3, 0.31], ddof=1) / np.sqrt(2))
    assert summary.loc["random_control", "change"] == pytest.approx(0.005)
    assert summary.loc["ekfac", "image_l2"] == pytest.approx(0.5)
    assert summary.loc["ekfac", "reference_image_l2"] == pytest.approx(0.05)
    assert summary.loc["ekfac", "n"] == 2


def test_a_missing_reference_is_named():
    with pytest.raises(ValueError, match=r"no all-data reference measurement for \(seed, query\) \[\(1, 0\)\]"):
        removal_changes(_measured(), _reference().query("seed == 0"))


def test_resampled_rows_match_the_batch_they_came_from():
    torch.manual_seed(0)
    unet, scheduler = build_unet(UNET).eval(), build_scheduler({})
    batch = ddpm_sample(unet, scheduler, 5, 20, seed=3, batch_size=3)
    rows = ddpm_resample_rows(unet, scheduler, [4, 1], 5, 20, seed=3, batch_size=3)
    # Same noise, same model: equal up to the float differences of a smaller UNet batch.
    torch.testing.assert_close(rows, batch[[4, 1]], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="not all in 0..4"):
        ddpm_resample_rows(unet, scheduler, [5], 5, 20, seed=3)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"removal.measurement": "nope"}, "removal.measurement: 'nope' is not a key of measurements"),
        ({"removal.queries": [0, 500]}, "removal.queries: 500 is not a query row"),
        ({"removal.methods": ["ekfac_influence", "shampoo"]}, "removal.methods: 'shampoo' is not a key of methods"),
        ({"removal.fractions": [0.001]}, "removal.fractions: 0.001 x dataset.n_train 256 removes no example"),
        ({"removal.fractions": [0.1, 0.101]}, "remove the same number of examples"),
        ({"report.grid_queries": [0, 999]}, "report.grid_queries: 999 is not a query row"),
        ({"report.grid_measurement": "nope"}, "report.grid_measurement: 'nope' is not a key of measurements"),
    ],
)
def test_bad_removal_and_report_settings_are_named(changes, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        validate_config(with_changes(full_config(), changes))


def test_removal_needs_a_quality_measure_and_defaults_to_every_nonrandom_method():
    config = full_config()
    config["measurements"]["norm"] = {"type": "squared_norm"}
    config["removal"]["measurement"] = "norm"
    with pytest.raises(ConfigError, match="removal.measurement: 'norm' is not a quality measure"):
        validate_config(config)
    config = full_config()
    del config["removal"]["methods"]
    validated = validate_config(config)
    assert validated["removal"]["methods"] == [m for m, s in config["methods"].items() if s["type"] != "random"]
    config["removal"]["methods"] = ["random"]
    with pytest.raises(ConfigError, match="removal.methods: 'random' ranks no training example"):
        validate_config(config)
    del config["removal"]["methods"]
    del config["removal"]
    assert validate_config(config)["removal"]["queries"] == []
