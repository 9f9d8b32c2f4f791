"""Similarity baselines: exact values on hand-made examples, invariance to
order and batching, the feature-model file contract and its errors, and the
similarity -> score orientation rule."""

import math
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ldsbench.attribution.image_features import CLIP_MEAN, CLIP_STD, Preprocessing, image_features, load_feature_model, preprocess_images, resolve_preprocessing
from ldsbench.methods import similarity
from ldsbench.methods.similarity import feature_similarity, pixel_similarity, similarity_to_scores, vector_similarity
from ldsbench.spec.feature_models import FeatureModelError, check_feature_model_path
from ldsbench.spec.measurement_types import HIGHER_IS_BETTER, LOWER_IS_BETTER, MEASUREMENT_TYPES, NOT_A_QUALITY_MEASURE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Two queries and four training "images" of shape [1, 1, 2], i.e. 2-vectors.
QUERIES = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64).view(2, 1, 1, 2)
TRAIN = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64).view(4, 1, 1, 2)
EXPECTED = {
    # A zero vector has cosine 0 with everything.
    "cosine": [[0.0, -1.0, 0.6, 0.0], [0.8, -0.6, 1.0, 0.0]],
    "dot": [[0.0, -1.0, 0.3, 0.0], [0.8, -0.6, 0.5, 0.0]],
    "l2": [[-math.sqrt(2), -2.0, -math.sqrt(0.65), -1.0], [-math.sqrt(0.4), -math.sqrt(3.2), -0.5, -1.0]],
}


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_pixel_similarity_exact_values(metric):
    result = pixel_similarity(QUERIES, TRAIN, metric)
    assert result.dtype == np.float64 and result.shape == (2, 4)
    np.testing.assert_allclose(result, EXPECTED[metric], rtol=0, atol=1e-12)
    # numpy input and float32 storage: the same values up to float32 rounding of the inputs.
    np.testing.assert_allclose(pixel_similarity(QUERIES.numpy(), TRAIN.numpy(), metric), result, rtol=0, atol=1e-12)
    np.testing.assert_allclose(pixel_similarity(QUERIES.float(), TRAIN.float(), metric), result, rtol=0, atol=1e-7)


def _random_images(n, seed, shape=(3, 4, 5)):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_pixel_similarity_matches_reference_formulas(metric):
    queries, train = _random_images(5, 0), _random_images(7, 1)
    q, t = queries.reshape(5, -1), train.reshape(7, -1)
    reference = {
        "cosine": F.cosine_similarity(q[:, None, :], t[None, :, :], dim=2),
        "dot": q @ t.T,
        "l2": -torch.cdist(q, t, compute_mode="donot_use_mm_for_euclid_dist"),
    }[metric]
    np.testing.assert_allclose(pixel_similarity(queries, train, metric), reference.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_pixel_similarity_is_invariant_to_order(metric):
    queries, train = _random_images(6, 2), _random_images(9, 3)
    q_perm, t_perm = torch.randperm(6, generator=torch.Generator().manual_seed(4)), torch.randperm(9, generator=torch.Generator().manual_seed(5))
    full = pixel_similarity(queries, train, metric)
    permuted = pixel_similarity(queries[q_perm], train[t_perm], metric)
    np.testing.assert_allclose(permuted, full[q_perm.numpy()][:, t_perm.numpy()], rtol=0, atol=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_batching_does_not_change_results(metric, monkeypatch):
    queries, train = _random_images(7, 6), _random_images(11, 7)
    reference = pixel_similarity(queries, train, metric, batch_size=1000)
    for batch_size in (1, 2, 3, 5):
        np.testing.assert_allclose(pixel_similarity(queries, train, metric, batch_size=batch_size), reference, rtol=0, atol=1e-12)
    # The cap on values per block splits long vectors' blocks further (60 values: 2 rows per block).
    monkeypatch.setattr(similarity, "MAX_BLOCK_VALUES", 120)
    np.testing.assert_allclose(pixel_similarity(queries, train, metric, batch_size=1000), reference, rtol=0, atol=1e-12)


def test_pixel_similarity_rejects_bad_input():
    with pytest.raises(ValueError, match="same C, H, W"):
        pixel_similarity(torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 5))
    with pytest.raises(ValueError, match="unknown similarity metric 'euclid'"):
        pixel_similarity(QUERIES, TRAIN, "euclid")
    bad = TRAIN.clone()
    bad[2, 0, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="training examples 0..3 contain NaN"):
        pixel_similarity(QUERIES, bad)
    with pytest.raises(ValueError, match="floating point"):
        vector_similarity(torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 3))


# ----------------------------------------------------------------------------
# Orientation


def test_similarity_to_scores_follows_the_measurement_orientation():
    s = np.array([[0.5, -0.25], [1.0, 0.0]])
    # Similar training images are expected to lower a loss: a negative effect.
    np.testing.assert_array_equal(similarity_to_scores(s, LOWER_IS_BETTER), -s)
    np.testing.assert_array_equal(similarity_to_scores(s, HIGHER_IS_BETTER), s)
    assert similarity_to_scores(s.astype(np.float32), LOWER_IS_BETTER).dtype == np.float64
    assert (similarity_to_scores(s, MEASUREMENT_TYPES["loss"].orientation) == -s).all()
    assert (similarity_to_scores(s, MEASUREMENT_TYPES["elbo"].orientation) == s).all()


def test_orientation_names_are_the_measurements():
    assert similarity.LOWER_IS_BETTER == LOWER_IS_BETTER
    assert similarity.HIGHER_IS_BETTER == HIGHER_IS_BETTER
    assert similarity.NOT_A_QUALITY_MEASURE == NOT_A_QUALITY_MEASURE
    assert {m.orientation for m in MEASUREMENT_TYPES.values()} <= {LOWER_IS_BETTER, HIGHER_IS_BETTER, NOT_A_QUALITY_MEASURE}


def test_similarity_to_scores_needs_a_sign_for_non_quality_measures():
    s = np.array([[0.5, -0.25]])
    with pytest.raises(ValueError, match="not_a_quality_measure"):
        similarity_to_scores(s, MEASUREMENT_TYPES["squared_norm"].orientation)
    np.testing.assert_array_equal(similarity_to_scores(s, NOT_A_QUALITY_MEASURE, sign=1), s)
    np.testing.assert_array_equal(similarity_to_scores(s, NOT_A_QUALITY_MEASURE, sign=-1), -s)
    # An explicit sign is for measurements without a direction only: it never
    # overrides the rule on a quality measure.
    np.testing.assert_array_equal(similarity_to_scores(s, LOWER_IS_BETTER, sign=1), -s)
    np.testing.assert_array_equal(similarity_to_scores(s, HIGHER_IS_BETTER, sign=-1), s)
    with pytest.raises(ValueError, match="sign must be"):
        similarity_to_scores(s, LOWER_IS_BETTER, sign=2)
    with pytest.raises(ValueError, match="unknown orientation 'bigger'"):
        similarity_to_scores(s, "bigger")


# ----------------------------------------------------------------------------
# Preprocessing


def test_preprocessing_of_grey_images():
    # Grey value v in [-1, 1]: (v + 1) / 2, repeated to 3 channels, normalised per channel.
    images = torch.tensor([-1.0, 0.0, 0.5]).view(3, 1, 1, 1).expand(3, 1, 6, 6)
    prep = Preprocessing(6, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    out = preprocess_images(images, prep)
    assert out.shape == (3, 3, 6, 6) and out.dtype == torch.float32
    unit = torch.tensor([0.0, 0.5, 0.75])
    expected = torch.stack([(unit - 0.5) / 0.5, (unit - 0.25) / 0.25, unit / 2.0], dim=1)
    torch.testing.assert_close(out, expected.view(3, 3, 1, 1).expand(3, 3, 6, 6), rtol=0, atol=1e-7)


def test_preprocessing_resizes_bilinearly():
    images = _random_images(2, 8, shape=(3, 4, 4)).float()
    identity = Preprocessing(10, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    expected = F.interpolate((images + 1) / 2, size=(10, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(preprocess_images(images, identity), expected)
    # Same size: no resampling at all.
    torch.testing.assert_close(preprocess_images(images, Preprocessing(4, (0.0,) * 3, (1.0,) * 3)), (images + 1) / 2)
    with pytest.raises(ValueError, match=r"\[B, 1 or 3, H, W\]"):
        preprocess_images(torch.zeros(1, 2, 4, 4), identity)


def test_presets_and_overrides():
    clip = resolve_preprocessing("clip")
    assert clip.input_size == 224 and clip.mean == CLIP_MEAN and clip.std == CLIP_STD
    inception = resolve_preprocessing("inception")
    assert inception.input_size == 299 and inception.mean == (0.485, 0.456, 0.406) and inception.std == (0.229, 0.224, 0.225)
    custom = resolve_preprocessing("clip", input_size=336, std=[1, 1, 1])
    assert custom == Preprocessing(336, CLIP_MEAN, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="unknown preprocessing preset"):
        resolve_preprocessing("vgg")
    with pytest.raises(ValueError, match="std must be positive"):
        Preprocessing(8, (0, 0, 0), (1, 0, 1))
    with pytest.raises(ValueError, match="mean must have 3 values"):
        Preprocessing(8, (0, 0), (1, 1, 1))


# ----------------------------------------------------------------------------
# Feature models

# With mean = std = 0.5 the preprocessed value of v in [-1, 1] is v itself.
IDENTITY_RANGE = Preprocessing(4, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class ChannelMeanLinear(torch.nn.Module):
    """Features W (mean of each channel): [B, 3, S, S] -> [B, 2], keeping R and G."""

    def __init__(self, as_map: bool = False):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        self.as_map = as_map

    def forward(self, x):
        features = self.linear(x.mean(dim=(2, 3)))
        # Like Inception's pooled output [B, F, 1, 1].
        return features[:, :, None, None] if self.as_map else features


def _constant_images(values, size=3):
    values = torch.tensor(values, dtype=torch.float32)
    return values[:, :, None, None].expand(-1, -1, size, size).contiguous()


def _save_torchscript(module, path):
    torch.jit.save(torch.jit.trace(module.eval(), torch.zeros(2, 3, 4, 4)), str(path))
    return path


# Query features (1, 0); training features (0, 1), (0.6, 0.8) and, from a grey image of value 0.5, (0.5, 0.5).
FEATURE_QUERIES = _constant_images([[1.0, 0.0, 0.3]])
FEATURE_TRAIN_COLOUR = _constant_images([[0.0, 1.0, -1.0], [0.6, 0.8, 0.0]])
FEATURE_TRAIN_GREY = _constant_images([[0.5]])
FEATURE_EXPECTED = [[0.0, 0.6, 1 / math.sqrt(2)]]


@pytest.mark.parametrize("as_map", [False, True])
def test_torchscript_model_round_trip(tmp_path, as_map):
    path = _save_torchscript(ChannelMeanLinear(as_map), tmp_path / "encoder.pt")
    assert check_feature_model_path(path) == path.resolve()
    model = load_feature_model(path)
    features = image_features(model, torch.cat([FEATURE_QUERIES, FEATURE_TRAIN_COLOUR]), IDENTITY_RANGE)
    torch.testing.assert_close(features, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]))
    # Grey training images are repeated to 3 channels; cosines by hand.
    grey = feature_similarity(FEATURE_QUERIES, FEATURE_TRAIN_GREY, path, IDENTITY_RANGE)
    colour = feature_similarity(FEATURE_QUERIES, FEATURE_TRAIN_COLOUR, model, IDENTITY_RANGE)
    np.testing.assert_allclose(np.concatenate([colour, grey], axis=1), FEATURE_EXPECTED, rtol=0, atol=1e-7)


def test_feature_similarity_batching_and_order(tmp_path):
    model = load_feature_model(_save_torchscript(ChannelMeanLinear(), tmp_path / "encoder.pt"))
    queries, train = _random_images(5, 9).float(), _random_images(8, 10).float()
    reference = feature_similarity(queries, train, model, IDENTITY_RANGE, batch_size=64)
    assert reference.shape == (5, 8)
    for batch_size, similarity_batch_size in ((1, 1), (3, 2), (7, 1000)):
        result = feature_similarity(queries, train, model, IDENTITY_RANGE, batch_size=batch_size, similarity_batch_size=similarity_batch_size)
        np.testing.assert_allclose(result, reference, rtol=0, atol=1e-6)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(11))
    np.testing.assert_allclose(feature_similarity(queries, train[perm], model, IDENTITY_RANGE), reference[:, perm.numpy()], rtol=0, atol=1e-6)


def test_torch_export_archive_round_trip(tmp_path):
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(ChannelMeanLinear().eval(), (torch.zeros(2, 3, 4, 4),), dynamic_shapes=({0: batch},))
    path = tmp_path / "encoder.pt2"
    torch.export.save(program, str(path))
    colour = feature_similarity(FEATURE_QUERIES, FEATURE_TRAIN_COLOUR, path, IDENTITY_RANGE)
    np.testing.assert_allclose(colour, [FEATURE_EXPECTED[0][:2]], rtol=0, atol=1e-7)


def test_model_must_return_a_tensor(tmp_path):
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)), x.amax(dim=(2, 3))

    model = torch.jit.trace(Pair(), torch.zeros(2, 3, 4, 4))
    with pytest.raises(TypeError, match="not a tensor"):
        image_features(model, FEATURE_QUERIES, IDENTITY_RANGE)


def _assert_names_path_and_remedy(error, path):
    message = str(error.value)
    assert str(path.resolve()) in message
    assert "Nothing is downloaded" in message and "torch.jit.save(torch.jit.trace(" in message


def test_path_check_does_not_import_torch(tmp_path):
    """The workflow checks the path while validating its config, before any torch import."""
    path = _save_torchscript(ChannelMeanLinear(), tmp_path / "encoder.pt")
    code = (
        "import sys; from ldsbench.spec.feature_models import check_feature_model_path; "
        f"check_feature_model_path({str(path)!r}); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_model_file_error_names_the_path(tmp_path):
    path = tmp_path / "models" / "clip.pt"
    for check in (check_feature_model_path, load_feature_model):
        with pytest.raises(FeatureModelError, match="no such file") as error:
            check(path)
        _assert_names_path_and_remedy(error, path)
    with pytest.raises(FeatureModelError, match="no such file"):
        feature_similarity(QUERIES, TRAIN, str(path))
    with pytest.raises(FeatureModelError, match="not a file") as error:
        check_feature_model_path(tmp_path)
    _assert_names_path_and_remedy(error, tmp_path)


def test_files_that_are_not_torchscript_are_rejected(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a model")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(_save_torchscript(ChannelMeanLinear(), tmp_path / "ok.pt").read_bytes()[:200])
    for path in (text, truncated):
        with pytest.raises(FeatureModelError, match="not a TorchScript file.*zip archive") as error:
            check_feature_model_path(path)
        _assert_names_path_and_remedy(error, path)

    checkpoint = tmp_path / "state_dict.pt"
    torch.save(ChannelMeanLinear().state_dict(), checkpoint)
    with pytest.raises(FeatureModelError, match="torch.save checkpoint") as error:
        load_feature_model(checkpoint)
    _assert_names_path_and_remedy(error, checkpoint)

    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("other/readme.txt", "hello")
    with pytest.raises(FeatureModelError, match="without TorchScript's code/"):
        check_feature_model_path(other_zip)

    # Passes the cheap check, fails to load: the loader's error also names the path.
    fake = tmp_path / "fake.pt"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("fake/constants.pkl", b"garbage")
        archive.writestr("fake/code/__torch__/m.py", "garbage")
    assert check_feature_model_path(fake) == fake.resolve()
    with pytest.raises(FeatureModelError, match="could not be loaded as a torchscript module") as error:
        load_feature_model(fake)
    _assert_names_path_and_remedy(error, fake)


def test_a_sign_for_squared_norm_keeps_the_rule_on_every_other_measurement():
    """A pixel-similarity method with ``sign: 1`` (needed for squared_norm)
    scored on a lower-is-better measurement still gets tau = -s there."""
    import torch

    from ldsbench.spec.method_types import ScoringJob, scorer

    generator = torch.Generator().manual_seed(0)
    train, queries = torch.rand(6, 1, 8, 8, generator=generator) * 2 - 1, torch.rand(3, 1, 8, 8, generator=generator) * 2 - 1
    measurements = {"loss": {"type": "loss"}, "selbo": {"type": "simplified_elbo"}, "elbo": {"type": "elbo", "levels": 17}, "norm": {"type": "squared_norm"}}
    job = ScoringJob(None, None, train, queries, {"type": "pixel_similarity", "metric": "cosine", "sign": 1}, measurements)
    _, scores = scorer("pixel_similarity")(job)
    s = pixel_similarity(queries, train, "cosine")
    for name in ("loss", "selbo"):
        np.testing.assert_allclose(scores[name][0], -s, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(scores["elbo"][0], s, rtol=1e-6)
    np.testing.assert_allclose(scores["norm"][0], s, rtol=1e-6)
