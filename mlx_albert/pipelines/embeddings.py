"""feature_extraction (transformers' FeatureExtractionPipeline), sentence embeddings with cls, mean
or pooler pooling, and cosine similarity."""

from __future__ import annotations

from typing import NamedTuple

import mlx.core as mx
import numpy as np

from ..tokenizer import AlbertTokenizer
from ._batching import backbone, check_strings, clip_text, dispatch, max_tokens, run_batches, to_numpy

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
            lambda b: list(to_numpy(backbone(model)(**b).last_hidden_state)),
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
    """
    limit = max_tokens(model, tokenizer, max_length)
    forward = _pooled(model, pooling, normalize)

    def run(texts: list) -> list:
        texts = [clip_text(t, limit) for t in check_strings("embed", texts)]
        encodings, _ = tokenizer.encode(texts, truncation=True, max_length=limit)
        return run_batches(
            model, [[e] for e in encodings], forward, tokenizer.pad_token_id, limit, batch_size, progress
        )

    result = dispatch(inputs, lambda x: isinstance(x, str), run, batch_size)
    return np.stack(result) if isinstance(inputs, list | tuple) else result


def _pooled(model, pooling: str, normalize: bool):
    """The forward of `embed`: a batch -> one pooled (and normalised) vector per row."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")

    def forward(batch):
        out = backbone(model)(**batch)
        if pooling == "pooler":
            if out.pooler_output is None:
                raise ValueError("this model has no pooler: use pooling='cls' or 'mean'")
            pooled = out.pooler_output
        elif pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        elif "attention_mask" not in batch:  # no padding
            pooled = out.last_hidden_state.mean(axis=1)
        else:
            mask = batch["attention_mask"][..., None].astype(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * mask).sum(axis=1) / mx.maximum(mask.sum(axis=1), 1)
        if normalize:
            pooled = pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return list(to_numpy(pooled))

    return forward


class TokenIds(NamedTuple):
    """Token ids given directly (as an Encoding would carry them), for embed_ids."""

    ids: list[int]
    attention_mask: list[int]
    type_ids: list[int]


def embed_ids(
    model,
    ids: list[list[int]],
    pad_id: int,
    pooling: str = "mean",
    normalize: bool = True,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """`embed` on token ids that are already the model's input ([CLS] ... [SEP], within its
    max_positions): one vector per sequence, computed in length-bucketed batches."""
    groups = [[TokenIds(list(x), [1] * len(x), [0] * len(x))] for x in ids]
    limit = model.config.max_positions
    return run_batches(model, groups, _pooled(model, pooling, normalize), pad_id, limit, batch_size)


def similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity of every row of `a` with every row of `b` (default: `a` itself): (N, M)."""
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = a if b is None else np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings of different sizes: {a.shape[1]} and {b.shape[1]}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T
