"""Training resumes exactly, stops on divergence, and samples batches per epoch."""

import numpy as np
import pytest
import torch

from ldsbench.diffusion.model import build_scheduler
from ldsbench.diffusion.training import TrainingDivergedError, TrainingSettings, batch_indices, step_draws, train_diffusion_model
from tiny_models import UNET


class Interrupt(Exception):
    pass


def _interrupt_at(stop_step):
    """A progress callback that stops training after ``stop_step``."""

    def progress(step, loss):
        if step == stop_step:
            raise Interrupt

    return progress


def _images(n=12, seed=0):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_batches_cover_each_epoch_once():
    rows = np.concatenate([batch_indices(10, 5, step, seed=3) for step in range(4)])
    assert sorted(rows[:10]) == list(range(10)) and sorted(rows[10:]) == list(range(10))
    assert not np.array_equal(rows[:10], rows[10:])
    np.testing.assert_array_equal(batch_indices(10, 4, 2, seed=3), np.concatenate([batch_indices(10, 4, 2, seed=3)]))


def test_resumed_training_is_bitwise_identical(tmp_path):
    settings = TrainingSettings(steps=12, batch_size=4, learning_rate=1e-3, checkpoint_every=5, seed=1)
    scheduler, images = build_scheduler({}), _images()
    reference = train_diffusion_model(images, UNET, scheduler, settings, tmp_path / "reference")

    with pytest.raises(Interrupt):
        train_diffusion_model(images, UNET, scheduler, settings, tmp_path / "resumed", _interrupt_at(8))
    assert (tmp_path / "resumed" / "checkpoint.pt").exists()
    steps_seen = []
    resumed = train_diffusion_model(images, UNET, scheduler, settings, tmp_path / "resumed", lambda s, l: steps_seen.append(s))
    assert steps_seen[0] == 6, "training must continue after the last checkpoint (step 5)"
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_divergence_raises(tmp_path):
    images = _images()
    images[0, 0, 0, 0] = float("nan")
    settings = TrainingSettings(steps=5, batch_size=12, seed=0)
    with pytest.raises(TrainingDivergedError, match="at step 0"):
        train_diffusion_model(images, UNET, build_scheduler({}), settings, tmp_path)


def test_training_lowers_the_loss(tmp_path):
    losses = []
    settings = TrainingSettings(steps=60, batch_size=12, learning_rate=2e-3, warmup_fraction=0.0, seed=0)
    train_diffusion_model(_images(), UNET, build_scheduler({}), settings, tmp_path, lambda s, l: losses.append(l))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])


def test_checkpoint_of_another_run_is_not_resumed(tmp_path):
    scheduler, images = build_scheduler({}), _images()
    first = TrainingSettings(steps=12, batch_size=4, learning_rate=1e-3, checkpoint_every=5, seed=1)

    with pytest.raises(Interrupt):
        train_diffusion_model(images, UNET, scheduler, first, tmp_path / "resume", _interrupt_at(8))
    changed = TrainingSettings(steps=12, batch_size=4, learning_rate=5e-4, checkpoint_every=5, seed=1)
    steps_seen = []
    train_diffusion_model(images, UNET, scheduler, changed, tmp_path / "resume", lambda s, l: steps_seen.append(s))
    assert steps_seen[0] == 1, "a checkpoint written with another learning rate must not be resumed"


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_checkpoint_is_never_resumed(tmp_path, damage, caplog):
    settings = TrainingSettings(steps=12, batch_size=4, learning_rate=1e-3, checkpoint_every=5, seed=1)
    scheduler, images = build_scheduler({}), _images()
    reference = train_diffusion_model(images, UNET, scheduler, settings, tmp_path / "reference")

    with pytest.raises(Interrupt):
        train_diffusion_model(images, UNET, scheduler, settings, tmp_path / "resume", _interrupt_at(8))
    checkpoint = tmp_path / "resume" / "checkpoint.pt"
    data = bytearray(checkpoint.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # one bit flip in the middle of the tensor payload: unpickling still succeeds
        data[len(data) // 2] ^= 0x01
    checkpoint.write_bytes(bytes(data))

    steps_seen = []
    with caplog.at_level("WARNING"):
        retrained = train_diffusion_model(images, UNET, scheduler, settings, tmp_path / "resume", lambda s, l: steps_seen.append(s))
    assert steps_seen[0] == 1, "a damaged checkpoint must be ignored, training starts over"
    assert "ignoring" in caplog.text
    for (name, a), (_, b) in zip(reference.state_dict().items(), retrained.state_dict().items()):
        assert torch.equal(a, b), name


def test_dequantised_batches_move_each_pixel_within_its_bin_and_keep_the_other_draws():
    levels = 17
    grid = torch.round((_images(24) + 1) * (levels - 1) / 2) * 2 / (levels - 1) - 1
    plain = TrainingSettings(steps=4, batch_size=8, seed=5)
    dequantised = TrainingSettings(steps=4, batch_size=8, seed=5, dequantise=True, levels=levels)
    for step in range(3):
        rows, x0, timesteps, noise = step_draws(grid, plain, 1000, step)
        rows_d, x0_d, timesteps_d, noise_d = step_draws(grid, dequantised, 1000, step)
        for a, b in ((rows, rows_d), (timesteps, timesteps_d), (noise, noise_d)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        offset = x0_d - x0
        half_bin = 1 / (levels - 1)
        assert offset.abs().max() <= half_bin and offset.abs().max() > 0.9 * half_bin
        # Uniform within the bin: mean near 0, variance near width^2 / 12.
        assert abs(offset.mean()) < 0.1 * half_bin
        assert abs(offset.var() / ((2 * half_bin) ** 2 / 12) - 1) < 0.2
        torch.testing.assert_close(step_draws(grid, dequantised, 1000, step)[1], x0_d, rtol=0, atol=0)


def test_dequantised_training_needs_the_levels():
    with pytest.raises(ValueError, match="training.dequantise needs the data's grey levels"):
        TrainingSettings(steps=4, dequantise=True)
    assert TrainingSettings.from_config({"steps": 4, "dequantise": True, "levels": 17}).levels == 17
