"""Atomic file writes and artifact manifests.

Every result file is written under a temporary name in the same folder and
then renamed, so a crash never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary sibling path; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix is kept so that writers that infer the format from it work.
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


PARQUET_METADATA_KEY = b"ldsbench"


def save_parquet(path, frame, metadata: dict | None = None) -> None:
    """Write ``frame``; ``metadata`` (JSON) travels in the file's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), PARQUET_METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet_metadata(path) -> dict:
    """The ``metadata`` given to :func:`save_parquet` ({} if none)."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(PARQUET_METADATA_KEY)
    return {} if raw is None else json.loads(raw)


def save_json(path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def array_sha256(*arrays) -> str:
    """sha256 over the raw bytes of one or more arrays, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def state_digest(state) -> str:
    """sha256 of a nested structure of dicts, lists, tensors, arrays and
    scalars (a state dict): stored beside the state and checked on load, so
    that a corrupted file is detected even where unpickling succeeds."""
    import torch

    digest = hashlib.sha256()

    def visit(node):
        if isinstance(node, torch.Tensor):
            node = node.detach().cpu().contiguous()
            digest.update(f"tensor{node.dtype}{tuple(node.shape)}".encode())
            digest.update(node.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(node, np.ndarray):
            digest.update(f"array{node.dtype}{node.shape}".encode())
            digest.update(np.ascontiguousarray(node).tobytes())
        elif isinstance(node, dict):
            digest.update(b"dict")
            for key in sorted(node, key=repr):
                digest.update(repr(key).encode())
                visit(node[key])
        elif isinstance(node, (list, tuple)):
            digest.update(f"seq{len(node)}".encode())
            for item in node:
                visit(item)
        else:
            digest.update(repr(node).encode())

    visit(state)
    return digest.hexdigest()


def config_hash(section) -> str:
    """Short stable hash of a JSON-serialisable config section."""
    text = json.dumps(section, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_versions() -> dict:
    import diffusers
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__, "numpy": np.__version__}
    try:
        import curvlinops

        versions["curvlinops"] = getattr(curvlinops, "__version__", "unknown")
    except ImportError:
        pass
    return versions
