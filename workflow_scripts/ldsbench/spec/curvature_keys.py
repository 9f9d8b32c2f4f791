"""Names of cached curvature factor files.

K-FAC and EK-FAC share their Kronecker factors and eigenbasis (EK-FAC only
re-estimates the eigenvalues), so influence methods whose curvature settings
differ only in ``kind`` share one fit and one file, which holds the
eigenvalues of every kind they need.
"""

from __future__ import annotations

from ldsbench.runtime.io import config_hash
from ldsbench.spec.method_types import needs


def factor_settings(settings: dict) -> dict:
    """A method's ``curvature`` block without ``kind``: what decides the factors."""
    return {key: value for key, value in settings.items() if key != "kind"}


def curvature_key(settings: dict) -> str:
    """``kronecker-{hash}`` of ``factor_settings``: equal factor settings
    share one file; damping is not part of them, so changing it never refits."""
    return f"kronecker-{config_hash(factor_settings(settings))[:12]}"


def curvature_fits(methods: dict) -> dict[str, dict]:
    """{file key: factor settings plus ``kinds``, the sorted kinds its methods use}."""
    fits: dict[str, dict] = {}
    for method in methods.values():
        if not needs(method, "curvature"):
            continue
        key = curvature_key(method["curvature"])
        fit = fits.setdefault(key, {**factor_settings(method["curvature"]), "kinds": []})
        fit["kinds"] = sorted({*fit["kinds"], method["curvature"]["kind"]})
    return fits
