"""Peak memory of each stage as a formula, and the chunk sizes that fit a budget.

Torch-free: the workflow's plan (``ldsbench.planning.plan``) and Snakemake's
``resources: mem_mb`` use these formulas, and the scorers call the same ones
to choose how many queries and training examples they hold at once, so the
estimate a user sees before launch is the rule the job follows.

Symbols: P attributed weights (``footprint.ModelFootprint.attributed_weights``),
s the largest attributed module's weight count, Q queries, N training
examples, L hyperparameter values (dampings or lambdas), k projected
dimension, B examples per gradient batch, Qc queries per chunk, b bytes per
stored value. No formula has a product of three large dimensions: the
largest terms are Qc P b (query gradients held once) and B P 4 (one batch of
training gradients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GIB = 1024**3

# Bytes per value of each query-gradient storage precision (int8 also keeps
# one float32 scale per block of INT8_BLOCK values, ``quantization``).
STORAGE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "int8": 1}
INT8_BLOCK = 128
FLOAT32 = 4
FLOAT64 = 8
# Interpreter, torch, diffusers and CUDA/BLAS libraries of a job process,
# measured as the resident size of a job that has loaded a tiny model.
PROCESS_BASE_BYTES = int(0.6 * GIB)
# Projection blocks kept in memory (``projection.RandomProjector``'s cache),
# and the nonzeros per parameter row of its sparse kind.
PROJECTION_CACHE_BYTES = 512 * 1024**2
# Parameter rows per generated projection block (part of the matrix's definition).
PROJECTION_CHUNK_ROWS = 65536
SPARSE_NONZEROS = 4
# Training gradients per projected batch of a feature job, at most.
FEATURE_BATCH = 256


class MemoryBudgetError(ValueError):
    """A stage cannot fit its memory budget at the given settings."""


@dataclass(frozen=True)
class GradientChunking:
    """How a gradient method holds its data: ``queries_per_chunk`` of the Q
    queries at once (``chunks`` passes over the training set) and
    ``batch_examples`` training gradients per batch; ``peak_bytes`` is the
    estimated peak of the job with these sizes."""

    queries_per_chunk: int
    chunks: int
    batch_examples: int
    peak_bytes: int


def method_sizes(footprint, kind: str, draws_per_pass: int) -> dict:
    """The sizes a method kind's formula takes, from a model footprint
    (``footprint.ModelFootprint``): ``kind`` is ``"influence"``,
    ``"tracin"``, ``"projection"`` or ``"unlearning"`` (which adds the
    forward bytes per draw); ``draws_per_pass`` the draws of one
    backward pass (at most the method's draws per example)."""
    sizes = dict(
        params=footprint.attributed_weights,
        model_params=footprint.model_params,
        activation_bytes_per_draw=footprint.training_bytes_per_draw,
        draws_per_pass=draws_per_pass,
    )
    if kind == "influence":
        sizes.update(
            largest_module=footprint.largest_module,
            modules=footprint.modules,
            curvature_values=footprint.kronecker_factor_values + footprint.attributed_weights,
        )
    if kind == "unlearning":
        sizes.update(forward_bytes_per_draw=footprint.forward_bytes_per_draw)
    return sizes


def query_store_bytes(queries: int, params: int, storage: str, modules: int = 1) -> int:
    """Bytes of ``queries`` query gradients of ``params`` weights kept in ``storage``."""
    scales = queries * (math.ceil(params / INT8_BLOCK) + modules) * FLOAT32 if storage == "int8" else 0
    return queries * params * STORAGE_BYTES[storage] + scales


def gradient_pass_bytes(model_params: int, activation_bytes_per_draw: int, draws_per_pass: int) -> int:
    """The job's process with one backward pass over ``draws_per_pass``
    draws of one example: the model's weights and their gradients (float32)
    plus the activations."""
    return PROCESS_BASE_BYTES + 2 * model_params * FLOAT32 + draws_per_pass * activation_bytes_per_draw


def influence_bytes(
    *,
    params: int,
    largest_module: int,
    modules: int,
    curvature_values: int,
    model_params: int,
    activation_bytes_per_draw: int,
    draws_per_pass: int,
    queries: int,
    train: int,
    values: int,
    storage: str,
    queries_per_chunk: int,
    batch_examples: int,
) -> int:
    """Peak bytes of influence scoring (``ldsbench.methods.influence``): the
    eigenbasis (``curvature_values`` float64: both Kronecker eigenvector
    matrices of every module and the P eigenvalues), the rotated query
    gradients of one chunk, one batch of training gradients with its
    per-module rotation temporaries (float64), the dequantised query block
    of one module, the score matrix [L, Q, N] (float64) and one gradient pass."""
    store = query_store_bytes(queries_per_chunk, params, storage, modules)
    batch = batch_examples * params * FLOAT32 + 3 * batch_examples * largest_module * FLOAT64
    dequantised = queries_per_chunk * largest_module * (FLOAT64 if storage == "float64" else FLOAT32)
    scores = values * queries * train * FLOAT64
    basis = curvature_values * FLOAT64
    return basis + store + batch + dequantised + scores + gradient_pass_bytes(model_params, activation_bytes_per_draw, draws_per_pass)


def choose_influence_chunking(budget_bytes: int, *, queries: int, batch_examples: int, setting: str, **sizes) -> GradientChunking:
    """The largest query chunk (and, if one query does not fit, a smaller
    training batch) whose ``influence_bytes`` fit ``budget_bytes``.

    Raises ``MemoryBudgetError`` naming ``setting`` when even one query and a
    training batch of one example do not fit.
    """
    for batch in _halvings(batch_examples):

        def peak(chunk: int) -> int:
            return influence_bytes(queries=queries, queries_per_chunk=chunk, batch_examples=batch, **sizes)

        if peak(1) > budget_bytes:
            continue
        chunks = math.ceil(queries / _largest_fitting(peak, budget_bytes, queries))
        chunk = math.ceil(queries / chunks)  # balanced: no small last chunk
        return GradientChunking(chunk, chunks, batch, peak(chunk))
    need = influence_bytes(queries=queries, queries_per_chunk=1, batch_examples=1, **sizes)
    raise MemoryBudgetError(
        f"influence scoring needs at least {need / GIB:.1f} GiB (one query, one training example, "
        f"{sizes['storage']} storage) but the budget is {budget_bytes / GIB:.1f} GiB: raise {setting} "
        "or store query gradients in less precision (query_storage)"
    )


def ggn_batch_draws(draws_per_pass: int, draws_per_example: int) -> int:
    """Draws per batch of the exact GGN's products (``methods.iterative_influence``):
    whole examples' draws (``curvature_data.NoisedTrainingData``), about ``draws_per_pass``."""
    return max(1, draws_per_pass // draws_per_example) * draws_per_example


def iterative_influence_bytes(
    *,
    params: int,
    largest_module: int,
    modules: int,
    curvature_values: int,
    model_params: int,
    activation_bytes_per_draw: int,
    draws_per_pass: int,
    queries: int,
    train: int,
    values: int,
    queries_per_chunk: int,
    batch_examples: int,
    ggn_draws: int,
) -> int:
    """Peak bytes of exact-GGN influence (``ldsbench.methods.iterative_influence``):
    the eigenbasis (float64), (L + 6) Qc P float64 for the L solutions of a
    chunk, its right-hand sides and conjugate gradients' x, r, z, p and A p,
    the preconditioner's per-module rotation temporaries (3 Qc s float64),
    one training batch (float32 as computed, float64 as used), the scores
    [L, Q, N] (float64), one gradient pass, and the GGN's product: a float64
    copy of the model with its gradients and the double-backward graph of
    one batch of ``ggn_draws`` draws in float64 (about 4 times a training
    pass's activations per draw)."""
    solve = (values + 6) * queries_per_chunk * params * FLOAT64 + 3 * queries_per_chunk * largest_module * FLOAT64
    batch = batch_examples * params * (FLOAT32 + FLOAT64)
    ggn = 2 * model_params * FLOAT64 + 4 * ggn_draws * activation_bytes_per_draw
    scores = values * queries * train * FLOAT64
    basis = curvature_values * FLOAT64
    return basis + solve + batch + ggn + scores + gradient_pass_bytes(model_params, activation_bytes_per_draw, draws_per_pass)


def choose_iterative_influence_chunking(budget_bytes: int, *, queries: int, batch_examples: int, setting: str, **sizes) -> GradientChunking:
    """The largest chunk of right-hand sides (and, if one does not fit, a
    smaller training batch) whose ``iterative_influence_bytes`` fit ``budget_bytes``."""
    for batch in _halvings(batch_examples):

        def peak(chunk: int) -> int:
            return iterative_influence_bytes(queries=queries, queries_per_chunk=chunk, batch_examples=batch, **sizes)

        if peak(1) > budget_bytes:
            continue
        chunks = math.ceil(queries / _largest_fitting(peak, budget_bytes, queries))
        chunk = math.ceil(queries / chunks)
        return GradientChunking(chunk, chunks, batch, peak(chunk))
    need = iterative_influence_bytes(queries=queries, queries_per_chunk=1, batch_examples=1, **sizes)
    raise MemoryBudgetError(
        f"iterative influence needs at least {need / GIB:.1f} GiB (one query, one training example) "
        f"but the budget is {budget_bytes / GIB:.1f} GiB: raise {setting}, or lower runtime.gradient_draws_per_pass"
    )


def tracin_bytes(
    *, params: int, model_params: int, activation_bytes_per_draw: int, draws_per_pass: int, queries: int, train: int, queries_per_chunk: int
) -> int:
    """Peak bytes of TracIn/ReTrac (``ldsbench.methods.tracin``): one chunk of query
    gradients (float32 as computed, float64 as used) at one checkpoint, the checkpoint's weights, one
    training gradient (float64), the score matrix [Q, N] (float64) and one
    gradient pass."""
    return (
        queries_per_chunk * params * (FLOAT32 + FLOAT64)
        + params * FLOAT64
        + model_params * FLOAT32
        + queries * train * FLOAT64
        + gradient_pass_bytes(model_params, activation_bytes_per_draw, draws_per_pass)
    )


def choose_tracin_chunking(budget_bytes: int, *, queries: int, setting: str, **sizes) -> GradientChunking:
    """The largest query chunk whose ``tracin_bytes`` fit ``budget_bytes``."""

    def peak(chunk: int) -> int:
        return tracin_bytes(queries=queries, queries_per_chunk=chunk, **sizes)

    if peak(1) > budget_bytes:
        raise MemoryBudgetError(f"TracIn needs at least {peak(1) / GIB:.1f} GiB for one query; the budget is {budget_bytes / GIB:.1f} GiB: raise {setting}")
    chunks = math.ceil(queries / _largest_fitting(peak, budget_bytes, queries))
    chunk = math.ceil(queries / chunks)
    return GradientChunking(chunk, chunks, 1, peak(chunk))


def projected_feature_bytes(
    *,
    params: int,
    dim: int | None,
    model_params: int,
    activation_bytes_per_draw: int,
    draws_per_pass: int,
    queries: int,
    train: int,
    values: int,
    batch_examples: int,
    projection_cache_bytes: int,
) -> int:
    """Peak bytes of a projected-gradient method (TRAK, D-TRAK, Journey-TRAK,
    DAS's scalar variants): one batch of raw gradients, the cached projection
    blocks, the features [N + Q, k] (float32) with their float64 eigenbasis
    coordinates, the [k, k] Gram matrix and its eigenvectors, the scores
    [L, Q, N] and one gradient pass. Without projection k = P."""
    k = params if dim is None else dim
    batch = batch_examples * params * FLOAT32 + batch_examples * k * FLOAT32
    features = (train + queries) * k * (FLOAT32 + FLOAT64)
    spectrum = 2 * min(k, train) ** 2 * FLOAT64 + k * min(k, train) * FLOAT64
    scores = values * queries * train * FLOAT64
    return batch + projection_cache_bytes + features + spectrum + scores + gradient_pass_bytes(model_params, activation_bytes_per_draw, draws_per_pass)


def feature_sizes(footprint, settings: dict, train: int, draws_per_pass: int) -> dict:
    """The sizes ``projected_feature_bytes`` takes for a job that only
    projects training features (``projected_features``): no queries, no scores."""
    sizes = method_sizes(footprint, "projection", min(draws_per_pass, settings["train_draws"]))
    cache = projection_cache_bytes(sizes["params"], settings["projection_dim"], settings["projection"])
    return dict(dim=settings["projection_dim"], queries=0, train=train, values=0, projection_cache_bytes=cache, **sizes)


def choose_feature_batch(budget_bytes: int, *, setting: str, **sizes) -> int:
    """The largest training batch (at most ``FEATURE_BATCH``) of a feature
    job (``feature_sizes``) that fits ``budget_bytes``."""
    return choose_projection_batch(budget_bytes, batch_examples=min(FEATURE_BATCH, sizes["train"]), setting=setting, **sizes)


def projection_cache_bytes(params: int, dim: int | None, kind: str) -> int:
    """Bytes of projection blocks a ``RandomProjector`` holds: the blocks it
    keeps (the whole matrix up to ``PROJECTION_CACHE_BYTES``) and the one
    being generated or read (``PROJECTION_CHUNK_ROWS`` parameter rows; a
    sparse block holds 4 int64 columns and float32 signs per row, a dense
    one k floats)."""
    if dim is None:
        return 0
    per_row = SPARSE_NONZEROS * (8 + FLOAT32) if kind == "sparse" else dim * FLOAT32
    return min(params * per_row, PROJECTION_CACHE_BYTES) + min(params, PROJECTION_CHUNK_ROWS) * per_row


def choose_projection_batch(budget_bytes: int, *, batch_examples: int, setting: str, **sizes) -> int:
    """The largest training batch (at most ``batch_examples``) whose
    ``projected_feature_bytes`` fit ``budget_bytes``."""
    for batch in _halvings(batch_examples):
        if projected_feature_bytes(batch_examples=batch, **sizes) <= budget_bytes:
            return batch
    need = projected_feature_bytes(batch_examples=1, **sizes)
    raise MemoryBudgetError(f"projected-gradient scoring needs at least {need / GIB:.1f} GiB; the budget is {budget_bytes / GIB:.1f} GiB: raise {setting}")


def unlearning_bytes(
    *,
    params: int,
    model_params: int,
    activation_bytes_per_draw: int,
    forward_bytes_per_draw: int,
    draws_per_pass: int,
    batch_draws: int,
    queries: int,
    train: int,
    values: int,
    value_bytes: int,
) -> int:
    """Peak bytes of attribution by unlearning (``ldsbench.methods.unlearning``)
    with the model in ``value_bytes`` per value (8: float64): the model with
    its gradients and one backward pass, or one forward pass of
    ``batch_draws`` draws (the larger); the Fisher (float64), one copy of the
    original attributed weights, the unlearned weights and one query
    gradient (P values each); the scores [L, Q, N] (float64)."""
    scale = value_bytes / FLOAT32
    passes = max(draws_per_pass * activation_bytes_per_draw, batch_draws * forward_bytes_per_draw) * scale
    weights = 2 * model_params * value_bytes + params * FLOAT64 + 3 * params * value_bytes
    return int(PROCESS_BASE_BYTES + passes + weights + values * queries * train * FLOAT64)


def choose_unlearning_batch(budget_bytes: int, *, batch_draws: int, setting: str, **sizes) -> int:
    """The largest forward batch of draws (at most ``batch_draws``) whose
    ``unlearning_bytes`` fit ``budget_bytes``."""
    for batch in _halvings(batch_draws):
        if unlearning_bytes(batch_draws=batch, **sizes) <= budget_bytes:
            return batch
    need = unlearning_bytes(batch_draws=1, **sizes)
    raise MemoryBudgetError(f"unlearning needs at least {need / GIB:.1f} GiB; the budget is {budget_bytes / GIB:.1f} GiB: raise {setting} or use dtype float32")


def _halvings(start: int):
    """start, start // 2, ..., 1."""
    value = max(1, int(start))
    while True:
        yield value
        if value == 1:
            return
        value //= 2


def _largest_fitting(peak, budget_bytes: int, upper: int) -> int:
    """Largest n in [1, upper] with peak(n) <= budget (peak increasing, peak(1) fits)."""
    low, high = 1, upper
    while low < high:
        middle = (low + high + 1) // 2
        if peak(middle) <= budget_bytes:
            low = middle
        else:
            high = middle - 1
    return low


def nda_bytes(*, train: int, queries: int, channels: int, side: int, patch: int | None, kernel_batch: int, values: int, measurements: int) -> int:
    """Peak bytes of NDA scoring (``ldsbench.methods.nda``) beyond the process
    and the model: the padded training set N C (side + p - 1)^2 and its patch
    norms N (side)^2 (float32); one block of ``kernel_batch`` query patches'
    cross products, distances and softmax, 3 kernel_batch N side^2 float32;
    and the scores, L Q N float64 per measurement plus the weights. Whole
    images (``patch`` None): the [Q, N] distances instead of the blocks."""
    positions = side * side
    if patch is None:
        work = 3 * queries * train * FLOAT32
    else:
        work = train * channels * (side + patch - 1) ** 2 * FLOAT32 + train * positions * FLOAT32 + 3 * kernel_batch * train * positions * FLOAT32
    return work + (measurements + 1) * values * queries * train * FLOAT64
