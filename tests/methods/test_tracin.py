"""Diffusion-TracIn / ReTrac against a brute-force replay of the training,
and the orientation of its scores against a real SGD step."""

import copy

import numpy as np
import pytest
import torch

from ldsbench.attribution.scoring import SCORE_SIGN, query_gradients
from ldsbench.diffusion.model import attributed_parameters, build_scheduler, build_unet
from ldsbench.diffusion.outputs import per_draw_output
from ldsbench.diffusion.training import TrainingSettings, learning_rates, snapshot_steps, step_draws
from ldsbench.methods.tracin import tracin_scores
from tiny_models import UNET

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(steps=4, checkpoint_every=2):
    torch.manual_seed(0)
    unet, scheduler = build_unet(UNET), build_scheduler({})
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    queries = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    settings = TrainingSettings(steps=steps, batch_size=3, learning_rate=0.01, checkpoint_every=checkpoint_every, random_flip=True, seed=4)
    checkpoints = {}
    for step in snapshot_steps(settings):
        with torch.no_grad():
            for p in unet.parameters():
                p.add_(0.01 * torch.randn_like(p))
        checkpoints[step] = copy.deepcopy(unet.state_dict())
    return unet, scheduler, images, queries, settings, checkpoints


def _flat(value, unet):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, attributed_parameters(unet))]).double()


@pytest.mark.parametrize("normalize", [False, True])
def test_scores_equal_a_brute_force_replay_of_every_step(normalize):
    unet, scheduler, images, queries, settings, checkpoints = _setup()
    scores = tracin_scores(unet, scheduler, checkpoints, images, queries, settings, measurement_fn="loss", query_draws=4, seed=0, normalize=normalize)
    rates = learning_rates(settings)
    expected = torch.zeros(2, 5, dtype=torch.float64)
    previous = 0
    for checkpoint in snapshot_steps(settings):
        unet.load_state_dict(checkpoints[checkpoint])
        unet.eval()
        g_q = query_gradients(unet, scheduler, queries, "loss", 4, 0, progress=False).double()
        if normalize:
            g_q = g_q / g_q.norm(dim=1, keepdim=True)
        for step in range(previous, checkpoint):
            rows, x0, timesteps, noise = step_draws(images, settings, 1000, step)
            for b, row in enumerate(rows.tolist()):
                grad = _flat(per_draw_output(unet, scheduler, x0[b : b + 1], noise[b : b + 1], timesteps[b : b + 1], "loss").sum(), unet)
                if normalize:
                    grad = grad / grad.norm()
                expected[:, row] += rates[step] / settings.batch_size * (g_q @ grad)
        previous = checkpoint
    np.testing.assert_allclose(scores, SCORE_SIGN * expected.numpy(), rtol=2e-4, atol=1e-9)
    assert np.abs(scores).max() > 0


def test_score_is_the_first_order_effect_of_including_the_example_in_an_sgd_step():
    # One step; the checkpoint is the weights the step starts from.
    unet, scheduler, images, queries, _, _ = _setup()
    settings = TrainingSettings(steps=1, batch_size=3, learning_rate=0.01, warmup_fraction=0.0, lr_schedule="constant", checkpoint_every=1, seed=4)
    start = copy.deepcopy(unet.state_dict())
    scores = tracin_scores(unet, scheduler, {1: start}, images, queries, settings, measurement_fn="loss", query_draws=4, seed=0, normalize=False)
    rows, x0, timesteps, noise = step_draws(images, settings, 1000, 0)
    unet.load_state_dict(start)
    g_q = query_gradients(unet, scheduler, queries, "loss", 4, 0, progress=False).double()

    def sgd_step(keep):
        model = copy.deepcopy(unet).train()
        losses = per_draw_output(model, scheduler, x0, noise, timesteps, "loss")
        (losses * keep).sum().div(settings.batch_size).backward()
        with torch.no_grad():
            for p in attributed_parameters(model):
                p -= settings.learning_rate * p.grad
        return torch.cat([p.detach().reshape(-1) for p in attributed_parameters(model)]).double()

    b = 1
    row = rows[b].item()
    with_i, without_i = sgd_step(torch.ones(3)), sgd_step(torch.tensor([1.0, 0.0, 1.0]))
    # m(with i) - m(without i) to first order: g_q . (theta_with - theta_without).
    np.testing.assert_allclose(scores[:, row], (g_q @ (with_i - without_i)).numpy(), rtol=1e-3)
    unseen = sorted(set(range(5)) - set(rows.tolist()))
    assert np.all(scores[:, unseen] == 0), "examples outside the batch get no credit"


def test_wrong_checkpoints_are_refused():
    unet, scheduler, images, queries, settings, checkpoints = _setup()
    del checkpoints[2]
    with pytest.raises(ValueError, match=r"checkpoints at steps \[4\], expected \[2, 4\]"):
        tracin_scores(unet, scheduler, checkpoints, images, queries, settings, measurement_fn="loss", query_draws=4, seed=0, normalize=False)


def test_subsampled_draws_estimate_the_full_sum_without_bias():
    from ldsbench.methods.tracin import seen_draws

    _, _, images, _, _, _ = _setup()
    settings = TrainingSettings(steps=8, batch_size=3, learning_rate=0.01, warmup_fraction=0.0, lr_schedule="constant", checkpoint_every=8, seed=4)

    full = seen_draws(images, settings, 1000, 0, 8)
    assert sum(len(d[1]) for d in full.values()) == 8 * settings.batch_size
    sub = seen_draws(images, settings, 1000, 0, 8, max_draws=2, seed=1)
    for row, (_x0, timesteps, _noise, weights) in sub.items():
        assert len(timesteps) == min(2, len(full[row][1]))
        # At a constant learning rate the kept draws carry the whole weight.
        assert weights.sum().item() == pytest.approx(full[row][3].sum().item())
        assert set(timesteps.tolist()) <= set(full[row][1].tolist())
