"""AdamW as transformers' Trainer sets it up (no weight decay on biases and LayerNorm weights, bias
correction on), its learning-rate schedules (linear warm-up, then linear / cosine / constant), and
clipping by global norm."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten

SCHEDULES = ("linear", "cosine", "constant")


def decays(path: str, _weight=None) -> bool:
    """True for weights that take weight decay: everything but biases and LayerNorm weights."""
    name = path.rsplit(".", 1)[-1]
    return not (name == "bias" or path.endswith("norm.weight"))


def schedule(name: str, learning_rate: float, warmup_steps: int, total_steps: int):
    """Learning rate at optimizer step s (0-based, as transformers' LambdaLR):
    s / warmup during warm-up, then decaying to 0 at total_steps (linear or cosine) or staying flat."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}) and total >= 1"
        )

    def lr(step: mx.array) -> mx.array:
        step = mx.array(step, mx.float32)
        warm = step / max(1, warmup_steps)
        progress = mx.minimum((step - warmup_steps) / max(1, total_steps - warmup_steps), 1.0)
        if name == "linear":
            decay = mx.maximum(0.0, 1.0 - progress)
        elif name == "cosine":
            decay = 0.5 * (1.0 + mx.cos(math.pi * progress))
        else:
            decay = mx.array(1.0)
        return learning_rate * mx.where(step < warmup_steps, warm, decay)

    return lr


def adamw(
    learning_rate,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> optim.Optimizer:
    """torch.optim.AdamW's update, with weight decay only where `decays` says so."""
    if weight_decay == 0.0:
        return optim.AdamW(learning_rate, list(betas), eps, 0.0, bias_correction=True)
    return optim.MultiOptimizer(
        [
            optim.AdamW(learning_rate, list(betas), eps, weight_decay, bias_correction=True),
            optim.AdamW(learning_rate, list(betas), eps, 0.0, bias_correction=True),
        ],
        [decays],
    )


def clip_by_global_norm(grads, max_norm: float | None):
    """(clipped grads, global norm before clipping); max_norm None or <= 0 leaves them as they are."""
    if max_norm is None or max_norm <= 0:
        leaves = [g for _, g in tree_flatten(grads)]
        return grads, mx.sqrt(sum((g.astype(mx.float32) ** 2).sum() for g in leaves))
    return optim.clip_grad_norm(grads, max_norm)
