"""Class balance for the training split: SMOTE oversampling or class weights."""

from __future__ import annotations

import numpy as np

from core.preprocess import LABELS


def class_weights(y: np.ndarray, power: float = 1.0) -> dict[int, float]:
    """``(n / (k * count_c)) ** power`` per class; power 1 is sklearn's "balanced", 0 is none."""
    counts = np.bincount(y, minlength=len(LABELS)).astype(np.float64)
    counts[counts == 0] = 1.0
    w = (len(y) / (len(LABELS) * counts)) ** power
    return {i: float(v) for i, v in enumerate(w)}


def smote(x: np.ndarray, y: np.ndarray, seed: int = 1234, k_neighbors: int = 5
          ) -> tuple[np.ndarray, np.ndarray]:
    """Oversample every minority class to the majority count with SMOTE (imbalanced-learn).

    Works on flattened pixels; images come back uint8 with their original shape.
    """
    from imblearn.over_sampling import SMOTE

    y = np.asarray(y)
    counts = np.bincount(y)
    if np.count_nonzero(counts) < 2:  # nothing to balance (SMOTE needs two classes)
        return x.copy(), y.copy()
    flat = x.reshape(len(x), -1).astype(np.float32)
    single = np.flatnonzero(counts == 1)
    if single.size:  # SMOTE needs a neighbour: a one-image class is duplicated first
        dup = np.isin(y, single)
        flat, y = np.concatenate([flat, flat[dup]]), np.concatenate([y, y[dup]])
        counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    k = max(1, min(k_neighbors, smallest - 1))
    xs, ys = SMOTE(k_neighbors=k, random_state=seed).fit_resample(flat, y)
    return np.clip(np.rint(xs), 0, 255).astype(np.uint8).reshape((-1,) + x.shape[1:]), ys
