"""The config is validated before any job runs, with errors naming the key."""

import pytest

from ldsbench.config import ConfigError, validate_config
from workflow_api import default_config, tiny_config, with_changes


def test_shipped_configs_are_valid():
    for config in (default_config(), tiny_config()):
        validated = validate_config(config)
        assert validated["benchmark"]["subsets"] == config["benchmark"]["subsets"]


def test_defaults_are_filled():
    config = default_config()
    del config["methods"]["trak"]["projection_dim"]
    validated = validate_config(config)
    assert validated["methods"]["trak"]["projection_dim"] == 2048
    assert validated["methods"]["ekfac_influence"]["curvature"]["dtype"] == "float64"
    assert validated["runtime"]["device"] == "auto"


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"benchmark.subset": 3}, "benchmark: Additional properties are not allowed ('subset' was unexpected)"),
        ({"benchmark.subsets": -1}, "benchmark.subsets: -1 is less than the minimum"),
        ({"benchmark.fraction": 1.5}, "benchmark.fraction: 1.5 is greater than or equal to the maximum"),
        ({"benchmark.fraction": 0.0}, "benchmark.fraction: 0.0 is less than or equal to the minimum"),
        ({"methods.trak.type": "tracin"}, "methods.trak.type: 'tracin' is not one of"),
        ({"methods.trak.lambda": "1e-3"}, "methods.trak.lambda: '1e-3' is a string"),
        ({"methods.ekfac_influence.curvature.kind": "shampoo"}, "methods.ekfac_influence.curvature.kind: 'shampoo' is not one of"),
        ({"methods.trak.projection_dims": 5}, "'projection_dims' was unexpected"),
        ({"dataset.n_train": 2}, "dataset.n_train: 2 is less than the minimum"),
        ({"queries.heldout": 1000}, "queries.heldout: 1000 exceeds dataset.n_heldout"),
        ({"model.unet.norm_num_groups": 5}, "model.unet.norm_num_groups: 5 does not divide"),
    ],
)
def test_bad_values_are_named(changes, expected):
    with pytest.raises(ConfigError) as error:
        validate_config(with_changes(default_config(), changes))
    assert expected in str(error.value)


def test_unknown_method_is_named():
    config = default_config()
    config["methods"]["my_method"] = {"type": "nonexistent"}
    with pytest.raises(ConfigError, match=r"methods\.my_method\.type: 'nonexistent' is not one of"):
        validate_config(config)


def test_missing_cifar_archive_says_how_to_get_it(tmp_path):
    config = with_changes(default_config(), {"dataset.name": "cifar2", "dataset.path": str(tmp_path / "absent.tar.gz")})
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert "cifar-10-python.tar.gz" in str(error.value) and "dataset.path" in str(error.value)


def test_validated_config_is_canonical():
    config = default_config()
    config["training"] = dict(reversed(list(config["training"].items())))
    validated = validate_config(config)
    assert list(validated["training"]) == sorted(validated["training"])
    assert list(validated["methods"]) == list(config["methods"]), "method order is the display order"
