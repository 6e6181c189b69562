"""Classify texts and text pairs.   python examples/text_classification.py [checkpoint]"""

from _checkpoint import checkpoint

import mlx_albert

labels = {0: "negative", 1: "positive"}
classify = mlx_albert.pipeline(
    "text-classification", checkpoint("for_sequence_classification", id_to_label=labels)
)
print(classify(["What a lovely morning.", "The train was late again."]))
print(classify({"text": "Is the cat inside?", "text_pair": "The cat sleeps on the sofa."}, top_k=None))
