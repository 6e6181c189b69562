"""LoRA: low-rank adapters on the shared layer's attention and feed-forward projections, with the
rest of the backbone frozen; merging back into plain weights, and the adapter alone as a file pair
(adapters.safetensors + adapter_config.json, as mlx-lm) that loads onto its base model."""

from __future__ import annotations

import math
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .checks import finite, integer_in

ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapters.safetensors", "adapter_config.json"

TARGETS = ("query", "key", "value", "out_proj", "ffn", "ffn_output")
MAX_RANK = 4096  # no projection of a real ALBERT is wider (xxlarge: 4096)
MAX_ALPHA = 1e6  # scales of real adapters are 1-64 x rank; past this the update swamps any weight


def check_lora(rank, alpha, where: str = "LoRA") -> None:
    """Refuses a rank that is not an integer in [1, MAX_RANK] (a bool is not) and an alpha that is
    not a finite number in (0, MAX_ALPHA]: what an adapter config or a flag may hold."""
    if not integer_in(rank, 1, MAX_RANK):
        raise ValueError(f"{where}: lora_rank must be an integer from 1 to {MAX_RANK}, got {str(rank)[:40]}")
    if not (finite(alpha) and 0 < alpha <= MAX_ALPHA):
        raise ValueError(
            f"{where}: lora_alpha must be a finite number in (0, {MAX_ALPHA:g}], got {str(alpha)[:40]}"
        )


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
    check_lora(rank, alpha)
    backbone = model.backbone
    backbone.freeze()
    for group in backbone.encoder.groups:
        for layer in group.layers:
            for parent in (layer.attention, layer):
                for name in TARGETS:
                    if name in parent and isinstance(parent[name], nn.Linear):
                        setattr(parent, name, LoRALinear(parent[name], rank, alpha, dropout))
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


def save_adapters(
    folder: Path, model: nn.Module, rank: int, alpha: float, base_model: str | None, new: tuple[str, ...] = ()
) -> None:
    """Writes what LoRA training changed, alone: the adapters and the task head (every trainable
    parameter), and the weights the base model lacked (`new`: initialised when it was loaded, such
    as a pooler) to adapters.safetensors, and what rebuilds the model around them to
    adapter_config.json (the base model's name, the architecture, the head's config, LoRA's)."""
    from .files import atomic_write
    from .weights import write_json

    weights = dict(tree_flatten(model.trainable_parameters()))
    every = dict(tree_flatten(model.parameters()))
    weights.update({k: every[k] for k in new})
    atomic_write(folder / ADAPTER_WEIGHTS, lambda tmp: mx.save_safetensors(str(tmp), weights))
    config = model.config.to_hf()
    write_json(
        folder / ADAPTER_CONFIG,
        {
            "base_model": base_model,
            "architecture": type(model).__name__,
            "lora_rank": rank,
            "lora_alpha": alpha,
            "targets": list(TARGETS),
            "head_config": {
                "num_labels": model.config.num_labels,
                **{k: config.get(k) for k in ("id2label", "label2id", "problem_type")},
            },
        },
    )


def adapter_config(folder: Path) -> dict:
    """adapter_config.json of an adapter folder, checked."""
    from .files import read_json

    path = Path(folder) / ADAPTER_CONFIG
    config = read_json(path, "an adapter_config.json")
    ok = (
        isinstance(config, dict)
        and isinstance(config.get("architecture"), str)
        and isinstance(config.get("head_config"), dict)
    )
    if not ok:
        raise ValueError(f"{path} is not an mlx_albert adapter config (architecture, lora_rank, lora_alpha)")
    check_lora(config.get("lora_rank"), config.get("lora_alpha"), str(path))
    return config


def adapter_names(folder: Path) -> frozenset[str]:
    """The weight names adapters.safetensors holds (read from its header only)."""
    from .weights import check_safetensors

    return frozenset(k for k in check_safetensors(Path(folder) / ADAPTER_WEIGHTS) if k != "__metadata__")


def load_adapters(model: nn.Module, folder: Path, merge: bool = True) -> nn.Module:
    """Wraps `model` (the base, built with the adapter's architecture and head) with LoRA and loads
    adapters.safetensors onto it; merged into plain weights unless merge=False. Every adapter
    weight must fit the model by name and shape. A quantized base (LoRA trains float weights) is
    merged through its dequantized layers, then quantized back as it was."""
    from .pretrained import check_finite, dequantize, quantize_like
    from .weights import read_safetensors

    folder = Path(folder)
    config = adapter_config(folder)
    quantization = model.config.quantization if merge else None
    if quantization:
        stored = dict.fromkeys(f"{path}.scales" for path, m in model.named_modules() if "scales" in m)
        dequantize(model)
    apply_lora(model, config["lora_rank"], config["lora_alpha"])
    weights = read_safetensors(folder / ADAPTER_WEIGHTS)
    own = dict(tree_flatten(model.parameters()))
    new = getattr(model, "loading_info", None)  # weights the base lacks come from the adapter too
    wanted = [*dict(tree_flatten(model.trainable_parameters())), *(new.missing_keys if new else ())]
    unknown = sorted(k for k in weights if k not in own)
    missing = sorted(k for k in wanted if k not in weights)
    shapes = [k for k in weights if k in own and weights[k].shape != own[k].shape]
    if unknown or missing or shapes:
        raise ValueError(
            f"{folder / ADAPTER_WEIGHTS} does not fit {type(model).__name__} (unknown {unknown[:5]}, "
            f"missing {missing[:5]}, mis-shaped {shapes[:5]}): load it onto the base model it was trained on"
        )
    model.load_weights(list(weights.items()), strict=False)
    model.unfreeze()
    if new is not None:  # the weights the adapter held are trained, not new
        model.loading_info = type(new)(tuple(k for k in new.missing_keys if k not in weights))
    if not merge:
        return model
    merge_lora(model)
    try:
        check_finite(dict(tree_flatten(model.parameters())), str(folder))
    except ValueError as e:
        bad = str(e).partition("infinity (")[2].partition(")")[0]
        raise ValueError(
            f"{folder} merged into its base model gives NaN or infinity ({bad}): the adapter is corrupt or "
            "overflowed; train it again"
        ) from None
    if quantization:
        quantize_like(model, quantization, stored)
    return model
