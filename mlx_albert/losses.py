"""Losses with the semantics of torch.nn's CrossEntropyLoss / MSELoss / BCEWithLogitsLoss (mean)."""

from __future__ import annotations

import mlx.core as mx

IGNORE_INDEX = -100


def cross_entropy(logits: mx.array, labels: mx.array, ignore_index: int = IGNORE_INDEX) -> mx.array:
    """Mean negative log-likelihood over the labels that are not `ignore_index` (NaN if none)."""
    logits = logits.reshape(-1, logits.shape[-1]).astype(mx.float32)
    labels = labels.reshape(-1)
    valid = labels != ignore_index
    safe = mx.where(valid, labels, 0).astype(mx.int32)
    picked = mx.take_along_axis(logits, safe[:, None], axis=-1)[:, 0]
    nll = mx.logsumexp(logits, axis=-1) - picked
    return mx.where(valid, nll, 0).sum() / valid.sum()


def mse(predictions: mx.array, targets: mx.array) -> mx.array:
    return mx.mean(mx.square(predictions.astype(mx.float32) - targets.astype(mx.float32)))


def binary_cross_entropy_with_logits(logits: mx.array, targets: mx.array) -> mx.array:
    x, y = logits.astype(mx.float32), targets.astype(mx.float32)
    return mx.mean(mx.maximum(x, 0) - x * y + mx.log1p(mx.exp(-mx.abs(x))))


def check_labels(name: str, labels: mx.array, num_classes: int, ignore_index: int | None = IGNORE_INDEX):
    """Raises if integer class labels fall outside [0, num_classes) (ignore_index allowed)."""
    valid = labels if ignore_index is None else mx.where(labels == ignore_index, 0, labels)
    lo, hi = mx.stack([valid.min(), valid.max()]).tolist() if labels.size else (0, 0)
    if lo < 0 or hi >= num_classes:
        allowed = f"[0, {num_classes})" + (f" or {ignore_index}" if ignore_index is not None else "")
        raise ValueError(f"{name} must be in {allowed}, found values in [{lo}, {hi}]")
