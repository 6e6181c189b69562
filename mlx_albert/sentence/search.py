"""Top-k search over a folder of vectors (vectors.py), one shard at a time: each shard's scores are
one `mx` matmul against all the queries, merged into a running top-k, so an index is never held in
memory whole, let alone twice. A float32 index scores by cosine. An int8 or binary index is searched
as sentence-transformers' `semantic_search_usearch(..., rescore=True)` does: the quantized queries
against the quantized corpus (the inner product of int8 values; the Hamming distance of the bits)
pick top_k x rescore_multiplier candidates, which the float32 queries then rank by their dot product
with the candidates (dequantized int8 values; the 0/1 bits)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from .encoder import SentenceEncoder
from .ops import TopK, best_first, dequantize, hits, is_texts, quantize, unit_rows
from .shards import read_shard
from .vectors import PROBE, Manifest, shards


def check_model(manifest: Manifest, encoder: SentenceEncoder, name: str, folder: Path) -> None:
    """Refuses an encoder other than the one the index was built with (dimension, then the probe
    vector), naming both."""
    probe = encoder.encode([PROBE], batch_size=1, prompt="")[0]  # the model alone, no prompt
    mine = Manifest(model=name, dimension=len(probe), probe=probe.astype(float).tolist())
    if mine.dimension != manifest.dimension or not mine.same_model(manifest):
        raise ValueError(
            f"the index {folder} was built with {manifest.describe()}; {mine.describe()} gives other "
            "vectors: search it with the model that built it"
        )


def search(
    folder: str | Path,
    queries,
    top_k: int = 10,
    encoder: SentenceEncoder | None = None,
    rescore_multiplier: int = 4,
    model_name: str = "this encoder",
    prompt_name: str | None = None,
) -> list[list[dict]]:
    """The top_k vectors of the index `folder` for each query, best first: per query a list of
    {"corpus_id": position in the index, "line": the input's line number, "score": float}.

    queries: strings (embedded with `encoder`, which must be the model that built the index, after
    the folder's prompt `prompt_name`) or a (Q, D) float array of query vectors.
    """
    folder = Path(folder)
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if not isinstance(rescore_multiplier, int) or rescore_multiplier < 1:
        raise ValueError(f"rescore_multiplier must be a positive integer, got {rescore_multiplier!r}")
    manifest, stream = shards(folder)
    if is_texts(queries):
        if encoder is None:
            raise ValueError("pass encoder= (the index's model) to search with texts")
        check_model(manifest, encoder, model_name, folder)
        texts = [queries] if isinstance(queries, str) else list(queries)
        queries = encoder.encode(texts, prompt_name=prompt_name)
    queries = np.atleast_2d(np.asarray(queries, np.float32))
    if queries.shape[1] != manifest.dimension:
        raise ValueError(f"queries of dimension {queries.shape[1]}; the index holds {manifest.dimension}")
    quantized = manifest.precision != "float32"
    k = top_k * rescore_multiplier if quantized else top_k
    scores, ids, lines = _first_stage(manifest, stream, queries, k)
    if quantized:
        scores, ids = _rescore(folder, manifest, queries, ids, top_k)
    return hits(*best_first(scores, ids, top_k), lines)


def _first_stage(manifest: Manifest, stream, queries: np.ndarray, k: int):
    """(scores, corpus ids) of the k best per query over every shard, and all line numbers."""
    q = _query(manifest, queries)
    best, lines, offset = TopK(len(queries), k), [], 0
    for vectors, shard_lines in stream:
        best.add(q @ _corpus(manifest, np.asarray(vectors)).T, offset)
        lines.append(np.asarray(shard_lines))
        offset += len(shard_lines)
    return (*best.result(), np.concatenate(lines))


def _query(manifest: Manifest, queries: np.ndarray) -> mx.array:
    if manifest.precision == "float32":
        return unit_rows(mx.array(queries))
    ranges = np.asarray(manifest.ranges, np.float32) if manifest.ranges is not None else None
    return _corpus(manifest, quantize(queries, manifest.precision, ranges))


def _corpus(manifest: Manifest, block: np.ndarray) -> mx.array:
    """A stored block as the float32 rows the first stage multiplies: unit rows (float32), the int8
    values (exact in float32), or the bits as +-1 (so a dot product is dimension - 2 x Hamming)."""
    if manifest.precision == "float32":
        return unit_rows(mx.array(block))
    if manifest.precision == "int8":
        return mx.array(block).astype(mx.float32)
    return _bits(block, manifest.dimension) * 2 - 1


def _bits(block: np.ndarray, dimension: int) -> mx.array:
    """sentence-transformers' binary rows (packed bits - 128, int8) as float 0/1 rows."""
    packed = mx.array(block.view(np.uint8) ^ 0x80)
    shifts = mx.array([7, 6, 5, 4, 3, 2, 1, 0], mx.uint8)
    bits = mx.right_shift(packed[:, :, None], shifts) & 1
    return bits.reshape(packed.shape[0], -1)[:, :dimension].astype(mx.float32)


def _rescore(folder: Path, manifest: Manifest, queries: np.ndarray, ids: np.ndarray, top_k: int):
    """The candidates' dot products with the float32 queries (sentence-transformers' rescoring)."""
    wanted = np.unique(ids[ids >= 0])
    rows = {}
    for index in np.unique(wanted // manifest.shard_size):
        vectors, _ = read_shard(folder, int(index), manifest)
        take = wanted[wanted // manifest.shard_size == index]
        block = np.asarray(vectors[take - index * manifest.shard_size])
        if manifest.precision == "int8":
            values = dequantize(block, manifest.ranges)
        else:
            values = np.array(_bits(block, manifest.dimension))
        rows.update(zip(take.tolist(), values, strict=True))
    candidates = np.stack([[rows[i] for i in row] for row in ids])  # (Q, k, D)
    scores = np.einsum("ij,ikj->ik", queries.astype(np.float64), candidates)
    return scores, ids
