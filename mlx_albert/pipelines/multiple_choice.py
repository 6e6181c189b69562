"""multiple_choice: a question (or context) and its candidate answers -> a probability per choice."""

from __future__ import annotations

import numpy as np

from ..runtime import dispatch, max_tokens, run_batches, to_numpy
from ..tokenizer import AlbertTokenizer
from .fill_mask import softmax


def _example(item) -> tuple[str, list[str]]:
    if isinstance(item, dict) and {"question", "choices"} <= set(item):
        question, choices = item["question"], item["choices"]
        if isinstance(question, str) and isinstance(choices, list | tuple) and choices:
            if all(isinstance(c, str) for c in choices):
                return question, list(choices)
    raise ValueError(
        "multiple choice takes {'question': str, 'choices': [str, ...]} with at least one choice, "
        f"got {item!r}"
    )


def multiple_choice(
    model,
    tokenizer: AlbertTokenizer,
    inputs,
    batch_size: int = 8,
    progress: bool = False,
    max_length: int | None = None,
):
    """Scores the choices of each question with an AlbertForMultipleChoice.

    Each choice is encoded as the pair (question, choice), truncated longest-first to the model.
    Returns, per question, [{"choice", "index", "score"}] sorted by score (softmax over its choices);
    a list of those for a list of questions.
    """
    limit = max_tokens(model, tokenizer, max_length)

    def run(items: list) -> list:
        examples = [_example(item) for item in items]
        groups = [
            tokenizer.encode([q] * len(choices), choices, truncation=True, max_length=limit)[0]
            for q, choices in examples
        ]
        results = []
        # Batches group questions with the same number of choices (the model takes (B, C, L)).
        for size in sorted({len(g) for g in groups}):
            rows = [i for i, g in enumerate(groups) if len(g) == size]
            logits = run_batches(
                model,
                [groups[i] for i in rows],
                lambda b: list(to_numpy(model(**b).logits)),
                tokenizer.pad_token_id,
                limit,
                batch_size,
                progress,
                squeeze=False,
            )
            results += list(zip(rows, logits, strict=True))
        out = [None] * len(items)
        for i, row in results:
            scores = softmax(np.asarray(row, np.float64))
            ranked = sorted(range(len(scores)), key=lambda c: -scores[c])
            out[i] = [{"choice": examples[i][1][c], "index": c, "score": float(scores[c])} for c in ranked]
        return out

    return dispatch(inputs, lambda x: isinstance(x, dict), run, batch_size)
