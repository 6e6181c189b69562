"""Shared by the task examples: a checkpoint for a task, made on the spot when none is given.

The bundled tiny-albert is a masked LM; the other tasks get a new, randomly initialised head on its
backbone (answers are then random but the whole path runs). Pass a fine-tuned checkpoint instead."""

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import mlx_albert

TINY = Path(__file__).resolve().parent.parent / "models" / "tiny-albert"


def checkpoint(architecture: str, **config) -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    folder = Path(tempfile.mkdtemp(prefix="mlx-albert-example-"))
    atexit.register(shutil.rmtree, folder, True)  # a scratch checkpoint: gone when the script ends
    mlx_albert.load(TINY, architecture, **config).save_pretrained(folder)
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(TINY / name, folder / name)
    print(f"(no checkpoint given: {architecture} head initialised at random on {TINY.name})\n")
    return str(folder)
