"""Task pipelines on raw text, with the arguments and output dicts of transformers' pipelines."""

from __future__ import annotations

import numpy as np

from .tokenizer import AlbertTokenizer


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def fill_mask(
    model,
    tokenizer: AlbertTokenizer,
    inputs: str | list[str],
    top_k: int = 5,
    targets: str | list[str] | None = None,
):
    """Predicts the [MASK] tokens of each text (transformers' FillMaskPipeline).

    Returns, per text, a list of {"score", "token", "token_str", "sequence"} dicts (top_k of them),
    or a list of such lists when the text has several masks; a list of those for a list of texts.

    Raises:
        ValueError: a text without the mask token, or an empty list.
    """
    single = isinstance(inputs, str)
    texts = [inputs] if single else list(inputs)
    if not texts:
        raise ValueError("fill_mask needs at least one text")
    mask_id = tokenizer.mask_token_id
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    ids = batch["input_ids"]
    for text, row in zip(texts, ids, strict=True):
        if not (row == mask_id).any():
            raise ValueError(f"No mask_token ({tokenizer.mask_token}) found on the input {text!r}")
    logits = np.array(model(**batch).logits)  # (B, L, vocab)
    target_ids = None
    if targets is not None:
        targets = [targets] if isinstance(targets, str) else list(targets)
        target_ids = np.array(sorted({tokenizer(t)["input_ids"][1] for t in targets if t}))
        top_k = min(top_k, len(target_ids))
    results = []
    for row, row_logits in zip(ids, logits, strict=True):
        per_mask = []
        positions = np.flatnonzero(row == mask_id)
        for position in positions:
            probs = _softmax(row_logits[position].astype(np.float64))
            candidates = np.arange(probs.size) if target_ids is None else target_ids
            best = candidates[np.argsort(-probs[candidates], kind="stable")[:top_k]]
            answers = []
            for token in best:
                filled = row.copy()
                filled[position] = token
                answers.append(
                    {
                        "score": float(probs[token]),
                        "token": int(token),
                        "token_str": tokenizer.decode([token]),
                        # As transformers: special tokens (other masks) stay when there are several.
                        "sequence": tokenizer.decode(
                            filled[filled != tokenizer.pad_token_id], skip_special_tokens=len(positions) == 1
                        ),
                    }
                )
            per_mask.append(answers)
        results.append(per_mask[0] if len(per_mask) == 1 else per_mask)
    return results[0] if single else results
