"""The config is validated before any job runs, with errors naming the key."""

import pytest

from ldsbench.config import ConfigError, validate_config
from workflow_api import ROOT, default_config, load_yaml, tiny_config, with_changes


def test_shipped_configs_are_valid():
    for config in (default_config(), tiny_config()):
        validated = validate_config(config)
        assert validated["benchmark"]["subsets"] == config["benchmark"]["subsets"]
    default = validate_config(default_config())
    assert list(default["measurements"]) == ["loss", "elbo"] and default["removal"]["queries"] == []
    full = validate_config(load_yaml(ROOT / "configs" / "full.yaml"))
    assert len(full["measurements"]) == 6 and full["removal"]["queries"], "full.yaml holds every measurement and the removal branch"
    assert set(full["methods"]) == set(default["methods"]), "the full config runs the default's methods"


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
        ({"methods.trak.type": "shampoo"}, "methods.trak.type: 'shampoo' is not one of"),
        ({"methods.trak.lambda": "1e-3"}, "methods.trak.lambda: '1e-3' is a string"),
        ({"methods.ekfac_influence.curvature.kind": "shampoo"}, "methods.ekfac_influence.curvature.kind: 'shampoo' is not one of"),
        ({"methods.trak.projection_dims": 5}, "'projection_dims' was unexpected"),
        ({"dataset.n_train": 2}, "dataset.n_train: 2 is less than the minimum"),
        ({"queries.heldout": 1000}, "queries.heldout: 1000 exceeds dataset.n_heldout"),
        ({"model.unet.norm_num_groups": 5}, "model.unet.norm_num_groups: 5 does not divide"),
        ({"benchmark.subsets": 3}, "tuning.subset_fraction: 0.5 of benchmark.subsets = 3 leaves 2 tuning and 1 test subsets"),
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


def test_similarity_methods_need_a_local_model_file_and_a_sign_where_orientation_gives_none(tmp_path):
    config = default_config()
    config["methods"]["clip"] = {"type": "feature_similarity", "model_path": str(tmp_path / "clip.pt")}
    with pytest.raises(ConfigError, match=r"methods\.clip\.model_path: .*clip\.pt.*Nothing is downloaded"):
        validate_config(config)
    config = default_config()
    config["measurements"]["norm"] = {"type": "squared_norm"}
    config["methods"]["pixels"] = {"type": "pixel_similarity"}
    with pytest.raises(ConfigError, match=r"methods\.pixels\.sign: required, since measurements\.norm is not a quality measure"):
        validate_config(config)
    config["methods"]["pixels"]["sign"] = 1
    config["methods"]["pixel_similarity"]["sign"] = -1
    assert validate_config(config)["methods"]["pixels"]["metric"] == "cosine"


def test_confirm_retraining_from_the_command_line_is_a_boolean():
    # `--config confirm_retraining=true` gives the string "true".
    for text, value in [("true", True), ("True", True), ("false", False)]:
        assert validate_config({**default_config(), "confirm_retraining": text})["confirm_retraining"] is value
    with pytest.raises(ConfigError, match="confirm_retraining: 'yes please' is not of type 'boolean'"):
        validate_config({**default_config(), "confirm_retraining": "yes please"})


def test_dequantised_training_takes_the_datasets_levels_and_is_absent_by_default():
    # Absent by default, so the shipped configs' training params (and so
    # their models) are unchanged.
    assert {"dequantise", "levels"}.isdisjoint(validate_config(default_config())["training"])
    training = validate_config(with_changes(default_config(), {"training.dequantise": True}))["training"]
    assert training["dequantise"] is True and training["levels"] == 17


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"training.levels": 17}, "training.levels: only used with training.dequantise: true"),
        ({"training.dequantise": True, "training.levels": 256}, "training.levels: 256 but dataset 'digits' has 17 grey levels"),
        ({"training.dequantise": "yes"}, "training.dequantise: 'yes' is not of type 'boolean'"),
    ],
)
def test_bad_dequantisation_settings_are_named(changes, expected):
    with pytest.raises(ConfigError, match=expected):
        validate_config(with_changes(default_config(), changes))
