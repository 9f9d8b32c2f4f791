"""Names of cached curvature factor files."""

from __future__ import annotations

from .io import config_hash


def curvature_key(settings: dict) -> str:
    """``{kind}-{hash}``: identical settings share one factor file; damping is
    not part of the settings, so changing it never refits."""
    return f"{settings['kind']}-{config_hash(settings)[:12]}"
