"""Journey-TRAK: trajectories, per-step query gradients against a brute-force
computation, and TRAK ensembles."""

import numpy as np
import pytest
import torch

from ldsbench.diffusion.model import attributed_parameters, build_scheduler, build_unet
from ldsbench.diffusion.noise import content_key, noise_draws
from ldsbench.diffusion.outputs import noised
from ldsbench.diffusion.sampling import ddpm_predicted_x0, ddpm_sample
from ldsbench.methods.journey import forward_predicted_x0, journey_query_gradients, journey_timesteps, journey_trak_scores, trajectory_predicted_x0
from ldsbench.methods.trak import score_trak, trak_scores
from ldsbench.runtime.jobs import save_model
from ldsbench.runtime.seeds import stream_seed
from ldsbench.spec.method_types import ScoringJob
from tiny_models import UNET, tiny_model_and_images

SAMPLING = {"generated": 3, "sampling_steps": 20, "seed": 5}


def test_steps_span_the_trajectory_from_noisiest_to_t0():
    scheduler = build_scheduler({})
    assert journey_timesteps(scheduler, 1000, 10)[0] == 999
    assert journey_timesteps(scheduler, 1000, 10)[-1] == 0
    assert len(journey_timesteps(scheduler, 1000, 10)) == 10
    steps = journey_timesteps(scheduler, 20, 4)
    assert steps == sorted(steps, reverse=True) and steps[-1] == 0
    with pytest.raises(ValueError, match="steps must be in 1..20"):
        journey_timesteps(scheduler, 20, 21)


def test_last_prediction_is_the_generated_query_itself(one_thread):
    torch.manual_seed(0)
    unet, scheduler = build_unet(UNET).eval(), build_scheduler({})
    samples = ddpm_sample(unet, scheduler, 3, 20, seed=5)
    steps = journey_timesteps(scheduler, 20, 3)
    x0_hats = ddpm_predicted_x0(unet, scheduler, [2, 0], steps, 3, 20, seed=5)
    assert x0_hats.shape == (2, 3, 1, 8, 8)
    # At t = 0 the DDPM step returns its x0 prediction: the sample.
    torch.testing.assert_close(x0_hats[:, -1], samples[[2, 0]], atol=1e-4, rtol=0)
    # Earlier steps predict something else (the trajectory is not constant).
    assert (x0_hats[:, 0] - x0_hats[:, -1]).abs().max() > 1e-2
    with pytest.raises(ValueError, match="not steps of the 20-step sampler"):
        ddpm_predicted_x0(unet, scheduler, [0], [998], 3, 20, seed=5)


def test_heldout_queries_follow_the_forward_process(one_thread):
    unet, scheduler, _, queries = tiny_model_and_images(n_queries=2)
    steps = journey_timesteps(scheduler, 20, 3)
    x0_hats = forward_predicted_x0(unet, scheduler, queries, steps, seed=0)
    # Brute force for query 1, step 0.
    _, eps = noise_draws(stream_seed(0, "journey_forward"), content_key(queries[1]), 0, 3, (1, 8, 8), 1000)
    t = torch.tensor(steps)
    x_t = noised(scheduler, queries[1].expand(3, 1, 8, 8), eps, t)
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        expected = ((x_t - (1 - abar).sqrt() * unet(x_t, t).sample) / abar.sqrt()).clamp(-1, 1)
    torch.testing.assert_close(x0_hats[1], expected, atol=1e-5, rtol=1e-5)
    # Keyed by content: a query's path does not depend on its row.
    torch.testing.assert_close(forward_predicted_x0(unet, scheduler, queries.flip(0), steps, seed=0), x0_hats.flip(0))


def test_query_gradient_is_the_mean_of_the_per_step_losses(one_thread):
    unet, scheduler, _, queries = tiny_model_and_images(n_queries=2)
    steps, draws = [700, 100], 3
    x0_hats = torch.stack([queries, queries.flip(0) * 0.5], dim=1)  # [Q=2, S=2, 1, 8, 8]
    grads = journey_query_gradients(unet, scheduler, x0_hats, steps, draws, seed=4)
    params = attributed_parameters(unet)
    for q in range(2):
        _, eps = noise_draws(stream_seed(4, "journey_query"), content_key(x0_hats[q]), 0, len(steps) * draws, (1, 8, 8), 1000)
        total = 0.0
        for k, t in enumerate(steps):
            for d in range(draws):
                e = eps[k * draws + d : k * draws + d + 1]
                x_t = noised(scheduler, x0_hats[q, k : k + 1], e, torch.tensor([t]))
                total = total + ((unet(x_t, torch.tensor([t])).sample - e) ** 2).mean()
        expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(total / (len(steps) * draws), params)])
        torch.testing.assert_close(grads[q], expected, atol=1e-6, rtol=1e-4)


def test_journey_scores_mix_trajectories_and_the_forward_process(one_thread):
    unet, scheduler, train, queries = tiny_model_and_images(n_train=5, n_queries=2)
    generated = ddpm_sample(unet, scheduler, 3, 20, seed=5)
    all_queries = torch.cat([generated[:2], queries])
    kinds = np.array(["generated", "generated", "heldout", "heldout"])
    steps = journey_timesteps(scheduler, 20, 3)
    x0_hats = trajectory_predicted_x0(unet, scheduler, all_queries, kinds, SAMPLING, steps, seed=0)
    torch.testing.assert_close(x0_hats[:2], ddpm_predicted_x0(unet, scheduler, [0, 1], steps, 3, 20, seed=5))
    torch.testing.assert_close(x0_hats[2:], forward_predicted_x0(unet, scheduler, queries, steps, seed=0))
    scores = journey_trak_scores(
        unet,
        scheduler,
        train,
        all_queries,
        kinds,
        [1e-3, 1e-1],
        sampling=SAMPLING,
        steps=3,
        draws_per_step=2,
        projection_dim=None,
        projection_seed=0,
        train_draws=4,
        seed=0,
    )
    assert scores.shape == (2, 4, 5) and np.isfinite(scores).all()
    # A larger lambda shrinks the kernel scores.
    assert np.abs(scores[1]).sum() < np.abs(scores[0]).sum()


def test_trak_ensemble_averages_the_members_scores(one_thread, tmp_path):
    unet, scheduler, train, queries = tiny_model_and_images(n_train=5, n_queries=2)
    torch.manual_seed(7)
    other = build_unet(UNET).eval()
    save_model(other, scheduler, tmp_path / "other", {})
    method = {
        "type": "trak",
        "lambda": 1e-3,
        "lambda_scale": "absolute",
        "lambda_grid": [],
        "output_fn": "loss",
        "projection_dim": 32,
        "projection": "rademacher",
        "train_draws": 4,
        "query_draws": 4,
        "seed": 0,
    }
    common = dict(measurement="loss", output_fn="loss", projection_dim=32, projection_seed=0, train_draws=4, query_draws=4, seed=0)
    own = trak_scores(unet, scheduler, train, queries, [1e-3], **common)
    theirs = trak_scores(other, scheduler, train, queries, [1e-3], **common)
    job = ScoringJob(unet, scheduler, train, queries, method, {"loss": {"type": "loss"}}, {"ensemble": [str(tmp_path / "other")]}, device=torch.device("cpu"))
    values, ensemble = score_trak(job)
    assert values == [1e-3]
    np.testing.assert_allclose(ensemble["loss"], (own + theirs) / 2, rtol=1e-5, atol=1e-7)
