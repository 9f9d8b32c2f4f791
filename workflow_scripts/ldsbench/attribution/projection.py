"""Random projection of per-example gradients (TRAK, Park et al. 2023).

TRAK compresses each per-example gradient ``g`` in ``R^P`` to ``g @ R`` in
``R^k`` with a random matrix ``R`` of shape ``[P, k]`` whose entries are
i.i.d. zero-mean with variance ``1/k``.  Then ``E[R @ R^T] = I``, so inner
products between gradients are preserved in expectation
(Johnson-Lindenstrauss).

For diffusion models ``P`` is tens of millions, so ``R`` (``P * k`` floats)
cannot be stored.  It is never materialised: it is cut into row blocks of
``chunk_size`` parameters, and the block for rows
``[c * chunk_size, (c + 1) * chunk_size)`` is regenerated on demand from a
``torch.Generator`` seeded by a pure function of ``(seed, c)``.  Hence

* projecting a gradient does not depend on how examples are batched, nor on
  which other examples are projected before it;
* peak memory for the matrix is one block, ``chunk_size * k`` floats;
* blocks are cached (up to ``cache_bytes``) because every batch reuses them.

``kind="sparse"`` is a sparse Johnson-Lindenstrauss transform: row j of
``R`` has ``SPARSE_NONZEROS`` = s entries ``+-1/sqrt(s)`` in random columns
(drawn with replacement) and zeros elsewhere, so again ``E[R R^T] = I``, and
the variance of a projected inner product is, to leading order, that of a
dense projection, ``(|u|^2 |v|^2 + (u.v)^2) / k``, for gradients whose mass
is spread over many coordinates. Projecting costs ``B P s`` additions
instead of ``B P k`` multiply-adds, and a block is ``rows x s`` column
indices and signs instead of ``rows x k`` values, which at P = 38M, k = 4096
is the difference between minutes and seconds per batch on a CPU.

The random stream of a ``torch.Generator`` differs between device types, so
a projector generating on CUDA yields a different (equally valid) matrix from
one generating on CPU; on a given device type it is fully deterministic.
"""

from __future__ import annotations

import hashlib
import math
import operator

import torch

from ldsbench.planning.memory import PROJECTION_CACHE_BYTES, PROJECTION_CHUNK_ROWS, SPARSE_NONZEROS
from ldsbench.spec.schema import defs_enum

__all__ = ["RandomProjector", "PROJECTION_KINDS", "block_seed"]

#: The projector kinds (the schema's ``$defs/projection``).
PROJECTION_KINDS = defs_enum("projection")

DEFAULT_CACHE_BYTES = PROJECTION_CACHE_BYTES
_FLOAT32_BYTES = 4


def block_seed(seed: int, chunk: int) -> int:
    """Generator seed for row block ``chunk`` of the matrix with ``seed``.

    A cryptographic hash decorrelates neighbouring ``(seed, chunk)`` pairs,
    which ``seed + chunk`` would not (seed 0 chunk 1 == seed 1 chunk 0).
    The result fits in 63 bits, which ``torch.Generator.manual_seed`` accepts.
    """
    digest = hashlib.blake2b(f"ldsbench-projection:{seed}:{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class RandomProjector:
    """Project ``[B, P]`` gradients to ``[B, dim]`` with an implicit random matrix.

    Args:
        num_params: ``P``, the length of a flattened gradient.
        dim: ``k``, the projected dimension, or ``None`` for no projection
            (``project`` then returns the gradients unchanged, as float32).
        seed: selects the random matrix; equal seeds give equal matrices.
        kind: ``"rademacher"`` (entries ``+-1/sqrt(dim)``), ``"gaussian"``
            (entries ``N(0, 1/dim)``) or ``"sparse"`` (module docstring).
        chunk_size: parameter rows per generated block.  It is part of the
            matrix definition: a different ``chunk_size`` gives a different
            matrix.
        device: where blocks are generated and the product computed; ``None``
            uses the device of the gradients passed to ``project``.
        cache_bytes: keep generated blocks in memory while their running total
            stays within this many bytes (0 disables caching).
    """

    def __init__(
        self,
        num_params: int,
        dim: int | None,
        seed: int,
        kind: str = "rademacher",
        chunk_size: int = PROJECTION_CHUNK_ROWS,
        device: torch.device | str | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        num_params = _as_int("num_params", num_params, minimum=1)
        dim = None if dim is None else _as_int("dim", dim, minimum=1)
        seed = _as_int("seed", seed)
        if kind not in PROJECTION_KINDS:
            raise ValueError(f"kind must be one of {PROJECTION_KINDS}, got {kind!r}")
        chunk_size = _as_int("chunk_size", chunk_size, minimum=1)
        cache_bytes = _as_int("cache_bytes", cache_bytes, minimum=0)

        self.num_params = num_params
        self.dim = dim
        self.seed = seed
        self.kind = kind
        self.chunk_size = chunk_size
        self.device = torch.device(device) if device is not None else None
        self.cache_bytes = cache_bytes
        self.num_chunks = math.ceil(num_params / chunk_size)
        # (chunk index, device) -> block [rows, dim]; keyed by device because
        # ``device=None`` lets different calls generate on different devices.
        self._cache: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._cached_bytes = 0

    @property
    def output_dim(self) -> int:
        """Width of ``project``'s output: ``dim``, or ``num_params`` for identity."""
        return self.num_params if self.dim is None else self.dim

    def __repr__(self) -> str:
        return (
            f"RandomProjector(num_params={self.num_params}, dim={self.dim}, seed={self.seed}, "
            f"kind={self.kind!r}, chunk_size={self.chunk_size}, device={self.device})"
        )

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """Project a batch of flattened gradients.

        Args:
            grads: ``[B, P]`` floating tensor, one flattened gradient per row.

        Returns:
            ``[B, dim]`` float32 (``[B, P]`` when ``dim`` is ``None``), on
            ``device`` if set, else on the device of ``grads``.  The identity
            case may return ``grads`` itself when it is already float32 there.
        """
        if not isinstance(grads, torch.Tensor):
            raise ValueError(f"grads must be a torch.Tensor, got {type(grads).__name__}")
        if grads.ndim != 2 or grads.shape[1] != self.num_params:
            raise ValueError(f"grads must have shape [B, {self.num_params}], got {list(grads.shape)}")
        if not grads.is_floating_point():
            raise ValueError(f"grads must be floating point, got dtype {grads.dtype}")

        device = self.device if self.device is not None else grads.device
        if self.dim is None:
            return grads.to(device=device, dtype=torch.float32)

        out = torch.zeros(grads.shape[0], self.dim, dtype=torch.float32, device=device)
        for c in range(self.num_chunks):
            start = c * self.chunk_size
            stop = min(start + self.chunk_size, self.num_params)
            # Slice before casting so only one chunk of grads is copied at a time.
            piece = grads[:, start:stop].to(device=device, dtype=torch.float32)
            block = self._block(c, device)
            if self.kind == "sparse":
                columns, signs = block
                for t in range(columns.shape[1]):
                    out.index_add_(1, columns[:, t], piece * signs[:, t])
                continue
            out.addmm_(piece, block)
        return out

    def matrix_block(self, chunk: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Rows ``[chunk * chunk_size, ...)`` of the projection matrix, ``[rows, dim]`` float32.

        Exposed for inspection and tests; ``project`` is the intended entry point.
        """
        if self.dim is None:
            raise ValueError("an identity projector (dim=None) has no random matrix")
        chunk = _as_int("chunk", chunk, minimum=0)
        if self.kind == "sparse" and chunk < self.num_chunks:
            columns, signs = self._block(chunk, torch.device(device or self.device or "cpu"))
            dense = torch.zeros(columns.shape[0], self.dim, dtype=torch.float32, device=columns.device)
            for t in range(columns.shape[1]):
                dense.index_put_((torch.arange(len(columns), device=columns.device), columns[:, t]), signs[:, t], accumulate=True)
            return dense
        if chunk >= self.num_chunks:
            raise ValueError(f"chunk must be < num_chunks={self.num_chunks}, got {chunk!r}")
        if device is None:
            device = self.device if self.device is not None else torch.device("cpu")
        return self._block(chunk, torch.device(device))

    def _block(self, chunk: int, device: torch.device) -> torch.Tensor:
        key = (chunk, device)
        block = self._cache.get(key)
        if block is not None:
            return block
        block = self._generate(chunk, device)
        nbytes = sum(part.numel() * part.element_size() for part in block) if self.kind == "sparse" else block.numel() * _FLOAT32_BYTES
        if self._cached_bytes + nbytes <= self.cache_bytes:
            self._cache[key] = block
            self._cached_bytes += nbytes
        return block

    def _generate(self, chunk: int, device: torch.device):
        assert self.dim is not None
        rows = min(self.chunk_size, self.num_params - chunk * self.chunk_size)
        generator = torch.Generator(device=device)
        generator.manual_seed(block_seed(self.seed, chunk))
        shape = (rows, self.dim)
        if self.kind == "sparse":
            columns = torch.randint(0, self.dim, (rows, SPARSE_NONZEROS), generator=generator, device=device)
            signs = torch.empty(rows, SPARSE_NONZEROS, dtype=torch.float32, device=device).bernoulli_(0.5, generator=generator)
            return columns, signs.mul_(2.0).sub_(1.0).mul_(1.0 / math.sqrt(SPARSE_NONZEROS))
        if self.kind == "rademacher":
            block = torch.empty(shape, dtype=torch.float32, device=device)
            block.bernoulli_(0.5, generator=generator).mul_(2.0).sub_(1.0)
        else:
            block = torch.randn(shape, dtype=torch.float32, device=device, generator=generator)
        # Variance 1/dim per entry makes E[R R^T] = I, preserving inner products.
        return block.mul_(1.0 / math.sqrt(self.dim))


def _as_int(name: str, value: object, minimum: int | None = None) -> int:
    """``value`` as a Python int (numpy integers accepted), else ValueError naming it."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return number
