"""Sentence embeddings and their cosine similarities.   python examples/embeddings.py [checkpoint]"""

import sys
from pathlib import Path

import mlx_albert
from mlx_albert.tasks import similarity

TINY = Path(__file__).resolve().parent.parent / "models" / "tiny-albert"  # works from any folder
path = sys.argv[1] if len(sys.argv) > 1 else str(TINY)
embed = mlx_albert.pipeline("embed", path, pooling="mean")
sentences = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock prices fell sharply."]
vectors = embed(sentences)  # (3, hidden_size), unit length
print(vectors.shape)
print(similarity(vectors).round(3))
