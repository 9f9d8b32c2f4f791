"""Numerical precision of the network's passes: ``fp32`` (the default, as in
the papers), ``tf32`` (float32 storage, TensorFloat-32 matrix products on
GPUs that have them; no effect on a CPU) or ``bf16`` (autocast: matrix
products and convolutions in bfloat16, reductions and the loss in float32).
Gradients, curvature factors and scores are accumulated in float32 or
float64 whatever the setting."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "tf32", "bf16")


def network_precision(precision: str, device) -> contextlib.AbstractContextManager:
    """Context in which the UNet's forward (and so backward) passes run at ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    device_type = torch.device(device).type
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def full_precision(output: torch.Tensor) -> torch.Tensor:
    """A network output in float32 if autocast left it in bfloat16 or float16,
    otherwise unchanged (float32 stays the same tensor, float64 stays float64)."""
    return output.float() if output.dtype in (torch.bfloat16, torch.float16) else output
