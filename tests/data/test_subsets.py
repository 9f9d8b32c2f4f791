"""Tests for ldsbench.data.subsets: seeded, exact-size (optionally stratified) subsets."""

import numpy as np
import pandas as pd
import pytest

from ldsbench.data.subsets import sample_subsets, stratified_quotas, subset_size, subsets_from_frame, subsets_to_frame


def test_every_subset_has_exact_size():
    mask = sample_subsets(n_train=101, n_subsets=30, fraction=0.5, seed=0)
    assert mask.shape == (30, 101) and mask.dtype == bool
    # round(50.5) = 50 under round-half-to-even.
    assert subset_size(101, 0.5) == 50
    assert (mask.sum(axis=1) == 50).all()


def test_reproducible_for_seed_and_different_across_seeds():
    a = sample_subsets(200, 10, 0.3, seed=7)
    b = sample_subsets(200, 10, 0.3, seed=7)
    c = sample_subsets(200, 10, 0.3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_subsets_differ_from_each_other():
    mask = sample_subsets(100, 50, 0.5, seed=0)
    assert len({row.tobytes() for row in mask}) == 50
    # Every example is drawn in some subsets and left out of others.
    counts = mask.sum(axis=0)
    assert counts.min() > 0 and counts.max() < 50


def test_stratified_subsets_keep_class_proportions():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    rng = np.random.default_rng(0)
    labels = rng.permutation(labels)
    mask = sample_subsets(100, 25, 0.3, seed=1, labels=labels)
    assert (mask.sum(axis=1) == 30).all()
    for cls, size in [(0, 15), (1, 9), (2, 6)]:
        assert (mask[:, labels == cls].sum(axis=1) == size).all()
    # Within a class the members still vary between subsets.
    assert len({row.tobytes() for row in mask}) == 25


def test_stratified_quotas_rounding_rule():
    # Classes of 3: round(1.5) = 2 each sums to 6, but round(0.5 * 9) = 4.
    # All are rounded up by 0.5, so ties go to the smaller labels first.
    labels = np.repeat(["a", "b", "c"], 3)
    assert stratified_quotas(labels, 0.5) == {"a": 1, "b": 1, "c": 2}
    # 0.3 * 5 = 1.5 rounds to 2 for both; the total must be round(3.0) = 3.
    assert stratified_quotas(np.repeat([4, 9], 5), 0.3) == {4: 1, 9: 2}
    # 0.4 * [3, 3, 4] = [1.2, 1.2, 1.6] rounds to [1, 1, 2], already the target 4.
    # 0.4 * [3, 3, 3, 1] = [1.2, 1.2, 1.2, 0.4] rounds to [1, 1, 1, 0], one short
    # of round(4.0) = 4: the largest shortfall (0.4, the singleton) gets it.
    assert stratified_quotas(np.repeat([0, 1, 2], [3, 3, 4]), 0.4) == {0: 1, 1: 1, 2: 2}
    assert stratified_quotas(np.repeat([0, 1, 2, 3], [3, 3, 3, 1]), 0.4) == {
        0: 1,
        1: 1,
        2: 1,
        3: 1,
    }
    mask = sample_subsets(9, 4, 0.5, seed=0, labels=labels)
    assert (mask.sum(axis=1) == 4).all()
    assert (mask[:, labels == "c"].sum(axis=1) == 2).all()


def test_frame_roundtrip():
    mask = sample_subsets(40, 6, 0.25, seed=3)
    frame = subsets_to_frame(mask)
    assert list(frame.columns) == ["subset", "train_index"]
    assert (frame.dtypes == np.int64).all()
    assert len(frame) == 6 * 10
    assert frame.equals(frame.sort_values(["subset", "train_index"], ignore_index=True))
    np.testing.assert_array_equal(subsets_from_frame(frame, 40), mask)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(fraction=0.0), "fraction"),
        (dict(fraction=1.0), "fraction"),
        (dict(fraction=-0.2), "fraction"),
        (dict(n_subsets=0), "n_subsets"),
        (dict(n_train=3, fraction=0.1), "fraction"),  # round(0.3) = 0 members
        (dict(n_train=3, fraction=0.9), "fraction"),  # round(2.7) = 3 = N members
        (dict(labels=np.zeros(5)), "labels"),  # wrong length
    ],
)
def test_invalid_arguments_raise(kwargs, name):
    args = dict(n_train=10, n_subsets=4, fraction=0.5, seed=0) | kwargs
    with pytest.raises(ValueError, match=name):
        sample_subsets(**args)


def test_from_frame_rejects_bad_frames():
    with pytest.raises(ValueError, match="train_index out of range"):
        subsets_from_frame(pd.DataFrame({"subset": [0, 0], "train_index": [1, 10]}), 10)
    with pytest.raises(ValueError, match=r"missing subsets.*\[1\]"):
        subsets_from_frame(pd.DataFrame({"subset": [0, 2], "train_index": [1, 2]}), 10)
    with pytest.raises(ValueError, match="duplicated"):
        subsets_from_frame(pd.DataFrame({"subset": [0, 0], "train_index": [1, 1]}), 10)
    with pytest.raises(ValueError, match="train_index"):
        subsets_from_frame(pd.DataFrame({"subset": [0]}), 10)
