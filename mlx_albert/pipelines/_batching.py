"""Length-bucketed batching shared by the pipelines: sort by length, pad each batch only to its own
longest (rounded up to the backend's bucket), run the model, hand results back in input order."""

from __future__ import annotations

import contextlib
import itertools
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import mlx.core as mx
import numpy as np
from tokenizers import Encoding

from ..buckets import padded_width

CHUNK_BATCHES = 64  # inputs are sorted within chunks of batch_size * CHUNK_BATCHES (bounds memory on streams)


def max_tokens(model, tokenizer, max_length: int | None = None) -> int:
    """The longest sequence both the tokenizer settings and the model's position table allow (or
    max_length when given; it may not pass the model's position table)."""
    limit = model.config.max_positions
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or not 3 <= max_length <= limit:
            raise ValueError(
                f"max_length must be an integer in [3, {limit}] (the model's max_positions), "
                f"got {max_length!r}"
            )
        return max_length
    return min(tokenizer.model_max_length, limit)


# Rust's char::is_whitespace, which the tokenizer's WhitespaceSplit uses (Python's isspace adds \x1c-\x1f).
_WORD = re.compile(r"[^\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def clip_text(text: str, limit: int) -> str:
    """`text` cut after its first 2*limit + 16 words when it is long: words are tokenised one by one
    and each gives at least one token, so the first `limit` tokens are the same, and a 10 MB text no
    longer costs 10 MB of tokenisation to use 512 tokens."""
    if len(text) <= 64 * limit:
        return text
    for count, match in enumerate(_WORD.finditer(text), 1):
        if count > 2 * limit + 16:
            return text[: match.end()]
    return text


def backbone(model):
    """The AlbertModel inside a task model (or the model itself)."""
    return getattr(model, "albert", model)


def to_numpy(x: mx.array) -> np.ndarray:
    return np.array(x.astype(mx.float32) if mx.issubdtype(x.dtype, mx.floating) else x)


def check_strings(task: str, texts: list) -> list[str]:
    """The texts, or a TypeError naming the task and the first non-string."""
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"{task} takes strings, got {type(text).__name__}: {text!r}")
    return texts


def dispatch(inputs, is_single: Callable[[Any], bool], run: Callable[[list], list], batch_size: int):
    """One input -> one result; a list/tuple -> a list; any other iterable -> a generator (streamed)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if is_single(inputs):
        return run([inputs])[0]
    chunk = batch_size * CHUNK_BATCHES
    if isinstance(inputs, list | tuple):
        if not inputs:
            raise ValueError("got an empty list of inputs: pass at least one")
        return [r for i in range(0, len(inputs), chunk) for r in run(list(inputs[i : i + chunk]))]
    if isinstance(inputs, Iterable) and not isinstance(inputs, str | bytes | dict):
        return _stream(iter(inputs), run, chunk)
    raise TypeError(
        f"unsupported input of type {type(inputs).__name__}: pass a string, a list or an iterable"
    )


def _stream(it: Iterator, run, chunk: int) -> Iterator:
    while part := list(itertools.islice(it, chunk)):
        yield from run(part)


class Progress:
    """A one-line progress report on stderr (only when enabled: user-facing loops such as the CLI)."""

    def __init__(self, total: int, enabled: bool, label: str = "batches"):
        self.total, self.enabled, self.label = total, enabled and total > 1, label
        self.done, self.start = 0, time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.enabled:
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            end = "\n" if self.done >= self.total else ""
            print(
                f"\r{self.label} {self.done}/{self.total} ({rate:.1f}/s)",
                end=end,
                file=sys.stderr,
                flush=True,
            )


def run_batches(
    model,
    groups: list[list[Encoding]],
    forward: Callable[[dict[str, mx.array]], list],
    pad_id: int,
    max_positions: int,
    batch_size: int,
    progress: bool = False,
    squeeze: bool = True,
) -> list:
    """Runs `forward` over groups of encodings, longest first, `batch_size` groups at a time.

    Each batch is padded to its own longest sequence rounded up to the backend's bucket (8 on the
    CPU, 32 on GPUs; capped at max_positions). Ids and token types are range-checked here, on the
    host arrays, so the model runs without its own check (a device-to-host sync per batch).
    `forward` gets {"input_ids", "attention_mask", "token_type_ids"} of shape (B, W), or
    (B, C, W) for groups of C > 1 encodings when squeeze is False (no "attention_mask" when the
    batch holds no padding: the model then attends without a mask), and returns one result per row.
    Returns those results in the order of `groups`.
    """
    lengths = [max(len(e.ids) for e in g) for g in groups]
    order = sorted(range(len(groups)), key=lambda i: -lengths[i])
    results: list = [None] * len(groups)
    bar = Progress(-(-len(groups) // batch_size), progress)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = padded_width(lengths[rows[0]], max_positions)
        C = len(groups[rows[0]])
        arrays = {
            k: np.zeros((len(rows), C, width), np.int32)
            for k in ("input_ids", "attention_mask", "token_type_ids")
        }
        arrays["input_ids"][:] = pad_id
        for r, i in enumerate(rows):
            for c, e in enumerate(groups[i]):
                n = len(e.ids)
                arrays["input_ids"][r, c, :n] = e.ids
                arrays["attention_mask"][r, c, :n] = e.attention_mask
                arrays["token_type_ids"][r, c, :n] = e.type_ids
        if squeeze:
            arrays = {k: v[:, 0] for k, v in arrays.items()}
        _check_ranges(model.config, arrays)
        if arrays["attention_mask"].all():
            del arrays["attention_mask"]
        with _unchecked(model):
            outputs = forward({k: mx.array(v) for k, v in arrays.items()})
        for i, result in zip(rows, outputs, strict=True):
            results[i] = result
        bar.update()
    return results


def _check_ranges(config, arrays: dict[str, np.ndarray]) -> None:
    for name, limit, field in (
        ("input_ids", config.vocab_size, "vocab_size"),
        ("token_type_ids", config.max_token_types, "max_token_types"),
    ):
        if arrays[name].max() >= limit:
            raise ValueError(
                f"{name} reach {int(arrays[name].max())} but the model's {field} is {limit}: "
                "use the tokenizer that belongs to this model"
            )


@contextlib.contextmanager
def _unchecked(model):
    albert = backbone(model)
    before = albert.check_inputs
    albert.check_inputs = False
    try:
        yield
    finally:
        albert.check_inputs = before
