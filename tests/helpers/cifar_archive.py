"""A CIFAR-10 python archive of random images in the real format: five
training batches and a test batch, each a pickled dict with ``b"data"``
(uint8 [n, 3072], channel-major 32x32 images) and ``b"labels"`` (n ints in
0..9), under ``cifar-10-batches-py/`` in a .tar.gz."""

import io
import pickle
import tarfile

import numpy as np

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar10_archive(path, per_batch: int = 20, seed: int = 0):
    """Write the archive to ``path``; labels cycle through the ten classes."""
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz") as archive:
        for name in BATCHES:
            batch = {
                b"batch_label": name.encode(),
                b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                b"labels": [int(v) for v in np.arange(per_batch) % 10],
            }
            payload = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path
