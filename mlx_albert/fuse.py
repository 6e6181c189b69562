"""fuse(): LoRA adapters merged into their base model and saved as a plain checkpoint, as mlx-lm's
`fuse`: in the base's dtype, re-quantized as the base was when it is quantized (transformers loads
the result when it is not)."""

from __future__ import annotations

import os
from pathlib import Path

from .convert import copy_tokenizer_files
from .files import check_disjoint, check_replaceable, staged_folder
from .hub import Checkpoint
from .loading import load


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
    check_replaceable(out, force)
    checkpoint = Checkpoint.open(model)
    check_disjoint({"--save-path": out}, {"--model": checkpoint.root, "--adapter-path": adapters})
    merged = load(checkpoint, adapter_path=adapters, dtype="auto")  # the base's own dtype
    with staged_folder(out) as tmp:
        merged.save_pretrained(tmp)
        copy_tokenizer_files(checkpoint.folder, tmp)
    return out
