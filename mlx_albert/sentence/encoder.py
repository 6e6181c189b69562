"""SentenceEncoder: sentence-transformers' SentenceTransformer.encode on MLX, for an ALBERT
sentence-transformers folder (its pooling, Dense and Normalize modules, max_seq_length, prompts) or
any ALBERT checkpoint with a pooling choice. Texts of different lengths are packed into shared rows
(batching.run_packed); every vector equals the text's own forward. The one path of every embedding:
the embed pipeline and command, the server's /v1/embeddings and export."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..batching import Packed, clip_text, run_packed
from ..checks import integer_in
from ..hub import Checkpoint
from ..tokenizer import AlbertTokenizer
from .folder import SentenceConfig, check_widths
from .ops import (  # noqa: F401  (re-exported: mlx_albert.encoder's names before the split)
    PRECISIONS,
    TopK,
    best_first,
    dequantize,
    finish,
    hits,
    is_texts,
    quantize,
    semantic_search,
    similarity,
    unit_rows,
)
from .pooling import SentenceHead


class SentenceEncoder:
    """A model's backbone, its tokenizer and a SentenceHead: text in, vectors out."""

    def __init__(
        self,
        model,
        tokenizer: AlbertTokenizer | None = None,
        head: SentenceHead | None = None,
        max_seq_length: int | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        similarity_fn_name: str = "cosine",
        do_lower_case: bool = False,
        config: SentenceConfig | None = None,
        truncate_dim: int | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        device: str | None = None,
    ):
        """`SentenceEncoder("name or path")` loads as `SentenceTransformer("...")` does (see
        from_pretrained; `device` is accepted and left to MLX, which runs on its default device);
        the other form wraps a loaded model and its tokenizer."""
        if isinstance(model, str | os.PathLike | Checkpoint):
            if tokenizer is not None or head is not None:
                raise ValueError("pass a model name alone, or a model object with its tokenizer")
            loaded = type(self).from_pretrained(model, revision=revision, cache_dir=cache_dir)
            self.__dict__.update(loaded.__dict__)
            self.truncate_dim = _check_truncate_dim(truncate_dim)
            return
        if tokenizer is None:
            raise ValueError("pass tokenizer= with a model object (or give a model name or path instead)")
        self.truncate_dim = _check_truncate_dim(truncate_dim)  # encode's default, as sentence-transformers'
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
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> SentenceEncoder:
        """The encoder of a sentence-transformers folder or repo id (its modules decide), or of any
        ALBERT checkpoint (mean pooling, unit norm); `pooling`/`normalize` override either.
        `model`/`tokenizer`: already loaded from the same checkpoint; `revision`, `cache_dir`: as
        load()'s, for a Hub repo id."""
        from ..loading import load

        checkpoint = Checkpoint.open(path_or_repo_id, revision, cache_dir)
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

    def get_sentence_embedding_dimension(self) -> int:
        """The length of the vectors encode() returns (truncate_dim when set), as sentence-transformers'."""
        return min(self.truncate_dim, self.dimension) if self.truncate_dim else self.dimension

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
        prompt_length = (
            len(self.tokenizer.encode([prompt], truncation=True, max_length=limit)[0][0].ids) - 1
            if prompt
            else 0
        )
        return [e.ids for e in encodings], [bool(e.overflowing) for e in encodings], prompt_length

    def _forward(
        self, prompt_length: int, lazy: bool = False, tokens: bool = False
    ) -> Callable[[Packed], list]:
        """The packed forward: per sequence its vector (lazy: (batch's vectors, row)), or with
        `tokens` (its tokens' states (L, H), its vector)."""
        pooler = self.backbone.pool if "pooler" in self.backbone else None

        def forward(packed: Packed):
            states = self.backbone(**packed.batch()).last_hidden_state
            # each sequence's own states, (N, longest, H), out of the packed rows
            states = states.reshape(-1, states.shape[-1])[mx.array(packed.index)]
            vectors = self.head(states, mx.array(packed.mask), prompt_length, pooler)
            if lazy:
                return [(vectors, r) for r in range(vectors.shape[0])]
            if tokens:
                states, lengths = np.array(states.astype(mx.float32)), packed.mask.sum(axis=1)
                return [(s[:n], v) for s, v, n in zip(states, np.array(vectors), lengths, strict=True)]
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
        inputs: str | Iterable[str] | None = None,
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        precision: str = "float32",
        convert_to_numpy: bool = True,
        show_progress_bar: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        *,
        sentences: str | Iterable[str] | None = None,
        convert_to_tensor: bool = False,
        output_value: str | None = "sentence_embedding",
        device: str | None = None,
    ):
        """sentence-transformers' encode: (N, D) for a list of texts, (D,) for one text.

        Args:
            inputs: a text or texts (`sentences=`, the name before sentence-transformers 6, too).
            batch_size: texts per forward pass (length-sorted; results in input order).
            normalize_embeddings: scale each vector to unit length (after truncate_dim).
            truncate_dim: keep the first truncate_dim dimensions (Matryoshka models); default: the
                encoder's truncate_dim attribute.
            precision: float32, float16, or quantized as sentence-transformers'
                quantize_embeddings: int8/uint8 (255 buckets per dimension between the batch's
                minimum and maximum), binary/ubinary (one bit per dimension, packed).
            convert_to_numpy: a numpy array (else an mx.array); convert_to_tensor: an mx.array.
            show_progress_bar: a progress line on stderr (default: off).
            prompt_name, prompt: a prompt put before every text (by name from the folder's
                config_sentence_transformers.json, or as text).
            output_value: "sentence_embedding"; "token_embeddings" (per text, its tokens' last
                hidden states, (L, H) each); None (per text, a dict of both, its input_ids and mask).
        """
        if sentences is not None:
            if inputs is not None:
                raise TypeError("encode takes inputs= or sentences= (the same thing), not both")
            inputs = sentences
        if inputs is None:
            raise TypeError("encode needs the texts to embed (inputs=)")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        truncate_dim = _check_truncate_dim(self.truncate_dim if truncate_dim is None else truncate_dim)
        if output_value not in ("sentence_embedding", "token_embeddings", None):
            raise ValueError(
                f"output_value must be 'sentence_embedding', 'token_embeddings' or None, got {output_value!r}"
            )
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if output_value != "sentence_embedding":
            outputs = self._token_outputs(texts, batch_size, prompt_name, prompt, output_value)
            return outputs[0] if single else outputs
        if not texts:
            return np.zeros((0, truncate_dim or self.dimension), np.float32)
        ids, _, prompt_length = self.tokenize(texts, self._prompt(prompt_name, prompt))
        vectors = np.stack(self.encode_ids(ids, batch_size, prompt_length, bool(show_progress_bar)))
        vectors = finish(vectors, truncate_dim, normalize_embeddings, precision)
        vectors = vectors[0] if single else vectors
        return mx.array(vectors) if convert_to_tensor or not convert_to_numpy else vectors

    def encode_query(self, inputs, prompt_name: str | None = None, prompt: str | None = None, **options):
        """encode() with the folder's "query" prompt unless another is given (sentence-transformers 5+)."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(inputs, prompt_name=prompt_name, prompt=prompt, **options)

    def encode_document(self, inputs, prompt_name: str | None = None, prompt: str | None = None, **options):
        """encode() with the folder's "document" prompt unless another is given."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
        return self.encode(inputs, prompt_name=prompt_name, prompt=prompt, **options)

    def __call__(self, inputs, **options):
        """encode(inputs): the encoder as a function of texts."""
        return self.encode(inputs, **options)

    def _token_outputs(self, texts, batch_size, prompt_name, prompt, output_value) -> list:
        """Per text, its tokens' last hidden states (L, H) (output_value "token_embeddings"), or a
        dict of them with its sentence embedding, input_ids and attention mask (None)."""
        ids, _, prompt_length = self.tokenize(texts, self._prompt(prompt_name, prompt))
        pad, limit = self.tokenizer.pad_token_id, self.backbone.config.max_positions
        forward = self._forward(prompt_length, tokens=True)
        results = run_packed(self.model, ids, forward, pad, limit, batch_size)
        if output_value == "token_embeddings":
            return [tokens for tokens, _ in results]
        return [
            {"sentence_embedding": vector, "token_embeddings": tokens, "input_ids": np.array(row, np.int64),
             "attention_mask": np.ones(len(row), np.int64)}
            for (tokens, vector), row in zip(results, ids, strict=True)
        ]  # fmt: skip

    def save(self, path: str | os.PathLike) -> None:
        """Writes a sentence-transformers folder (modules.json, the model at its root, Pooling,
        Dense and Normalize modules, prompts and similarity) that SentenceTransformer(path) and
        SentenceEncoder(path) load with the same vectors."""
        from .folder import save_sentence_folder

        save_sentence_folder(self, Path(path))

    def similarity_pairwise(self, a, b) -> np.ndarray:
        """(N,) similarity of each row of a with the same row of b, by the folder's function."""
        a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
        if a.shape != b.shape:
            raise ValueError(
                f"similarity_pairwise takes two arrays of one shape, got {a.shape} and {b.shape}"
            )
        if self.similarity_fn_name == "cosine":
            a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
            b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return (a * b).sum(axis=1)

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


def _check_truncate_dim(value):
    if value is not None and not integer_in(value, 1):
        raise ValueError(f"truncate_dim must be a positive integer, got {value!r}")
    return value
