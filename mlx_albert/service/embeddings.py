"""Embeddings admission, through the model's SentenceEncoder (the embed task's path): strings or
token id lists in (OpenAI's `input`), vectors out, `dimensions` by truncation then
re-normalisation as OpenAI does, and the tokens run. How the vectors are written (float lists,
base64) is the door's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..batching import clip_text
from ..checks import integer_in
from ..inputs import check_bounds
from ..tasks import RequestError
from .admission import Job, count, pick
from .batcher import Deferred
from .models import ServedModel
from .settings import Settings

FIELDS = frozenset({"model", "input", "dimensions"})


@dataclass
class Embedded:
    """An embeddings request's answer: one vector per input, in order."""

    model: str
    vectors: list[np.ndarray]
    tokens: int  # tokens the model ran
    truncated: int  # inputs cut to the model's length


def admit_embeddings(
    body: dict, models: dict[str, ServedModel], settings: Settings, door_fields: frozenset = frozenset()
) -> Job:
    """An embeddings request as a Job answering Embedded, or a RequestError naming what is wrong
    (`door_fields`: fields the door reads itself, such as OpenAI's encoding_format)."""
    unknown = set(body) - FIELDS - door_fields
    if unknown:
        raise RequestError(f"unknown field {sorted(unknown)[0]!r}", sorted(unknown)[0])
    served = pick(models, body)
    texts, ids, truncated = inputs(body.get("input"), served, settings)
    width = served.encoder.dimension
    dims = body.get("dimensions")
    if dims is not None and not integer_in(dims, 1, width):
        raise RequestError(f"dimensions must be an integer in [1, {width}]", "dimensions")
    items = texts if texts else [(x, False) for x in ids]
    estimate = sum(len(x) // 4 + 2 for x in texts) + sum(map(len, ids))  # for the batch token limit

    def finish(answers: list) -> Embedded:
        vectors = [cut(a[0], dims) for a in answers]
        return Embedded(
            served.id, vectors, sum(a[1] for a in answers), truncated + sum(a[2] for a in answers)
        )

    return Job(("embed", served.id), _work(served, settings.batch_size), [(items, estimate)], finish)


def _work(served: ServedModel, batch_size: int):
    encoder = served.encoder

    def work(items: list):
        """(vector, tokens, truncated) per item: texts are tokenised here, in one batch on the
        worker thread (the tokenizer's Rust threads, off the event loop)."""
        texts = [i for i, x in enumerate(items) if isinstance(x, str)]
        if texts:
            ids, was_cut, _ = encoder.tokenize([items[i] for i in texts])
            items = list(items)
            for i, row, c in zip(texts, ids, was_cut, strict=True):
                items[i] = (row, c)
        vectors = encoder.encode_ids_deferred([x[0] for x in items], batch_size)
        # read on the batcher's reader thread while this one prepares the next batch
        return Deferred(lambda: [(v, len(x[0]), x[1]) for v, x in zip(vectors(), items, strict=True)])

    return work


def cut(vector, dims: int | None) -> np.ndarray:
    """A vector cut to `dims` and scaled back to unit length (OpenAI's `dimensions`), as float32."""
    v = np.asarray(vector, np.float32)
    if dims is not None and dims < v.shape[0]:
        v = v[:dims] / max(float(np.linalg.norm(v[:dims])), 1e-12)
    return v


def inputs(value, served: ServedModel, settings: Settings):
    """OpenAI's `input`: a string, a list of strings, a list of token ids or a list of such lists
    -> (texts cut after their first 2 x max_length words, or token ids per input cut to the model,
    and how many of those were cut). Token ids are the model's input as given (include [CLS] and
    [SEP], as the tokenizer returns them). Texts are tokenised later, batched."""
    limit, config = served.encoder.max_seq_length, served.model.config

    def is_ids(x):
        return isinstance(x, list) and x and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

    if isinstance(value, str) or is_ids(value):
        value = [value]
    if not isinstance(value, list):
        raise RequestError("input must be a string, a list of strings or a list of token id lists", "input")
    count(value, settings)
    texts, truncated, ids = [], 0, []
    for i, item in enumerate(value):
        if isinstance(item, str):
            if len(item) > settings.max_input_chars:
                raise RequestError(
                    f"input {i} has {len(item)} characters; the limit is {settings.max_input_chars}", "input"
                )
            texts.append(clip_text(item, limit))
        elif is_ids(item):
            try:
                check_bounds(config, "input_ids", min(item), max(item), f"input {i}")
            except ValueError as e:
                raise RequestError(str(e), "input") from None
            truncated += len(item) > limit
            ids.append(item[:limit])
        else:
            raise RequestError(f"input {i} is neither a string nor a list of token ids", "input")
    if texts and ids:
        raise RequestError("input mixes strings and token ids", "input")
    return texts, ids, truncated
