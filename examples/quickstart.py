"""Load an ALBERT checkpoint (MLX or transformers folder, or Hub repo id) and run it.

python examples/quickstart.py [mlx_model]"""

import sys
from pathlib import Path

import numpy as np

import mlx_albert

TINY = Path(__file__).resolve().parent.parent / "models" / "tiny-albert"  # works from any folder
path = sys.argv[1] if len(sys.argv) > 1 else str(TINY)
model = mlx_albert.load(path)  # the class comes from config.json's `architectures`
config = model.config
print(
    f"{type(model).__name__}: {config.num_blocks} blocks x {config.block_depth} layer(s) sharing "
    f"{config.num_groups} group(s), hidden {config.hidden_size}, embedding {config.embedding_size}"
)

ids = np.array([[2, 10, 11, 12, 4, 13, 3, 0], [2, 14, 15, 4, 3, 0, 0, 0]])  # [CLS] ... [MASK] ... [SEP]
mask = (np.arange(8) < np.array([[7], [5]])).astype(np.int32)
out = model(ids, attention_mask=mask, output_hidden_states=True)
first = out.logits if hasattr(out, "logits") else out.last_hidden_state
print("output", first.shape, first.dtype, "| hidden states:", len(out.hidden_states))
if hasattr(out, "logits") and out.logits.ndim == 3:
    top = np.array(out.logits)[ids == 4].argmax(-1)  # boolean indexing is numpy's, not MLX's
    print("top prediction ids at [MASK]:", top.tolist())
