"""The model folders a run writes: best/ (swapped in whole) and the final model in the run folder
itself, in transformers' layout with the tokenizer and the run's arguments (LoRA merged, float32
master weights of mixed precision)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import mlx.core as mx

from ..files import temp_sibling
from ..lora import apply_lora, has_lora, merge_lora, save_adapters


def write_model(folder: Path, model, tokenizer, args, master=None, base_model: str | None = None) -> None:
    """Writes the model (a merged copy when it has LoRA adapters or float32 masters, leaving the
    training model as it is), its tokenizer and training_args.json into `folder`. A LoRA model
    also gets its adapters alone (adapters.safetensors, adapter_config.json naming `base_model`),
    and with args.adapter_only only those."""
    lora = has_lora(model)
    if master is not None or lora:
        trained = model
        model = type(trained)(trained.config)
        if lora:
            apply_lora(model, args.lora_rank, args.lora_alpha)
        model.update(trained.parameters())
        if master is not None:
            model.update(master)
        model.set_dtype(mx.float32)
        if lora:
            new = getattr(trained, "loading_info", None)  # what the base lacked: saved with the adapter
            new = new.missing_keys if new else ()
            save_adapters(folder, model, args.lora_rank, args.lora_alpha, base_model, new)
        merge_lora(model)
    if not (lora and args.adapter_only):
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "training_args.json").write_text(json.dumps(asdict(args), indent=2))


def save_into_run(output_dir: Path, write) -> None:
    """The run folder itself loads with from_pretrained: write(tmp) stages the model files beside
    it, then they move in one by one, weights first (the folder also holds checkpoints, so it is
    not swapped whole)."""
    tmp = temp_sibling(output_dir / "final", folder=True)
    try:
        write(tmp)
        for name in sorted((p.name for p in tmp.iterdir()), key=lambda n: n != "model.safetensors"):
            target = output_dir / name
            if (tmp / name).is_dir() and target.is_dir():  # a module folder (1_Pooling): swapped whole
                old = temp_sibling(target, folder=True)
                os.replace(target, old)
                os.replace(tmp / name, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
