"""Method types: the function that scores each, and the code it depends on.

A scoring job (``score_method.py``) is one (method, measurement) pair. It
builds a ``ScoringJob`` and calls the scorer of the method's type, a function
``scorer(job) -> (values, scores)`` that lives in the type's own module:

- ``values``: the hyperparameter values scored (damping or lambda), the
  method's default first; ``[nan]`` for a method without one;
- ``scores``: [L, Q, N] float32, L = len(values), in the package's
  orientation (``scoring``: tau(q, i) predicts m(with i) - m(without i)).

The workflow hashes a type's module and every package module it imports
(``scorer_modules``) into that type's scoring jobs, so editing one method's
code rescores that method only.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

# type -> (module, function)
SCORERS = {
    "influence": ("influence", "score_influence"),
    "random": ("scoring", "score_random"),
    "trak": ("trak", "score_trak"),
    "journey_trak": ("journey", "score_journey_trak"),
    "das": ("das", "score_das"),
    "tracin": ("tracin", "score_tracin"),
    "pixel_similarity": ("similarity", "score_pixel_similarity"),
    "feature_similarity": ("similarity", "score_feature_similarity"),
}


@dataclass
class ScoringJob:
    """The inputs of one scoring job, as its scorer sees them."""

    unet: object  # diffusers UNet2DModel, the full model (EMA weights)
    scheduler: object  # its DDPMScheduler
    train: object  # torch.Tensor [N, C, H, W], the full model's training set
    queries: object  # torch.Tensor [Q, C, H, W]
    method: dict  # the method's validated config entry
    measurement: dict  # the measurement's gradient settings (type, timestep, levels)
    inputs: dict = field(default_factory=dict)  # input paths: queries, curvature, trajectory, ensemble
    training: dict | None = None  # the full model's training settings (TracIn)
    device: object = None
    # Memory the job may use on its device (None: no limit) and the setting
    # that sets it, named in the error when a method cannot fit.
    budget_bytes: int | None = None
    budget_setting: str = "runtime.memory_gb"
    draws_per_pass: int = 64  # draws per backward pass of a per-example gradient


def scorer(method_type: str):
    """The scoring function of ``method_type``."""
    if method_type not in SCORERS:
        raise ValueError(f"unknown method type {method_type!r}; known: {', '.join(SCORERS)}")
    module, function = SCORERS[method_type]
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)


def module_closure(module: str) -> list[str]:
    """File names of package module ``module`` and of every package module it
    imports (relative imports, also those inside functions), transitively."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((PACKAGE_DIR / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    todo.append(node.module.split(".")[0])
                else:
                    todo.extend(alias.name for alias in node.names)
    return sorted(f"{name}.py" for name in seen)


def scorer_modules(method_type: str) -> list[str]:
    """The package files whose content decides ``method_type``'s scores."""
    if method_type not in SCORERS:
        raise ValueError(f"unknown method type {method_type!r}; known: {', '.join(SCORERS)}")
    return module_closure(SCORERS[method_type][0])
