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
from .lora import apply_lora, has_lora, merge_lora


def write_model(folder: Path, model, tokenizer, args, master=None) -> None:
    """Writes the model (a merged copy when it has LoRA adapters or float32 masters, leaving the
    training model as it is), its tokenizer and training_args.json into `folder`."""
    if master is not None or has_lora(model):
        trained = model
        model = type(trained)(trained.config)
        if has_lora(trained):
            apply_lora(model, args.lora_rank, args.lora_alpha)
        model.update(trained.parameters())
        if master is not None:
            model.update(master)
        model.set_dtype(mx.float32)
        merge_lora(model)
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
            os.replace(tmp / name, output_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
