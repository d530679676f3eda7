"""RM-Bench accuracy, computed as the original evaluation does: a 3 x 3 matrix whose entry (i, j) is the
fraction of examples whose chosen response in style i scores strictly above the rejected one in style j
(styles: concise, detailed plain, detailed markdown). hard = mean of the upper triangle (the chosen response
is plainer than the rejected one), normal = mean of the diagonal, easy = mean of the lower triangle."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STYLES = 3


def accuracy_matrix(chosen: Sequence[Sequence[float]], rejected: Sequence[Sequence[float]]) -> np.ndarray:
    """(3, 3) float64 matrix from N examples' scores, ``chosen`` and ``rejected`` each (N, 3)."""
    chosen, rejected = np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)
    if chosen.ndim != 2 or chosen.shape[1:] != (STYLES,) or chosen.shape != rejected.shape or not len(chosen):
        raise ValueError(f"chosen and rejected must both have shape (N, {STYLES}) with N >= 1, "
                         f"got {chosen.shape} and {rejected.shape}")
    return (chosen[:, :, None] > rejected[:, None, :]).mean(axis=0)


def rmbench_accuracy(chosen: Sequence[Sequence[float]], rejected: Sequence[Sequence[float]]) -> dict[str, float]:
    """{'hard', 'normal', 'easy', 'average'} accuracies (average: the mean of the other three)."""
    matrix = accuracy_matrix(chosen, rejected)
    pairs = STYLES * (STYLES - 1) / 2
    hard = float(np.triu(matrix, 1).sum() / pairs)
    normal = float(np.diag(matrix).mean())
    easy = float(np.tril(matrix, -1).sum() / pairs)
    return {"hard": hard, "normal": normal, "easy": easy, "average": (hard + normal + easy) / 3}
