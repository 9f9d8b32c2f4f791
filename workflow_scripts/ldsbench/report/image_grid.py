"""Image grid of queries and the training examples each method scores
highest and lowest, so a person can see what a method attributes."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def to_display(image: np.ndarray) -> np.ndarray:
    """[C, H, W] in [-1, 1] (or uint8 levels) -> [H, W] (grey) or [H, W, 3] in [0, 1]."""
    image = image / 127.5 - 1.0 if image.dtype == np.uint8 else image
    image = np.clip((np.asarray(image, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    return image[0] if image.shape[0] == 1 else np.transpose(image[:3], (1, 2, 0))


def extreme_examples(scores: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the ``count`` most positive (largest first) and most negative
    (smallest first) scores of one query: [N] -> ([count], [count]) int64."""
    order = np.argsort(scores, kind="stable")
    return order[::-1][:count].astype(np.int64), order[:count].astype(np.int64)


def plot_attribution_grid(queries: np.ndarray, train: np.ndarray, scores: dict, query_rows, count: int, path, measurement: str) -> None:
    """For each query in ``query_rows``, one block of rows (one per method):
    the query, then its ``count`` most positive and ``count`` most negative
    training examples by score tau(q, i), each labelled with its row and tau.

    Args:
        queries: [Q, C, H, W] query images in [-1, 1].
        train: [N, C, H, W] training images in [-1, 1].
        scores: {method: [Q, N] scores}, in display order.
        query_rows: rows of ``queries`` to show.
        count: examples per side.
        path: output PNG path.
        measurement: the measurement the scores predict (for the title).
    """
    methods = list(scores)
    n_rows, n_cols = len(query_rows) * len(methods), 1 + 2 * count
    fig = Figure(figsize=(1.15 * n_cols + 1.6, 1.25 * n_rows + 1.0))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    grey = queries.shape[1] == 1
    for block, query in enumerate(query_rows):
        for m, method in enumerate(methods):
            row = block * len(methods) + m
            tau = np.asarray(scores[method][query], dtype=np.float64)
            positive, negative = extreme_examples(tau, count)
            cells = [("query", queries[query], f"query {query}")]
            cells += [(f"+{j + 1}", train[i], f"#{i} {tau[i]:+.1e}") for j, i in enumerate(positive)]
            cells += [(f"-{j + 1}", train[i], f"#{i} {tau[i]:+.1e}") for j, i in enumerate(negative)]
            for col, (header, image, label) in enumerate(cells):
                ax = axes[row, col]
                ax.imshow(to_display(image), cmap="gray" if grey else None, vmin=0.0, vmax=1.0, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(label, fontsize=6.5, labelpad=2)
                if row == 0:
                    ax.set_title(header if col else "query", fontsize=9)
                for spine in ax.spines.values():
                    spine.set_edgecolor("black" if col == 0 else ("tab:red" if col <= count else "tab:blue"))
                    spine.set_linewidth(1.5 if col == 0 else 1.0)
            axes[row, 0].set_ylabel(str(method), fontsize=8, rotation=0, ha="right", va="center", labelpad=8)
    fig.suptitle(
        f"Queries and their training examples with the most positive (red, +1..+{count}) and most negative "
        f"(blue, -1..-{count}) scores on {measurement}.\ntau(q, i) predicts m(with i) - m(without i); labels: training row and tau.",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=150, format="png")
