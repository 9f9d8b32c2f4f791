"""The four training kinds: what each trains on, with which seed and steps."""

import numpy as np
import pytest

from ldsbench.runtime.seeds import stream_seed
from ldsbench.spec.training_runs import removal_training_seed, training_run

TRAINING = {"seed": 7, "subset_steps": 50}


def test_full_and_full_seed_runs_train_on_everything():
    full = training_run("full", 5, TRAINING)
    assert full.rows.tolist() == [0, 1, 2, 3, 4] and full.overrides == {}
    other = training_run("full_seed", 5, TRAINING, seed=2)
    assert other.rows.tolist() == full.rows.tolist()
    # The all-data reference of removal seed 2 is this model: same training seed.
    assert other.overrides == {"seed": removal_training_seed(7, 2)} and other.overrides["seed"] != 7
    with pytest.raises(ValueError, match="seed 0 is the full model itself"):
        training_run("full_seed", 5, TRAINING, seed=0)


def test_subset_run_uses_its_rows_steps_and_own_seed_stream():
    run = training_run("subset", 10, TRAINING, subset=3, seed=1, subset_rows=[8, 2, 5])
    assert run.rows.tolist() == [2, 5, 8]
    assert run.overrides == {"steps": 50, "seed": stream_seed(7, "subset", 3, 1)}
    with pytest.raises(ValueError, match="subset 3 has no training rows"):
        training_run("subset", 10, TRAINING, subset=3, seed=1, subset_rows=[])


def test_removal_run_leaves_out_its_rows_and_shares_the_reference_seed():
    run = training_run("removal", 6, TRAINING, seed=0, removed_rows=[4, 1])
    assert run.rows.tolist() == [0, 2, 3, 5] and run.removed_rows == (4, 1)
    assert run.overrides == {"seed": 7}, "removal seed 0 trains like the full model"
    assert np.array_equal(training_run("removal", 6, TRAINING, seed=0).rows, np.arange(6))


@pytest.mark.parametrize(
    ("kind", "indices", "message"),
    [
        ("subsets", {}, "unknown training kind 'subsets'"),
        ("full", {"seed": 1}, "a full training run takes no subset or seed"),
        ("subset", {"seed": 1}, "a subset training run takes a subset and a seed"),
        ("removal", {}, "a removal training run takes a seed"),
    ],
)
def test_wrong_indices_are_named(kind, indices, message):
    with pytest.raises(ValueError, match=message):
        training_run(kind, 4, TRAINING, **indices)
