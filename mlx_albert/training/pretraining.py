"""Pre-training data as in the ALBERT paper: sentence-order prediction pairs from consecutive
segments of a document (swapped with probability 0.5), and masked-LM corruption (15% of tokens;
80% [MASK], 10% random, 10% kept), optionally of whole n-grams (n <= 3, p(n) ∝ 1/n)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..records import DataError, read_documents  # noqa: F401  (pre-training text)
from ..tokenizer import AlbertTokenizer
from .data import Dataset, collate


def sop_dataset(
    documents: list[list[str]], tokenizer: AlbertTokenizer, max_length: int, seed: int = 0
) -> Dataset:
    """[CLS] A [SEP] B [SEP] pairs of consecutive segments filling max_length; label 1 when swapped."""
    rng = np.random.default_rng(seed)
    budget = max_length - 3
    features = []
    for document in documents:
        sentences = [s.ids[1:-1] for s in tokenizer.encode(document)[0]]  # without [CLS]/[SEP]
        chunk: list[list[int]] = []
        for i, sentence in enumerate(sentences):
            chunk.append(sentence)
            if sum(map(len, chunk)) >= budget or i == len(sentences) - 1:
                tokens = [t for s in chunk for t in s]
                if len(tokens) >= 2:
                    if len(chunk) >= 2:  # split at a sentence boundary
                        cut = int(rng.integers(1, len(chunk)))
                        a, b = [t for s in chunk[:cut] for t in s], [t for s in chunk[cut:] for t in s]
                    else:  # one long sentence: split its tokens
                        cut = int(rng.integers(1, len(tokens)))
                        a, b = tokens[:cut], tokens[cut:]
                    while len(a) + len(b) > budget:  # trim the longer side, as BERT's truncate_seq_pair
                        (a if len(a) > len(b) else b).pop()
                    swapped = bool(rng.random() < 0.5)
                    if swapped:
                        a, b = b, a
                    ids = [tokenizer.cls_token_id, *a, tokenizer.sep_token_id, *b, tokenizer.sep_token_id]
                    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
                    features.append(
                        {"input_ids": ids, "token_type_ids": types, "sentence_order_label": int(swapped)}
                    )
                chunk = []
    if not features:
        raise DataError("the text gave no pre-training pairs: each document needs at least two tokens")
    return Dataset("pretraining", features)


def mask_tokens(
    input_ids: np.ndarray,
    special: np.ndarray,
    tokenizer: AlbertTokenizer,
    rng: np.random.Generator,
    probability: float = 0.15,
    max_ngram: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(corrupted ids, labels with -100 where not predicted) for a (B, L) batch; `special` marks
    positions that are never masked ([CLS], [SEP], padding)."""
    ids, labels = input_ids.copy(), np.full_like(input_ids, -100)
    chosen = np.zeros_like(special, dtype=bool)
    ngrams = np.arange(1, max_ngram + 1)
    weights = (1.0 / ngrams) / (1.0 / ngrams).sum()
    for row in range(ids.shape[0]):
        candidates = np.flatnonzero(~special[row])
        if candidates.size == 0:
            continue
        target = max(1, int(round(candidates.size * probability)))
        if max_ngram == 1:
            chosen[row, rng.choice(candidates, size=target, replace=False)] = True
            continue
        for start in rng.permutation(candidates):
            if chosen[row].sum() >= target:
                break
            n = int(rng.choice(ngrams, p=weights))
            span = [p for p in range(start, start + n) if p < ids.shape[1] and not special[row, p]]
            span = span[: target - int(chosen[row].sum())]
            chosen[row, span] = True
    labels[chosen] = input_ids[chosen]
    action = rng.random(ids.shape)
    ids[chosen & (action < 0.8)] = tokenizer.mask_token_id
    randomise = chosen & (action >= 0.8) & (action < 0.9)
    specials = [
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.mask_token_id,
    ]
    normal = np.setdiff1d(np.arange(tokenizer.vocab_size), [i for i in specials if i is not None])
    ids[randomise] = rng.choice(normal, size=int(randomise.sum()))
    return ids, labels


def masked_batch(
    features: list[dict],
    tokenizer: AlbertTokenizer,
    max_positions: int,
    rng: np.random.Generator,
    probability: float = 0.15,
    max_ngram: int = 1,
    positions: bool = False,
) -> dict[str, mx.array]:
    """A padded pre-training batch with MLM corruption ([CLS], [SEP] and padding never masked).
    With positions, also "masked_positions" (B, K): each row's masked positions, padded with an
    unmasked one; K = round(L * probability) bounds every row's count and depends on L only, so a
    compiled step sees one shape per batch width."""
    batch = collate(features, tokenizer.pad_token_id, max_positions)
    ids = np.array(batch["input_ids"])
    special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    special |= np.array(batch["attention_mask"]) == 0
    ids, labels = mask_tokens(ids, special, tokenizer, rng, probability, max_ngram)
    batch["input_ids"], batch["labels"] = mx.array(ids), mx.array(labels)
    if positions:
        batch["masked_positions"] = mx.array(masked_positions(labels, probability))
    return batch


def masked_positions(labels: np.ndarray, probability: float) -> np.ndarray:
    """(B, K) positions of each row's labels (!= -100), padded with the row's first unlabelled one."""
    k = max(1, int(round(labels.shape[1] * probability)))  # >= mask_tokens' count for any row
    out = np.empty((labels.shape[0], k), np.int32)
    for row, row_labels in enumerate(labels):
        chosen, free = np.flatnonzero(row_labels != -100), np.flatnonzero(row_labels == -100)
        if chosen.size > k:
            raise ValueError(f"row {row} has {chosen.size} masked tokens, more than the {k} expected")
        out[row, : chosen.size] = chosen
        out[row, chosen.size :] = free[0] if free.size else 0
    return out
