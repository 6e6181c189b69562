"""Fill the [MASK] of a sentence.   python examples/fill_mask.py [checkpoint] [sentence]

The default checkpoint, pydoc-small (shipped in the package), was pre-trained on Python's documentation:
ask it about Python."""

import sys

import mlx_albert

path = sys.argv[1] if len(sys.argv) > 1 else "pydoc-small"  # the model shipped in the package
text = sys.argv[2] if len(sys.argv) > 2 else "Return a new [MASK] containing all items from the iterable."
unmask = mlx_albert.pipeline("fill-mask", path)
for answer in unmask(text, top_k=5):
    print(f"{answer['score']:.4f}  {answer['sequence']}")
