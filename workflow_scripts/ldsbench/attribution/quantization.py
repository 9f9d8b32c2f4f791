"""Reduced-precision storage of gradient rows.

``int8`` is symmetric blockwise quantisation: each row is cut into blocks of
``INT8_BLOCK`` consecutive values, and a block is stored as
``round(127 x / max|x_block|)`` with the float32 scale ``max|x_block| / 127``,
so every entry is within half a step, ``max|x_block| / 254``, of its value.
Blocks rather than whole rows: in a Kronecker eigenbasis the values of one
row span many orders of magnitude (eigenvalues do), and one scale per row
would round every small-eigenvalue direction to zero. ``bfloat16`` keeps 8
bits of mantissa (relative error at most 2^-9 per entry); ``float32`` and
``float64`` are plain casts. Stored rows are read back as float64
(``float64`` storage) or float32 (any other).
"""

from __future__ import annotations

import math

import torch

from ldsbench.planning.memory import INT8_BLOCK, STORAGE_BYTES

STORAGES = tuple(STORAGE_BYTES)
_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}


class RowStore:
    """``rows x width`` values kept in ``storage`` precision on ``device``;
    rows are written in blocks with ``put`` and read back whole with ``read``."""

    def __init__(self, rows: int, width: int, storage: str, device=None):
        if storage not in STORAGES:
            raise ValueError(f"unknown storage {storage!r}; expected one of {STORAGES}")
        self.storage, self.width = storage, width
        self.blocks = math.ceil(width / INT8_BLOCK)
        padded = self.blocks * INT8_BLOCK if storage == "int8" else width
        self.values = torch.empty(rows, padded, dtype=_DTYPES[storage], device=device)
        self.scales = torch.ones(rows, self.blocks, 1, dtype=torch.float32, device=device) if storage == "int8" else None

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.float64 if self.storage == "float64" else torch.float32

    def put(self, rows: slice, block: torch.Tensor) -> None:
        """Store ``block`` [len(rows), width] (any float dtype)."""
        if self.storage != "int8":
            self.values[rows] = block.to(self.values.dtype)
            return
        padded = torch.nn.functional.pad(block, (0, self.values.shape[1] - self.width)).reshape(len(block), self.blocks, INT8_BLOCK)
        scale = padded.abs().amax(dim=2, keepdim=True).to(torch.float32) / 127.0
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        quantised = torch.round(padded / scale.to(padded.dtype)).clamp_(-127, 127).to(torch.int8)
        self.values[rows] = quantised.reshape(len(block), -1)
        self.scales[rows] = scale

    def read(self) -> torch.Tensor:
        """All rows as ``compute_dtype`` [rows, width]."""
        values = self.values.to(self.compute_dtype)
        if self.scales is None:
            return values
        return (values.reshape(len(values), self.blocks, INT8_BLOCK) * self.scales).reshape(len(values), -1)[:, : self.width]
