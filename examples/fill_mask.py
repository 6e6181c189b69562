"""Fill the [MASK] of a sentence.   python examples/fill_mask.py [checkpoint]"""

import sys
from pathlib import Path

import mlx_albert

TINY = Path(__file__).resolve().parent.parent / "models" / "tiny-albert"  # works from any folder
path = sys.argv[1] if len(sys.argv) > 1 else str(TINY)
unmask = mlx_albert.pipeline("fill-mask", path)
for answer in unmask("The cat likes [MASK] every morning.", top_k=3):
    print(f"{answer['score']:.4f}  {answer['sequence']}")
