"""The config is validated before any job runs, with errors naming the key."""

import subprocess
import sys

import pytest
import yaml

from ldsbench.spec.config import ConfigError, validate_config
from workflow_api import ROOT, default_config, load_yaml, tiny_config, with_changes


def test_shipped_configs_are_valid():
    for config in (default_config(), tiny_config()):
        validated = validate_config(config)
        assert validated["benchmark"]["subsets"] == config["benchmark"]["subsets"]
    default = validate_config(default_config())
    assert list(default["measurements"]) == ["loss", "elbo"] and default["removal"]["queries"] == []
    full = validate_config(load_yaml(ROOT / "configs" / "full.yaml"))
    assert len(full["measurements"]) == 6 and full["removal"]["queries"], "full.yaml holds every measurement and the removal branch"
    assert set(full["methods"]) >= set(default["methods"]), "the full config runs the default's methods"


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
        ({"benchmark.subsets": 3}, "tuning.folds: 2 folds of benchmark.subsets = 3 leave 1 subsets in the smallest fold; each needs at least 2"),
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
    with pytest.raises(ConfigError, match=r"methods\.nda\.sign: required, since measurements\.norm"):
        validate_config(config)
    config["methods"]["nda"]["sign"] = 1
    assert validate_config(config)["methods"]["pixels"]["metric"] == "cosine"


def test_nda_timesteps_must_be_the_schedulers():
    config = default_config()
    config["methods"]["nda"]["timestep_grid"] = [200, 1000]
    with pytest.raises(ConfigError, match=r"methods\.nda\.timestep_grid: timestep 1000 is not below model\.scheduler\.num_train_timesteps 1000"):
        validate_config(config)
    config["methods"]["nda"]["timestep_grid"] = [200]
    config["methods"]["nda"]["two_scale"] = {"patch": 3, "alpha": 0.5}
    with pytest.raises(ConfigError, match=r"methods\.nda\.two_scale\.patch"):
        validate_config(config)


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


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"model.unet.sample_size": 16}, ["model.unet.sample_size: 16, but digits images are 8x8"]),
        (
            {"model.unet.in_channels": 3, "model.unet.out_channels": 3},
            ["model.unet.in_channels: 3, but digits images are 1-channel", "model.unet.out_channels: 3, but digits images are 1-channel"],
        ),
        ({"dataset.name": "cifar2"}, ["model.unet.sample_size: 8, but cifar2 images are 32x32", "model.unet.in_channels: 1, but cifar2 images are 3-channel"]),
        ({"dataset.name": "cifar10", "model.unet.sample_size": 32}, ["model.unet.out_channels: 1, but cifar10 images are 3-channel"]),
    ],
)
def test_a_unet_that_does_not_fit_the_builtin_datasets_images_is_refused(tmp_path, changes, expected):
    # Without model.vae the UNet sees the images themselves: digits 1x8x8, CIFAR 3x32x32.
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.touch()
    with pytest.raises(ConfigError) as error:
        validate_config(with_changes(default_config(), {"dataset.path": str(archive), **changes}))
    for message in expected:
        assert message in str(error.value)
    fitting = {"model.unet.sample_size": 32, "model.unet.in_channels": 3, "model.unet.out_channels": 3}
    assert validate_config(with_changes(default_config(), {"dataset.name": "cifar2", "dataset.path": str(archive), **fitting}))


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("training.learning_rate", ".nan", "training.learning_rate: nan is not a finite number"),
        ("training.learning_rate", ".inf", "training.learning_rate: inf is not a finite number"),
        ("model.unet.dropout", "-.inf", "model.unet.dropout: -inf is not a finite number"),
        ("methods.trak.lambda_grid", "[0.1, .NaN]", "methods.trak.lambda_grid.1: nan is not a finite number"),
        ("benchmark.subsets", ".nan", "benchmark.subsets: nan is not a finite number"),
    ],
)
def test_nan_and_infinity_are_refused_anywhere_before_the_schema(key, text, expected):
    # YAML reads .nan and .inf as floats, and the schema's minimum and maximum
    # comparisons are all False for NaN; they would fail later in PyTorch.
    with pytest.raises(ConfigError) as error:
        validate_config(with_changes(default_config(), {key: yaml.safe_load(text)}))
    assert expected in str(error.value)
    assert "is not of type" not in str(error.value), "checked before the schema, which would trip over NaN"


def test_a_nan_map_key_is_refused():
    config = default_config()
    config["measurements"][yaml.safe_load(".nan")] = {"type": "loss", "draws": 32, "strata": 8}
    with pytest.raises(ConfigError, match=r"measurements\.nan: the key nan is not a finite number"):
        validate_config(config)


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"model.unet.down_block_types": ["DownBlock2D", "AttnDownBlokc2D"]},
            "model.unet.down_block_types[1]: 'AttnDownBlokc2D' is not a diffusers down block type; valid: DownBlock2D, ResnetDownsampleBlock2D, AttnDownBlock2D,",
        ),
        (
            {"model.unet.up_block_types": ["AttnUpBlock2D", "Upblock2D"]},
            "model.unet.up_block_types[1]: 'Upblock2D' is not a diffusers up block type; valid: UpBlock2D, ResnetUpsampleBlock2D,",
        ),
    ],
)
def test_an_unknown_unet_block_type_is_named_with_the_valid_ones(changes, expected):
    with pytest.raises(ConfigError) as error:
        validate_config(with_changes(default_config(), changes))
    assert expected in str(error.value)
    # diffusers reads a "UNetRes" prefix as no prefix.
    assert validate_config(with_changes(default_config(), {"model.unet.down_block_types": ["UNetResDownBlock2D", "AttnDownBlock2D"]}))


def test_the_unet_block_types_are_those_diffusers_dispatches():
    """The lists are hard-coded (parsing must not import torch); they must be
    exactly the names that diffusers' get_down_block / get_up_block build."""
    import inspect
    import re

    from diffusers.models.unets import unet_2d_blocks

    from ldsbench.spec.datasets import UNET_DOWN_BLOCK_TYPES, UNET_UP_BLOCK_TYPES

    for kind, listed in (("down", UNET_DOWN_BLOCK_TYPES), ("up", UNET_UP_BLOCK_TYPES)):
        source = inspect.getsource(getattr(unet_2d_blocks, f"get_{kind}_block"))
        assert re.findall(rf'{kind}_block_type == "(\w+)"', source) == list(listed)
        assert f'{kind}_block_type[7:] if {kind}_block_type.startswith("UNetRes")' in source
        arguments = dict(num_layers=1, in_channels=8, out_channels=8, temb_channels=32, resnet_eps=1e-5, resnet_act_fn="silu", resnet_groups=4)
        if kind == "down":
            arguments["add_downsample"] = True
        else:
            arguments.update(prev_output_channel=8, add_upsample=True)
        with pytest.raises(ValueError, match="does not exist"):
            getattr(unet_2d_blocks, f"get_{kind}_block")(f"Nonexistent{kind}Block2D", **arguments)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"dataset.n_heldout": 5000}, "dataset.n_train + dataset.n_heldout: 256 + 5000 = 5256 exceeds the 1797 images of digits"),
        ({"dataset.classes": [0, 1]}, "dataset.n_train + dataset.n_heldout: 256 + 64 = 320 exceeds the 360 images of digits classes [0, 1]"),
        ({"dataset.classes": [3, 10]}, "dataset.classes: 10 is not a class of digits (0..9)"),
    ],
)
def test_more_digits_than_there_are_are_refused(changes, expected):
    if "exceeds the 360" in expected:
        # 178 zeros and 182 ones: 320 fit, 321 do not.
        assert validate_config(with_changes(default_config(), changes))
        changes = {**changes, "dataset.n_train": 257, "dataset.n_heldout": 104}
        expected = "dataset.n_train + dataset.n_heldout: 257 + 104 = 361 exceeds the 360 images of digits classes [0, 1]"
    with pytest.raises(ConfigError) as error:
        validate_config(with_changes(default_config(), changes))
    assert expected in str(error.value)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"dataset.n_train": 10002}, "dataset.n_train: 10002 / 2 classes = 5001 training images per class; the CIFAR-10 training batches hold 5000"),
        ({"dataset.n_heldout": 2001, "queries.heldout": 12}, "dataset.n_heldout: 2001 exceeds the 2000 test-batch images of classes [1, 7]"),
        ({"dataset.classes": [1, 10]}, "dataset.classes: 10 is not a class of cifar2 (0..9)"),
        ({"dataset.n_train": 257}, "dataset.n_train: 257 is not a multiple of the 2 classes"),
    ],
)
def test_more_cifar_images_than_there_are_are_refused(tmp_path, changes, expected):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.touch()
    fitting = {"dataset.name": "cifar2", "dataset.path": str(archive), "model.unet.sample_size": 32, "model.unet.in_channels": 3, "model.unet.out_channels": 3}
    assert validate_config(with_changes(default_config(), {**fitting, "dataset.n_train": 10000, "dataset.n_heldout": 2000}))
    with pytest.raises(ConfigError) as error:
        validate_config(with_changes(default_config(), {**fitting, **changes}))
    assert expected in str(error.value)


def test_the_builtin_dataset_sizes_are_those_of_the_data():
    """Hard-coded (parsing must not import scikit-learn); checked here."""
    import numpy as np
    from sklearn.datasets import load_digits

    from ldsbench.spec.datasets import DIGITS_CLASS_COUNTS

    digits = load_digits()
    assert tuple(np.bincount(digits.target)) == DIGITS_CLASS_COUNTS and digits.images.shape[1:] == (8, 8)


def test_validating_a_config_imports_no_torch_diffusers_or_sklearn():
    code = (
        "import sys; sys.path.insert(0, 'tests/helpers'); from workflow_api import default_config; from ldsbench.spec.config import validate_config; "
        "validate_config(default_config()); loaded = {'torch', 'diffusers', 'sklearn'} & set(sys.modules); assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
