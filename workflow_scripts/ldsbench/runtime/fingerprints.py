"""Which benchmark a file belongs to, in 16 hex digits.

A benchmark's fingerprint hashes the provenance keys every score file must
share with the ground truth it is evaluated on (``provenance.SHARED_KEYS``:
training data, queries, architecture, training settings). A score file
computed elsewhere names it (docs/external-methods.md, "Which benchmark a
file scores"), and a bundle's manifest records it (docs/bundles.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ldsbench.runtime.io import config_hash
from ldsbench.runtime.provenance import SHARED_KEYS, ArtifactMismatchError, model_provenance, queries_sha256


def benchmark_fingerprint(provenance: dict) -> str:
    """The fingerprint of an artifact's provenance (its ``SHARED_KEYS``)."""
    missing = [key for key in SHARED_KEYS if key not in provenance]
    if missing:
        raise ArtifactMismatchError(f"provenance lacks {missing}: no benchmark fingerprint")
    return config_hash({key: provenance[key] for key in SHARED_KEYS})


def folder_provenance(folder) -> dict:
    """The ``SHARED_KEYS`` provenance of a results folder or a bundle: from
    its full model's ``models/full/manifest.json`` and its ``queries/queries.npz``."""
    folder = Path(folder)
    manifest = json.loads((folder / "models" / "full" / "manifest.json").read_text())
    with np.load(folder / "queries" / "queries.npz") as archive:
        queries = archive["images"]
    return {**model_provenance(manifest), "queries_sha256": queries_sha256(queries)}


def folder_fingerprint(folder) -> str:
    """The fingerprint of a results folder or a bundle (``folder_provenance``)."""
    return benchmark_fingerprint(folder_provenance(folder))
