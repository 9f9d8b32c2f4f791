"""A helper module of the external method in ``gradient_kernel.py``."""

import torch


def projected_gradients(batches, projector) -> torch.Tensor:
    """[n, k] projections of a stream of (rows, [B, P]) gradient blocks."""
    return torch.cat([projector.project(gradients) for _, gradients in batches])
