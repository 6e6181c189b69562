"""Fill the [MASK] of a sentence.   python examples/fill_mask.py [checkpoint] [sentence]

The default checkpoint, models/albert-pydoc-small, was pre-trained on Python's documentation:
ask it about Python."""

import sys
from pathlib import Path

import mlx_albert

PYDOC = Path(__file__).resolve().parent.parent / "models" / "albert-pydoc-small"  # from any folder
path = sys.argv[1] if len(sys.argv) > 1 else str(PYDOC)
text = sys.argv[2] if len(sys.argv) > 2 else "Return a new [MASK] containing all items from the iterable."
unmask = mlx_albert.pipeline("fill-mask", path)
for answer in unmask(text, top_k=5):
    print(f"{answer['score']:.4f}  {answer['sequence']}")
