"""feature_extraction (transformers' FeatureExtractionPipeline), sentence embeddings with cls, mean
or pooler pooling, and cosine similarity."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import numpy as np

from ..runtime import (
    Packed,
    check_strings,
    clip_text,
    dispatch,
    max_tokens,
    run_batches,
    run_packed,
    to_numpy,
)
from ..tokenizer import AlbertTokenizer

POOLINGS = ("cls", "mean", "pooler")


def feature_extraction(
    model,
    tokenizer: AlbertTokenizer,
    inputs,
    return_tensors: bool = False,
    batch_size: int = 8,
    progress=False,
    max_length: int | None = None,
):
    """The last hidden state of each text, [CLS] and [SEP] included: a nested list of shape
    [1, L, H] as transformers, or an np.ndarray of that shape with return_tensors=True.
    Texts longer than the model are truncated."""
    limit = max_tokens(model, tokenizer, max_length)

    def run(texts: list) -> list:
        texts = [clip_text(t, limit) for t in check_strings("feature_extraction", texts)]
        encodings, _ = tokenizer.encode(texts, truncation=True, max_length=limit)
        states = run_batches(
            model,
            [[e] for e in encodings],
            lambda b: list(to_numpy(model.backbone(**b).last_hidden_state)),
            tokenizer.pad_token_id,
            limit,
            batch_size,
            progress,
        )
        out = [s[None, : len(e.ids)] for s, e in zip(states, encodings, strict=True)]
        return out if return_tensors else [s.tolist() for s in out]

    return dispatch(inputs, lambda x: isinstance(x, str), run, batch_size)


def embed(
    model,
    tokenizer: AlbertTokenizer,
    inputs,
    pooling: str = "mean",
    normalize: bool = True,
    batch_size: int = 64,
    progress: bool = False,
    max_length: int | None = None,
) -> np.ndarray:
    """Sentence embeddings: (H,) for one text, (N, H) for a list (texts are truncated to the model).

    pooling: "mean" over the attention mask, "cls" (the [CLS] hidden state) or "pooler"
    (ALBERT's tanh pooler on [CLS]); normalize: scale each embedding to unit L2 norm.
    Texts of different lengths share rows (packed, each attending to itself only) rather than all
    padding to the longest.
    """
    limit = max_tokens(model, tokenizer, max_length)
    forward = _pooled(model, pooling, normalize)

    def run(texts: list) -> list:
        texts = [clip_text(t, limit) for t in check_strings("embed", texts)]
        encodings, _ = tokenizer.encode(texts, truncation=True, max_length=limit)
        ids = [e.ids for e in encodings]
        return run_packed(model, ids, forward, tokenizer.pad_token_id, limit, batch_size, progress)

    result = dispatch(inputs, lambda x: isinstance(x, str), run, batch_size)
    return np.stack(result) if isinstance(inputs, list | tuple) else result


def _pooled(model, pooling: str, normalize: bool, lazy: bool = False):
    """The forward of `embed`: packed sequences -> one pooled (and normalised) vector each (lazy:
    a (pooled float32 batch, row) pair each, the batch not yet evaluated)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    albert = model.backbone
    if pooling == "pooler" and "pooler" not in albert:
        raise ValueError("this model has no pooler: use pooling='cls' or 'mean'")

    def forward(packed: Packed):
        states = albert(**packed.batch()).last_hidden_state
        # each sequence's own states, (N, longest, H), out of the packed rows
        states = states.reshape(-1, states.shape[-1])[mx.array(packed.index)]
        if pooling == "mean":
            mask = mx.array(packed.mask)[..., None].astype(states.dtype)
            pooled = (states * mask).sum(axis=1) / mx.maximum(mask.sum(axis=1), 1)
        else:
            pooled = states[:, 0] if pooling == "cls" else albert.pool(states[:, 0])
        if normalize:
            pooled = pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        if lazy:
            pooled = pooled.astype(mx.float32)
            return [(pooled, r) for r in range(pooled.shape[0])]
        return list(to_numpy(pooled))

    return forward


def embed_ids(
    model,
    ids: list[list[int]],
    pad_id: int,
    pooling: str = "mean",
    normalize: bool = True,
    batch_size: int = 64,
    deferred: bool = False,
) -> list[np.ndarray] | Callable[[], list[np.ndarray]]:
    """`embed` on token ids that are already the model's input ([CLS] ... [SEP], within its
    max_positions): one vector per sequence, computed in packed batches.

    deferred: queue the computation (`mx.async_eval`) and return at once a function that waits for
    it and returns the vectors; Python can prepare other work meanwhile (the server does)."""
    forward = _pooled(model, pooling, normalize, lazy=deferred)
    rows = run_packed(model, [list(x) for x in ids], forward, pad_id, model.config.max_positions, batch_size)
    if not deferred:
        return rows
    batches = list({id(a): a for a, _ in rows}.values())
    mx.async_eval(batches)

    def finish() -> list[np.ndarray]:
        host = {id(a): np.array(a) for a in batches}
        return [host[id(a)][r] for a, r in rows]

    return finish


def similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity of every row of `a` with every row of `b` (default: `a` itself): (N, M)."""
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = a if b is None else np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings of different sizes: {a.shape[1]} and {b.shape[1]}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T
