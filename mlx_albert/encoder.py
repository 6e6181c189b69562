"""SentenceEncoder: sentence-transformers' SentenceTransformer.encode on MLX, for an ALBERT
sentence-transformers folder (its pooling, Dense and Normalize modules, max_seq_length, prompts) or
any ALBERT checkpoint with a pooling choice. Texts of different lengths are packed into shared rows
(runtime.run_packed); every vector equals the text's own forward. The one path of every embedding:
the embed pipeline and command, the server's /v1/embeddings and export."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable

import mlx.core as mx
import numpy as np

from .hub import Checkpoint
from .pooling import SentenceHead
from .runtime import Packed, clip_text, run_packed
from .sentence import SentenceConfig, check_widths
from .tokenizer import AlbertTokenizer

PRECISIONS = ("float32", "float16", "int8", "uint8", "binary", "ubinary")


class SentenceEncoder:
    """A model's backbone, its tokenizer and a SentenceHead: text in, vectors out."""

    def __init__(
        self,
        model,
        tokenizer: AlbertTokenizer,
        head: SentenceHead | None = None,
        max_seq_length: int | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: str = "cosine",
        do_lower_case: bool = False,
        config: SentenceConfig | None = None,
    ):
        self.model, self.backbone, self.tokenizer = model, model.backbone, tokenizer
        self.head = head or SentenceHead.from_config(None)
        limit = model.config.max_positions
        self.max_seq_length = min(max_seq_length or tokenizer.model_max_length, limit)
        self.prompts, self.default_prompt_name = dict(prompts or {}), default_prompt_name
        self.similarity_fn_name, self.do_lower_case = similarity_fn_name, do_lower_case
        self.config = config  # the sentence-transformers modules it came from (None: a plain checkpoint)
        if "pooler" in self.head.modes and "pooler" not in self.backbone:
            raise ValueError("this model has no pooler: use pooling='cls' or 'mean'")

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike | Checkpoint,
        pooling: str | None = None,
        normalize: bool | None = None,
        dtype=None,
        model=None,
        tokenizer: AlbertTokenizer | None = None,
    ) -> SentenceEncoder:
        """The encoder of a sentence-transformers folder or repo id (its modules decide), or of any
        ALBERT checkpoint (mean pooling, unit norm); `pooling`/`normalize` override either.
        `model`/`tokenizer`: already loaded from the same checkpoint."""
        from .loading import load

        checkpoint = Checkpoint.open(path_or_repo_id)
        config = checkpoint.sentence
        if config is not None:
            check_widths(config, checkpoint.config.hidden_size)
        head = SentenceHead.from_config(config, pooling, normalize)
        if model is None:  # a pooler the head never runs is no untrained weight worth a warning
            quiet = () if "pooler" in head.modes else ("pooler.weight", "pooler.bias")
            model = load(checkpoint, "base", dtype=dtype, quiet=quiet)
        tokenizer = tokenizer or AlbertTokenizer.from_pretrained(checkpoint)
        if config is None:
            return cls(model, tokenizer, head)
        return cls(
            model,
            tokenizer,
            head,
            config.max_seq_length,
            config.prompts,
            config.default_prompt_name,
            config.similarity,
            config.do_lower_case,
            config,
        )

    def with_head(self, pooling: str | None = None, normalize: bool | None = None) -> SentenceEncoder:
        """The same encoder with its folder's head overridden (pooling mode, unit norm or not)."""
        other = copy.copy(self)
        other.head = SentenceHead.from_config(self.config, pooling, normalize)
        return other

    def with_length(self, max_seq_length: int) -> SentenceEncoder:
        other = copy.copy(self)
        other.max_seq_length = min(max_seq_length, self.backbone.config.max_positions)
        return other

    def with_prompt(self, prompt_name: str | None) -> SentenceEncoder:
        """The same encoder putting the folder's prompt `prompt_name` before every text by default."""
        other = copy.copy(self)
        other._prompt(prompt_name, None)  # an unknown name is refused here, naming the known ones
        other.default_prompt_name = prompt_name
        return other

    @property
    def dimension(self) -> int:
        """The length of the vectors (before any truncate_dim)."""
        width = self.backbone.config.hidden_size * len(self.head.modes)
        return self.head.dense[-1].weight.shape[0] if self.head.dense else width

    def _prompt(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None:
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ValueError(
                f"prompt_name {name!r} is not one of this model's prompts {sorted(self.prompts)}"
            )
        return self.prompts[name]

    def tokenize(self, texts: list[str], prompt: str = "") -> tuple[list[list[int]], list[bool], int]:
        """(ids per text, whether each was truncated, the prompt's length in tokens with [CLS]) as
        sentence-transformers tokenizes: prompt + text, lower-cased when the folder says so, cut to
        max_seq_length."""
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"encode takes strings, got {type(text).__name__}: {text!r}"[:200])
        limit = self.max_seq_length
        texts = [clip_text(prompt + t, limit) for t in texts]
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        encodings, _ = self.tokenizer.encode(texts, truncation=True, max_length=limit)
        # as sentence-transformers measures it: the prompt tokenized alone, cut to the same length,
        # less its [SEP] (so a prompt that fills the sequence leaves [SEP] to pool, never nothing)
        prompt_length = len(self.tokenizer.encode([prompt], truncation=True, max_length=limit)[0][0].ids) - 1 if prompt else 0
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings], prompt_length

    def _forward(self, prompt_length: int, lazy: bool = False) -> Callable[[Packed], list]:
        pooler = self.backbone.pool if "pooler" in self.backbone else None

        def forward(packed: Packed):
            states = self.backbone(**packed.batch()).last_hidden_state
            # each sequence's own states, (N, longest, H), out of the packed rows
            states = states.reshape(-1, states.shape[-1])[mx.array(packed.index)]
            vectors = self.head(states, mx.array(packed.mask), prompt_length, pooler)
            if lazy:
                return [(vectors, r) for r in range(vectors.shape[0])]
            return list(np.array(vectors))

        return forward

    def encode_ids(
        self, ids: list[list[int]], batch_size: int = 32, prompt_length: int = 0, progress: bool = False
    ) -> list[np.ndarray]:
        """One float32 vector per sequence of token ids ([CLS] ... [SEP], within max_positions)."""
        forward = self._forward(prompt_length)
        pad, limit = self.tokenizer.pad_token_id, self.backbone.config.max_positions
        return run_packed(self.model, ids, forward, pad, limit, batch_size, progress)

    def encode_ids_deferred(
        self, ids: list[list[int]], batch_size: int = 32
    ) -> Callable[[], list[np.ndarray]]:
        """encode_ids queued (`mx.async_eval`): returns at once a function that waits for the vectors,
        so Python can prepare other work meanwhile (the server does)."""
        forward = self._forward(0, lazy=True)
        pad, limit = self.tokenizer.pad_token_id, self.backbone.config.max_positions
        rows = run_packed(self.model, ids, forward, pad, limit, batch_size)
        batches = list({id(a): a for a, _ in rows}.values())
        mx.async_eval(batches)

        def finish() -> list[np.ndarray]:
            host = {id(a): np.array(a) for a in batches}
            return [host[id(a)][r] for a, r in rows]

        return finish

    def encode(
        self,
        sentences: str | Iterable[str],
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        precision: str = "float32",
        convert_to_numpy: bool = True,
        show_progress_bar: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
    ):
        """sentence-transformers' encode: (N, D) for a list of texts, (D,) for one text.

        Args:
            batch_size: texts per forward pass (length-sorted; results in input order).
            normalize_embeddings: scale each vector to unit length (after truncate_dim).
            truncate_dim: keep the first truncate_dim dimensions (Matryoshka models).
            precision: float32, float16, or quantized as sentence-transformers'
                quantize_embeddings: int8/uint8 (255 buckets per dimension between the batch's
                minimum and maximum), binary/ubinary (one bit per dimension, packed).
            convert_to_numpy: a numpy array (else an mx.array).
            show_progress_bar: a progress line on stderr (default: off).
            prompt_name, prompt: a prompt put before every text (by name from the folder's
                config_sentence_transformers.json, or as text).
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if truncate_dim is not None and not (isinstance(truncate_dim, int) and 0 < truncate_dim):
            raise ValueError(f"truncate_dim must be a positive integer, got {truncate_dim!r}")
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not texts:
            return np.zeros((0, truncate_dim or self.dimension), np.float32)
        ids, _, prompt_length = self.tokenize(texts, self._prompt(prompt_name, prompt))
        vectors = np.stack(self.encode_ids(ids, batch_size, prompt_length, bool(show_progress_bar)))
        vectors = finish(vectors, truncate_dim, normalize_embeddings, precision)
        vectors = vectors[0] if single else vectors
        return vectors if convert_to_numpy else mx.array(vectors)

    def similarity(self, a, b=None) -> np.ndarray:
        """(N, M) similarity of every row of a with every row of b (default a), by the folder's
        similarity_fn_name: cosine or dot."""
        return similarity(a, b, self.similarity_fn_name)

    def semantic_search(
        self, queries, corpus_embeddings, top_k: int = 10, score_function="cosine"
    ) -> list[list[dict]]:
        """sentence-transformers' util.semantic_search: for each query (a text, embedded here, or a
        vector) the top_k rows of float corpus_embeddings by `score_function` ("cosine", its
        default, "dot", or a function of two (N, D) and (M, D) arrays giving (N, M) scores), best
        first, as [{"corpus_id": row, "score": float}]. For an index on disk see mlx_albert.search."""
        if is_texts(queries):
            queries = self.encode([queries] if isinstance(queries, str) else list(queries))
        return semantic_search(queries, corpus_embeddings, top_k, score_function)


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
