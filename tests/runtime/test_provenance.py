"""Corrupted files are detected, writes are atomic, artifacts that do not
belong together are refused, and retraining of finished models is reported."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from files import flip_byte
from ldsbench.runtime.io import atomic_path, read_parquet_metadata, save_npy, save_parquet, state_digest
from ldsbench.runtime.provenance import (
    ArtifactMismatchError,
    CorruptedArtifactError,
    check_compatible,
    subsets_sha256,
    training_hash,
    verify_checksums,
    write_checksums,
)
from ldsbench.spec.protection import config_changes, existing_model_changes, retraining_report


def test_parquet_metadata_round_trip(tmp_path):
    frame = pd.DataFrame({"query": [0, 1], "value": [0.5, 0.25]})
    save_parquet(tmp_path / "a.parquet", frame, metadata={"queries_sha256": "abc"})
    save_parquet(tmp_path / "b.parquet", frame)
    assert read_parquet_metadata(tmp_path / "a.parquet") == {"queries_sha256": "abc"}
    assert read_parquet_metadata(tmp_path / "b.parquet") == {}
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a.parquet"), frame)


def test_state_digest_sees_every_element_and_ignores_key_order():
    state = {"w": torch.arange(6.0).reshape(2, 3), "opt": [{"lr": 0.1}, np.zeros(2)], "step": 3}
    reordered = {"step": 3, "opt": [{"lr": 0.1}, np.zeros(2)], "w": torch.arange(6.0).reshape(2, 3)}
    assert state_digest(state) == state_digest(reordered)
    changed = {**state, "w": state["w"].clone()}
    changed["w"][1, 2] += 1e-6
    assert state_digest(changed) != state_digest(state)
    assert state_digest({"w": torch.ones(2, dtype=torch.bfloat16)}) != state_digest({"w": torch.ones(2)})


def test_checksums_detect_a_flipped_byte_and_a_truncation(tmp_path):
    scores, sweep = tmp_path / "scores.npy", tmp_path / "scores.sweep.npz"
    save_npy(scores, np.arange(12, dtype=np.float32).reshape(3, 4))
    np.savez(sweep, values=np.ones(2))
    files = {"scores": scores, "sweep": sweep}
    write_checksums(tmp_path / "scores.json", files, {"queries_sha256": "q"})
    assert verify_checksums(tmp_path / "scores.json", files) == {"queries_sha256": "q"}

    flip_byte(scores)
    with pytest.raises(CorruptedArtifactError, match="scores.npy does not match the checksum"):
        verify_checksums(tmp_path / "scores.json", files)
    flip_byte(scores)
    sweep.write_bytes(sweep.read_bytes()[:-10])
    with pytest.raises(CorruptedArtifactError, match="scores.sweep.npz"):
        verify_checksums(tmp_path / "scores.json", files)


def test_mismatched_provenance_is_refused_with_the_field_named():
    truth = {"queries_sha256": "q1", "train_sha256": "t", "subsets_sha256": "s"}
    check_compatible({"queries_sha256": "q1", "train_sha256": "t"}, truth, "scores.npy", "truth.parquet")
    with pytest.raises(ArtifactMismatchError, match=r"scores\.npy and truth\.parquet do not belong together \(queries_sha256: q2 vs q1\)"):
        check_compatible({"queries_sha256": "q2", "train_sha256": "t"}, truth, "scores.npy", "truth.parquet")
    with pytest.raises(ArtifactMismatchError, match="records no"):
        check_compatible({}, truth, "scores.npy", "truth.parquet", required=["queries_sha256"])


def test_subsets_hash_ignores_row_order_and_training_hash_ignores_step_counts():
    frame = pd.DataFrame({"subset": [0, 0, 1], "train_index": [3, 1, 2]})
    assert subsets_sha256(frame) == subsets_sha256(frame.iloc[::-1])
    assert subsets_sha256(frame) != subsets_sha256(frame.assign(train_index=[3, 1, 0]))
    assert training_hash({"steps": 10, "lr": 1.0}) == training_hash({"subset_steps": 5, "lr": 1.0})
    assert training_hash({"lr": 1.0}) != training_hash({"lr": 2.0})


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_writer_killed_mid_write_leaves_no_complete_looking_file(tmp_path):
    target = tmp_path / "scores.npy"
    script = textwrap.dedent(
        f"""
        import os, signal
        from ldsbench.runtime.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"x" * 1000)
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", script], env=env)
    assert result.returncode == -signal.SIGKILL
    assert not target.exists(), "a killed writer must not leave the final file"


def test_config_changes_lists_dotted_keys():
    old = {"training": {"steps": 10, "lr": 1.0}, "model": {"unet": {"blocks": [8, 16]}}}
    new = {"training": {"steps": 20, "lr": 1.0}, "model": {"unet": {"blocks": [8, 32]}}}
    assert config_changes(old, new) == ["model.unet.blocks: [8, 16] -> [8, 32]", "training.steps: 10 -> 20"]
    assert config_changes(old, old) == []


def test_retraining_report_names_models_and_changes(tmp_path):
    model = tmp_path / "models" / "subset_0" / "seed_0"
    assert existing_model_changes(model, {}, {}) is None, "no finished model, nothing to protect"
    model.mkdir(parents=True)
    (model / "manifest.json").write_text(json.dumps({"config": {"model": {"size": 8}, "training": {"subset_steps": 60}}}))
    changes = existing_model_changes(model, {"size": 8}, {"subset_steps": 61})
    assert changes == ["training.subset_steps: 60 -> 61"]
    report = retraining_report({str(model): changes})
    assert "retrain 1 finished model" in report and "training.subset_steps: 60 -> 61" in report
    assert "confirm_retraining=true" in report and "snakemake rescore" in report
    assert "upgrade" not in report, "settings changed: rescoring first would not help"
    assert "run `snakemake rescore` first" in retraining_report({str(model): []})
