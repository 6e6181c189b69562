"""LoRA: low-rank adapters on the shared layer's attention and feed-forward projections, with the
rest of the backbone frozen, and merging back into plain weights for saving."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

TARGETS = ("query", "key", "value", "out_proj", "ffn", "ffn_output")


class LoRALinear(nn.Module):
    """y = W x + b + (alpha / rank) * B (A dropout(x)); B starts at zero so training starts from W."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        out_dims, in_dims = linear.weight.shape
        self.linear = linear
        self.dropout = nn.Dropout(dropout)
        self.scale = alpha / rank
        bound = 1 / math.sqrt(in_dims)
        self.lora_a = mx.random.uniform(-bound, bound, (in_dims, rank))
        self.lora_b = mx.zeros((rank, out_dims))

    def __call__(self, x: mx.array) -> mx.array:
        update = (self.dropout(x) @ self.lora_a.astype(x.dtype)) @ self.lora_b.astype(x.dtype)
        return self.linear(x) + self.scale * update

    def merged(self) -> nn.Linear:
        linear = nn.Linear(*reversed(self.linear.weight.shape), bias="bias" in self.linear)
        delta = (self.scale * (self.lora_a @ self.lora_b)).T.astype(self.linear.weight.dtype)
        linear.weight = self.linear.weight + delta
        if "bias" in self.linear:
            linear.bias = self.linear.bias
        return linear


def apply_lora(model: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> int:
    """Freezes the backbone, wraps its shared layers' projections with LoRA and keeps the task head
    trainable. Returns the number of trainable parameters."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    backbone = getattr(model, "albert", model)
    backbone.freeze()
    for group in backbone.encoder.groups:
        for layer in group.layers:
            for parent in (layer.attention, layer):
                for name in TARGETS:
                    if name in parent and isinstance(parent[name], nn.Linear):
                        setattr(parent, name, LoRALinear(parent[name], rank, alpha, dropout))
    from mlx.utils import tree_flatten

    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


def merge_lora(model: nn.Module) -> nn.Module:
    """Replaces every LoRALinear by a plain Linear holding W + scale * (A B)^T (in place)."""
    for _, module in model.named_modules():
        for name, child in list(module.children().items()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return model


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for _, m in model.named_modules())
