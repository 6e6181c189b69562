"""Find entities with character offsets.   python examples/token_classification.py [checkpoint]"""

from _checkpoint import checkpoint

import mlx_albert

tags = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
ner = mlx_albert.pipeline("ner", checkpoint("for_token_classification", id_to_label=tags))
text = "Maria Lopez moved from Lisbon to New York."
for entity in ner(text, aggregation_strategy="simple", ignore_labels=[]):
    print(f"{entity['entity_group']:>4}  {text[entity['start'] : entity['end']]!r}  {entity['score']:.3f}")
