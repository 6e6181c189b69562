"""fuse(): LoRA adapters merged into their base model and saved as a plain checkpoint, as mlx-lm's
`fuse`: in the base's dtype, re-quantized as the base was when it is quantized (transformers loads
the result when it is not)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from .convert import TOKENIZER_FILES
from .files import check_disjoint, clean_stale, staged_folder
from .hub import Checkpoint
from .loading import architecture_class, head_changes
from .lora import adapter_config, adapter_names, load_adapters
from .pretrained import quantize_like


def fuse(
    model: str | os.PathLike,
    adapter_path: str | os.PathLike,
    save_path: str | os.PathLike,
    force: bool = False,
) -> Path:
    """Writes `save_path`: the base `model` with the adapters of `adapter_path` merged into its
    weights (and the adapter's head), its tokenizer files beside. Returns the path.

    Raises:
        FileExistsError: save_path is not empty (pass force=True to replace it).
        ValueError: the adapters do not fit the base, or the merged weights are not finite.
    """
    out, adapters = Path(save_path), Path(adapter_path)
    clean_stale(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force to replace it")
    checkpoint = Checkpoint.open(model)
    check_disjoint({"--save-path": out}, {"--model": checkpoint.root, "--adapter-path": adapters})
    config = adapter_config(adapters)
    cls = architecture_class(checkpoint, config["architecture"])
    changes = head_changes(config["head_config"])
    merged = cls.from_pretrained(checkpoint, dtype="auto", quiet=adapter_names(adapters), **changes)
    quantization = merged.config.quantization
    if quantization:  # LoRA trains float weights: merge into the dequantized base, then quantize back
        stored = {f"{path}.scales" for path, m in merged.named_modules() if hasattr(m, "scales")}
        dequantize(merged)
        merged.config = merged.config.replace(quantization=None)
    load_adapters(merged, adapters)
    if quantization:
        quantize_like(merged, quantization, dict.fromkeys(stored))
        merged.config = merged.config.replace(quantization=quantization)
    with staged_folder(out) as tmp:
        merged.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (checkpoint.folder / name).is_file():
                shutil.copy2(checkpoint.folder / name, tmp / name)
    return out


def dequantize(model: nn.Module) -> nn.Module:
    """Replaces every quantized linear and embedding layer by its float equivalent (in place)."""
    for _, module in model.named_modules():
        for name, child in list(module.children().items()):
            if isinstance(child, nn.QuantizedLinear | nn.QuantizedEmbedding):
                setattr(module, name, _float_layer(child))
    return model


def _float_layer(layer: nn.Module) -> nn.Module:
    weight = mx.dequantize(
        layer.weight, layer.scales, layer.get("biases"), layer.group_size, layer.bits, mode=layer.mode
    )
    if isinstance(layer, nn.QuantizedEmbedding):
        plain = nn.Embedding(*weight.shape)
        plain.weight = weight
        return plain
    plain = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in layer)
    plain.weight = weight
    if "bias" in layer:
        plain.bias = layer.bias
    return plain


__all__ = ["dequantize", "fuse"]
