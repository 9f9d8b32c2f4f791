"""Training a DDPM noise predictor, resumable and deterministic per step.

Every source of randomness at step ``s`` (the batch, its timesteps, noise,
flips and dropout) is seeded by (seed, s) alone, so a run resumed from a
checkpoint continues exactly as an uninterrupted run would: on CPU the final
weights are bitwise identical.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from ldsbench.diffusion.model import build_unet
from ldsbench.diffusion.outputs import training_loss
from ldsbench.diffusion.passes import prepare_network, release_network
from ldsbench.runtime.io import array_sha256, atomic_path, config_hash, state_digest
from ldsbench.runtime.seeds import stream_seed
from ldsbench.spec.network_passes import DEFAULT_PASSES, NetworkPasses

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainingSettings:
    steps: int
    batch_size: int = 128
    learning_rate: float = 1e-4
    weight_decay: float = 1e-6
    warmup_fraction: float = 0.1
    lr_schedule: str = "cosine"  # "cosine" | "constant"
    grad_clip: float = 1.0
    ema_max_decay: float = 0.999
    ema_power: float = 0.75
    random_flip: bool = False
    checkpoint_every: int = 500
    seed: int = 0
    # Add u ~ U(-Delta/2, Delta/2) to every pixel of every batch, Delta =
    # 2 / (levels - 1): the model learns the density of the uniformly
    # dequantised data that ``log_likelihood`` evaluates.
    dequantise: bool = False
    levels: int | None = None

    def __post_init__(self):
        if self.dequantise and (self.levels is None or self.levels < 2):
            raise ValueError(f"training.dequantise needs the data's grey levels (training.levels >= 2), got {self.levels!r}")

    @classmethod
    def from_config(cls, training: dict, **overrides) -> TrainingSettings:
        """From the config's ``training`` section (keys that are not settings,
        such as ``subset_steps``, are ignored), with ``overrides`` applied."""
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in training.items() if k in names}, **overrides})


SYNC_EVERY = 50  # steps between reads of the loss on a GPU


def batch_indices(n_examples: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Rows of batch ``step``: consecutive slices of per-epoch permutations,
    each permutation seeded by (seed, epoch)."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs, offsets = positions // n_examples, positions % n_examples
    rows = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        order = np.random.default_rng(stream_seed(seed, "epoch", int(epoch))).permutation(n_examples)
        mask = epochs == epoch
        rows[mask] = order[offsets[mask]]
    return rows


def step_draws(images: torch.Tensor, settings: TrainingSettings, num_timesteps: int, step: int):
    """Everything random about step ``step``, a pure function of (seed, step):
    rows [B] int64 of the batch, x0 [B, C, H, W] (flipped where drawn),
    timesteps [B] int64 and noise [B, C, H, W], all on the CPU. Training and
    methods that replay the training (TracIn) share it. With ``dequantise``,
    x0 is moved uniformly within its grey level's bin, drawn after the
    noise, so the rows, timesteps and noise are those of the same run
    without it."""
    generator = torch.Generator().manual_seed(stream_seed(settings.seed, "batch", step))
    rows = torch.from_numpy(batch_indices(images.shape[0], settings.batch_size, step, settings.seed))
    x0 = images[rows]
    if settings.random_flip:
        flip = torch.rand(x0.shape[0], generator=generator) < 0.5
        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
    timesteps = torch.randint(0, num_timesteps, (x0.shape[0],), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    if settings.dequantise:
        width = 2.0 / (settings.levels - 1)
        x0 = x0 + width * (torch.rand(x0.shape, generator=generator, dtype=x0.dtype) - 0.5)
    return rows, x0, timesteps, noise


def learning_rates(settings: TrainingSettings) -> np.ndarray:
    """[steps] learning rate used by each optimizer step (warm-up and decay)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=settings.learning_rate)
    scheduler = _lr_scheduler(optimizer, settings)
    rates = np.empty(settings.steps)
    for step in range(settings.steps):
        rates[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    return rates


def snapshot_steps(settings: TrainingSettings) -> list[int]:
    """Steps after which the raw weights are kept for TracIn: every
    ``checkpoint_every`` steps and the last step."""
    return sorted({*range(settings.checkpoint_every, settings.steps + 1, settings.checkpoint_every), settings.steps})


def _lr_scheduler(optimizer, settings: TrainingSettings):
    warmup = int(round(settings.warmup_fraction * settings.steps))
    if settings.lr_schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, settings.steps)
    if settings.lr_schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    raise ValueError(f"training.lr_schedule: {settings.lr_schedule!r} is not cosine or constant")


def run_key(images: torch.Tensor, unet_config: dict, settings: TrainingSettings) -> str:
    """Identifies a training run: a checkpoint is resumed only by the same run,
    never by a run with other settings, architecture or data."""
    data = array_sha256(images.detach().cpu().numpy())[:16]
    return f"{config_hash({'unet': unet_config, 'settings': asdict(settings)})}-{data}"


def _save_checkpoint(path: Path, key: str, step, unet, optimizer, lr_scheduler, ema) -> None:
    state = {
        "key": key,
        "step": step,
        "unet": unet.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "ema": ema.state_dict(),
    }
    state["sha256"] = state_digest(state)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, key: str, device) -> dict | None:
    """The checkpoint at ``path`` if it was written by this run and is intact.

    Resume state is disposable: a checkpoint that is unreadable, fails its
    checksum, or belongs to another run is ignored (training starts over),
    never resumed from.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # truncated or garbled pickle
        log.warning("ignoring unreadable checkpoint %s (%s); training starts over", path, error)
        return None
    stored = state.pop("sha256", None) if isinstance(state, dict) else None
    if stored is None or stored != state_digest(state):
        log.warning("ignoring checkpoint %s: its checksum does not match its content; training starts over", path)
        return None
    if state.get("key") != key:
        log.info("ignoring checkpoint %s of another run (other settings, architecture or data)", path)
        return None
    return state


def train_diffusion_model(
    images: torch.Tensor,
    unet_config: dict,
    noise_scheduler,
    settings: TrainingSettings,
    resume_dir,
    progress=None,
    device="cpu",
    snapshot=None,
    passes: NetworkPasses = DEFAULT_PASSES,
):
    """Train on ``images`` [N, C, H, W] in [-1, 1]; return the UNet holding the
    EMA weights (the weights that are measured and attributed).

    Resume state lives in ``resume_dir`` (a path the workflow never deletes):
    the latest checkpoint is loaded if present and written by the same run
    (``run_key``); a checkpoint of any other run is ignored.
    ``progress`` is an optional callable(step, loss) for logging;
    ``snapshot`` an optional callable(step, unet) called with the raw
    (not EMA) weights after each of ``snapshot_steps``. Random draws are made
    on the CPU and moved to ``device``, so they do not depend on it.
    ``passes``: compiled and channels-last options of the training's passes
    (``ldsbench.diffusion.passes``; its precision is the one in force).
    """
    resume_path = Path(resume_dir) / "checkpoint.pt"
    torch.manual_seed(stream_seed(settings.seed, "init"))
    unet = build_unet(unet_config).to(device)
    network = prepare_network(unet, passes)  # what the passes run through (compiled, if asked)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    lr_scheduler = _lr_scheduler(optimizer, settings)
    ema = EMAModel(unet.parameters(), decay=settings.ema_max_decay, use_ema_warmup=True, power=settings.ema_power)

    start, key = 0, run_key(images, unet_config, settings)
    state = _load_checkpoint(resume_path, key, device)
    if state is not None:
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        ema.load_state_dict(state["ema"])
        start = state["step"]
        log.info("resuming from the checkpoint at step %s of %s", start, settings.steps)

    snapshots = set(snapshot_steps(settings))
    num_timesteps = noise_scheduler.config.num_train_timesteps
    unet.train()
    sync_every = 1 if torch.device(device).type == "cpu" else SYNC_EVERY
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    for step in range(start, settings.steps):
        _, x0, timesteps, noise = step_draws(images, settings, num_timesteps, step)
        x0, timesteps, noise = x0.to(device), timesteps.to(device), noise.to(device)
        torch.manual_seed(stream_seed(settings.seed, "dropout", step))

        loss = training_loss(network, noise_scheduler, x0, noise, timesteps)
        # Reading the loss waits for the device: on a GPU only every
        # SYNC_EVERY steps (and before a checkpoint); on a CPU it is free.
        done = step + 1
        synced = sync_every == 1 or done % sync_every == 0 or done % settings.checkpoint_every == 0 or done == settings.steps
        nonfinite = nonfinite | ~torch.isfinite(loss.detach())
        if synced and nonfinite.item():
            where = f"at step {step}" if sync_every == 1 else f"between steps {max(start, done - sync_every)} and {step}"
            raise TrainingDivergedError(f"training loss is {loss.item()} {where}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), settings.grad_clip)
        optimizer.step()
        lr_scheduler.step()
        ema.step(unet.parameters())

        if progress is not None and synced:
            progress(done, loss.item())
        if snapshot is not None and done in snapshots:
            snapshot(done, unet)
        if done % settings.checkpoint_every == 0 and done < settings.steps:
            _save_checkpoint(resume_path, key, done, unet, optimizer, lr_scheduler, ema)

    ema.copy_to(unet.parameters())
    unet.eval()
    return release_network(unet, passes)
