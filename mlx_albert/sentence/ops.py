"""Sentence vectors as arrays: sentence-transformers' quantize_embeddings (and its rescoring's
dequantization), similarity matrices and semantic_search over blocks with a running top-k. No model
here: the encoder, the vector folders and search share these."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import numpy as np

PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")


def finish(
    vectors: np.ndarray, truncate_dim=None, normalize: bool = False, precision="float32"
) -> np.ndarray:
    """sentence-transformers' order: truncate, then normalise, then quantize over the whole set."""
    if truncate_dim is not None:
        vectors = vectors[..., :truncate_dim]
    if normalize:
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    return quantize(vectors.astype(np.float32), precision)


def quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """sentence-transformers' quantize_embeddings: int8/uint8 by 255 equal steps between each
    dimension's minimum and maximum (of `ranges`, a (2, D) array, else of these vectors), binary and
    ubinary as the packed bits of x > 0 (int8 shifted by -128, or uint8)."""
    if precision == "float32":
        return vectors
    if precision == "float16":
        return vectors.astype(np.float16)
    if precision in ("int8", "uint8"):
        if ranges is None:
            if vectors.ndim == 1 or len(vectors) < 2:
                raise ValueError(
                    f"{precision} needs the ranges of several vectors (or ranges=) to quantize one"
                )
            ranges = np.vstack([vectors.min(axis=0), vectors.max(axis=0)])
        ranges = ranges.astype(np.float32)
        q = np.clip(np.floor((vectors - ranges[0]) / _steps(ranges)), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    bits = np.packbits(vectors > 0, axis=-1)
    return (bits - 128).astype(np.int8) if precision == "binary" else bits


def dequantize(values: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """int8 values back to the start of their buckets (float64), as sentence-transformers' rescoring
    reads them."""
    ranges = np.asarray(ranges, np.float32)
    return (values.astype(np.float64) + 128) * _steps(ranges) + ranges[0]


def _steps(ranges: np.ndarray) -> np.ndarray:
    """Each dimension's bucket width: 255 steps between its minimum and maximum (1 where they meet)."""
    steps = (ranges[1] - ranges[0]) / 255
    return np.where(steps == 0, 1, steps)


def similarity(a, b=None, kind: str = "cosine") -> np.ndarray:
    """Cosine (or dot) similarity of every row of `a` with every row of `b` (default: `a`): (N, M)."""
    if kind not in ("cosine", "dot"):
        raise ValueError(f"similarity {kind!r} is not implemented here: use 'cosine' or 'dot'")
    a = np.atleast_2d(np.asarray(a, np.float64))
    b = a if b is None else np.atleast_2d(np.asarray(b, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings of different sizes: {a.shape[1]} and {b.shape[1]}")
    if kind == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def semantic_search(
    queries, corpus, top_k: int = 10, kind: str | Callable = "cosine", block: int = 65536
) -> list[list[dict]]:
    """The top_k rows of `corpus` (N, D) for each query (Q, D) by `kind` (cosine, dot, or a function
    of two arrays giving their (Q, n) scores), best first (ties by row): corpus blocks of `block`
    rows scored with one mx matmul each and merged into a running top-k. Quantized vectors are
    refused: their integers are not the vectors (search a quantized folder with mlx_albert.search)."""
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if not (callable(kind) or kind in ("cosine", "dot")):
        raise ValueError(f"score_function must be 'cosine', 'dot' or a function, got {kind!r}")
    for name, given in (("queries", queries), ("corpus_embeddings", corpus)):
        dtype = getattr(given, "dtype", None)
        if dtype is not None and str(dtype).removeprefix("mlx.core.") in ("int8", "uint8"):
            raise ValueError(
                f"{name} are {str(dtype).removeprefix('mlx.core.')} (quantized: int8/uint8, or packed "
                "binary/ubinary bits): semantic search needs the float vectors; quantize after searching, "
                "or write a quantized folder with `embed --output DIR --precision` and search it"
            )
    q = np.atleast_2d(np.asarray(queries, np.float32))
    corpus = np.atleast_2d(np.asarray(corpus, np.float32))
    if q.shape[1] != corpus.shape[1]:
        raise ValueError(f"embeddings of different sizes: {q.shape[1]} and {corpus.shape[1]}")
    q = mx.array(q)
    q = unit_rows(q) if kind == "cosine" else q
    best = TopK(q.shape[0], top_k)
    for start in range(0, len(corpus), block):
        c = mx.array(corpus[start : start + block])
        if callable(kind):
            scores = mx.array(np.asarray(kind(np.array(q), np.array(c)), np.float32))
        else:
            scores = q @ (unit_rows(c) if kind == "cosine" else c).T
        best.add(scores, start)
    return hits(*best_first(*best.result(), top_k))


def is_texts(queries) -> bool:
    """A text or a non-empty list of texts (not vectors)."""
    return isinstance(queries, str) or (
        isinstance(queries, list | tuple) and len(queries) > 0 and isinstance(queries[0], str)
    )


def hits(scores: np.ndarray, ids: np.ndarray, lines: np.ndarray | None = None) -> list[list[dict]]:
    """Per query, [{"corpus_id", ("line",) "score"}] of its ranked rows."""
    return [
        [
            {"corpus_id": int(i), **({"line": int(lines[i])} if lines is not None else {}), "score": float(s)}
            for s, i in zip(row_s, row_i, strict=True)
        ]
        for row_s, row_i in zip(scores, ids, strict=True)
    ]


class TopK:
    """The k best scores per query (and their row ids) over blocks of scores added one at a time."""

    def __init__(self, queries: int, k: int):
        self.k = k
        self.scores = mx.zeros((queries, 0))
        self.ids = mx.zeros((queries, 0), mx.int32)

    def add(self, scores: mx.array, start: int) -> None:
        """A (queries, n) block of scores for rows start ... start + n - 1."""
        ids = mx.broadcast_to(mx.arange(start, start + scores.shape[1], dtype=mx.int32), scores.shape)
        self.scores = mx.concatenate([self.scores, scores.astype(mx.float32)], 1)
        self.ids = mx.concatenate([self.ids, ids], 1)
        if self.scores.shape[1] > self.k:
            keep = mx.argpartition(-self.scores, self.k - 1, axis=1)[:, : self.k]
            self.scores = mx.take_along_axis(self.scores, keep, 1)
            self.ids = mx.take_along_axis(self.ids, keep, 1)
        mx.eval(self.scores, self.ids)  # one block's work at a time: its buffers are freed before the next

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.scores, np.float64), np.array(self.ids)


def best_first(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each row, best first, ties by id (so results do not depend on block order)."""
    order = np.lexsort((ids, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, -1), np.take_along_axis(ids, order, -1)


def unit_rows(x: mx.array) -> mx.array:
    return x / mx.maximum(mx.linalg.norm(x, axis=1, keepdims=True), 1e-12)
