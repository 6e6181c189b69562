"""Writes reviews_train.jsonl and reviews_dev.jsonl: short restaurant reviews labelled positive or
negative, from templates with negation ("not good" is negative), so word counting alone falls short.

python examples/data/make_reviews.py    (deterministic: the committed files are its output)"""

import json
import random
from pathlib import Path

GOOD = ["good", "great", "tasty", "friendly", "fresh", "lovely", "excellent", "quick", "warm", "perfect"]
BAD = ["bad", "awful", "bland", "rude", "stale", "dirty", "slow", "cold", "terrible", "noisy"]
THINGS = ["food", "soup", "staff", "service", "bread", "pizza", "coffee", "room", "music", "waiter"]
OPENERS = ["", "honestly ", "overall ", "i think ", "well, "]


def review(rng: random.Random) -> dict:
    positive = rng.random() < 0.5
    parts = []
    for _ in range(rng.randint(1, 2)):
        negate = rng.random() < 0.3
        # a negated bad word is praise, a negated good word is criticism
        word = rng.choice(BAD if positive == negate else GOOD)
        parts.append(f"the {rng.choice(THINGS)} was {'not ' if negate else ''}{word}")
    text = rng.choice(OPENERS) + " and ".join(parts) + rng.choice([".", "!", ""])
    return {"text": text, "label": "positive" if positive else "negative"}


def main() -> None:
    rng = random.Random(2026)
    here = Path(__file__).parent
    for name, n in (("reviews_train.jsonl", 600), ("reviews_dev.jsonl", 200)):
        (here / name).write_text("".join(json.dumps(review(rng)) + "\n" for _ in range(n)))


if __name__ == "__main__":
    main()
