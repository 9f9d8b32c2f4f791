"""Methods from outside the package: an external method's file (its checks,
its code version, its returned scores) and score files of other libraries
(format, layout, sign, benchmark), without running the workflow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ldsbench.methods.external import ExternalMethodError, checked_scores, load_scorer
from ldsbench.methods.scores_file import ScoreFileError, oriented_scores
from ldsbench.runtime.code_versions import local_import_closure
from ldsbench.spec.config import ConfigError, validate_config
from ldsbench.spec.external_files import external_method_errors, score_file_errors
from workflow_api import ROOT, tiny_config

EXAMPLE = ROOT / "tests" / "external_methods" / "gradient_kernel.py"
MEASUREMENTS = ["elbo", "loss"]


def _config_with(method: dict) -> dict:
    config = tiny_config()
    config["methods"] = {"mine": method}
    config["removal"]["methods"] = []
    config["removal"]["queries"] = []
    return config


def _errors(method: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(_config_with(method))
    return str(caught.value)


def test_the_tiny_benchmarks_external_method_validates():
    method = validate_config(tiny_config())["methods"]["kernel"]
    assert method["scorer"] == "score" and method["needs"] == [] and method["params"]["dim"] == 64


def test_a_missing_file_a_missing_function_and_undeclarable_inputs_stop_before_any_job(tmp_path):
    assert "methods.mine.path: " in _errors({"type": "external", "path": str(tmp_path / "absent.py")})
    assert "does not exist" in _errors({"type": "external", "path": str(tmp_path / "absent.py")})
    message = _errors({"type": "external", "path": str(EXAMPLE), "scorer": "attribute"})
    assert "methods.mine.scorer: " in message and "no top-level 'attribute'" in message and "score" in message
    assert "methods.mine.needs.0" in _errors({"type": "external", "path": str(EXAMPLE), "needs": ["feature_model"]})
    assert "methods.mine.models" in _errors({"type": "external", "path": str(EXAMPLE), "needs": ["ensemble"]})
    broken = tmp_path / "broken.py"
    broken.write_text("def score(inputs)\n")
    assert "does not parse" in external_method_errors({"path": str(broken), "scorer": "score"})[0]


def test_the_code_version_covers_the_file_and_the_modules_of_its_folder_it_imports(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("from .maths import f\n")
    (tmp_path / "pkg" / "maths.py").write_text("import numpy\n")
    (tmp_path / "helper.py").write_text("def g(): pass\n")
    (tmp_path / "unused.py").write_text("")
    main = tmp_path / "method.py"
    main.write_text("import os\nimport helper\n\ndef score(inputs):\n    from pkg import f\n")
    files = local_import_closure(main)
    assert files[0] == main.resolve()
    assert sorted(p.name for p in files[1:]) == ["__init__.py", "helper.py", "maths.py"]
    assert [p.name for p in local_import_closure(EXAMPLE)] == ["gradient_kernel.py", "projected.py"]


def test_a_scorer_function_is_loaded_with_its_folder_importable():
    scorer = load_scorer(EXAMPLE, "score", "kernel")
    assert scorer.__module__ == "ldsbench_external_kernel"
    with pytest.raises(ExternalMethodError, match="method kernel: .* has no function 'nothing'"):
        load_scorer(EXAMPLE, "nothing", "kernel")


def test_returned_scores_are_checked_and_named():
    good = {"loss": np.ones((3, 5)), "elbo": torch.zeros(3, 5)}
    values, scores = checked_scores(good, "mine", MEASUREMENTS, 3, 5)
    assert np.isnan(values).all() and scores["loss"].shape == (1, 3, 5) and scores["elbo"].dtype == np.float32
    values, scores = checked_scores(([1.0, 0.1], {m: np.ones((2, 3, 5)) for m in MEASUREMENTS}), "mine", MEASUREMENTS, 3, 5)
    assert values == [1.0, 0.1] and scores["loss"].shape == (2, 3, 5)
    cases = {
        "scores of shape \\[5, 3\\]; expected \\[Q, N\\] = \\[3, 5\\]": {"loss": np.ones((5, 3)), "elbo": np.ones((3, 5))},
        "scores for \\['loss'\\]; expected every measurement": {"loss": np.ones((3, 5))},
        "1 scores are NaN or infinite": {"loss": np.ones((3, 5)), "elbo": _one_nan()},
        "returned list": [np.ones((3, 5))],
    }
    for message, returned in cases.items():
        with pytest.raises(ExternalMethodError, match=f"method mine.*{message}"):
            checked_scores(returned, "mine", MEASUREMENTS, 3, 5)
    with pytest.raises(ExternalMethodError, match="distinct numbers"):
        checked_scores(([1.0, 1.0], {m: np.ones((2, 3, 5)) for m in MEASUREMENTS}), "mine", MEASUREMENTS, 3, 5)
    with pytest.raises(ExternalMethodError, match="infinite"):
        checked_scores({m: np.full((3, 5), 1e300) for m in MEASUREMENTS}, "mine", MEASUREMENTS, 3, 5)


def _one_nan() -> np.ndarray:
    array = np.zeros((3, 5))
    array[1, 2] = np.nan
    return array


# Score files of other libraries.

BENCHMARK = "0123456789abcdef"


def _write(path, matrix, benchmark=BENCHMARK):
    if path.suffix == ".npz":
        np.savez(path, scores=matrix, benchmark=np.array(benchmark))
    elif path.suffix == ".pt":
        torch.save({"scores": torch.from_numpy(matrix), "benchmark": benchmark}, path)
    else:
        np.save(path, matrix)
        path.with_suffix(".json").write_text(json.dumps({"benchmark": benchmark}))
    return path


@pytest.mark.parametrize("suffix", [".npz", ".pt", ".npy"])
def test_every_format_layout_and_sign_reads_back_the_benchmarks_scores_exactly(tmp_path, suffix):
    tau = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    as_is = _write(tmp_path / f"a{suffix}", tau)
    reported = _write(tmp_path / f"b{suffix}", np.ascontiguousarray((-tau).T))
    read = oriented_scores(as_is, layout="query_by_train", sign="effect_of_including", n_queries=3, n_train=5, benchmark=BENCHMARK)
    np.testing.assert_array_equal(read, tau)
    read = oriented_scores(reported, layout="train_by_query", sign="influence_as_reported", n_queries=3, n_train=5, benchmark=BENCHMARK)
    np.testing.assert_array_equal(read, tau)


def test_a_wrong_layout_a_wrong_shape_another_benchmark_and_nan_get_their_messages(tmp_path):
    tau = np.ones((3, 5), dtype=np.float32)
    path = _write(tmp_path / "s.npz", tau)
    read = dict(sign="effect_of_including", n_queries=3, n_train=5, benchmark=BENCHMARK, method="mine")
    with pytest.raises(ScoreFileError, match="method mine: .*shape \\[3, 5\\], which is layout query_by_train, but the method says layout: train_by_query"):
        oriented_scores(path, layout="train_by_query", **read)
    with pytest.raises(ScoreFileError, match="shape \\[3, 5\\]; layout query_by_train of 4 queries and 5 training examples is \\[4, 5\\]"):
        oriented_scores(path, layout="query_by_train", **{**read, "n_queries": 4})
    with pytest.raises(ScoreFileError, match="method mine: .* scores benchmark 0123456789abcdef, not this one \\(fedcba9876543210\\)"):
        oriented_scores(path, layout="query_by_train", **{**read, "benchmark": "fedcba9876543210"})
    tau[0, 0] = np.inf
    with pytest.raises(ScoreFileError, match="1 NaN or infinite"):
        oriented_scores(_write(tmp_path / "t.npz", tau), layout="query_by_train", **read)


def test_score_files_are_checked_against_the_config_before_any_job(tmp_path):
    _write(tmp_path / "loss.npz", np.ones((6, 48), dtype=np.float32))
    _write(tmp_path / "elbo.npz", np.ones((48, 6), dtype=np.float32))
    np.save(tmp_path / "bare.npy", np.ones((6, 48)))
    np.savez(tmp_path / "unnamed.npz", scores=np.ones((6, 48)))
    method = {"type": "scores_file", "layout": "query_by_train", "sign": "effect_of_including"}
    paths = {"loss": str(tmp_path / "loss.npz"), "elbo": str(tmp_path / "elbo.npz")}
    message = _errors({**method, "path": paths})
    assert "methods.mine.path.elbo: " in message and "which is layout train_by_query" in message and "path.loss" not in message
    assert "no score file for measurement 'elbo'" in _errors({**method, "path": {"loss": paths["loss"]}})
    assert "'other' is not a configured measurement" in _errors({**method, "path": {**paths, "other": paths["loss"]}})
    assert "bare.json naming its benchmark" in _errors({**method, "path": str(tmp_path / "bare.npy")})
    assert "lacks ['benchmark']" in _errors({**method, "path": str(tmp_path / "unnamed.npz")})
    assert "is not one of .npz, .pt, .npy" in _errors({**method, "path": str(tmp_path / "scores.csv")})
    assert "methods.mine: 'layout' is a required property" in _errors({"type": "scores_file", "path": paths["loss"], "sign": "effect_of_including"})
    assert score_file_errors({**method, "path": paths["loss"]}, MEASUREMENTS, 6, 48) == []
