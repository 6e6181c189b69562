"""Batching for inference and training: sequences sorted by length, each batch padded
only to its own longest rounded up to the backend's bucket (multiples of 8 on the CPU backend, which
pays for every padded token; of 32 on GPUs, where few distinct shapes mean few compilations), or
packed several to a row; results handed back in input order; ids range-checked on the host so the
model runs without its own check (a device-to-host sync per batch)."""

from __future__ import annotations

import itertools
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import mlx.core as mx
import numpy as np
from tokenizers import Encoding

from .checks import integer_in
from .inputs import check_bounds

CHUNK_BATCHES = 64  # inputs are sorted within chunks of batch_size * CHUNK_BATCHES (bounds memory on streams)
CPU_MULTIPLE = 8
GPU_MULTIPLE = 32


def pad_multiple() -> int:
    return CPU_MULTIPLE if mx.default_device() == mx.cpu else GPU_MULTIPLE


def padded_width(longest: int, max_positions: int | None = None) -> int:
    """`longest` rounded up to the backend's bucket, but never past max_positions (nor below longest)."""
    multiple = pad_multiple()
    return max(longest, min(-(-longest // multiple) * multiple, max_positions or 1 << 30))


def max_tokens(model, tokenizer, max_length: int | None = None) -> int:
    """The longest sequence both the tokenizer settings and the model's position table allow (or
    max_length when given; it may not pass the model's position table)."""
    limit = model.config.max_positions
    if max_length is not None:
        if not integer_in(max_length, 3, limit):
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


def clip_pair(a: str, b: str | None, limit: int) -> tuple[str, str | None]:
    """A text pair cut as clip_text cuts one text, as far as longest-first truncation allows: it keeps
    each side's first tokens and which side is longer, so a side is cut only when it keeps more
    tokens than the other side can have. Unicode normalisation turns a character into at most 18
    (U+FDFA) and a token covers at least one, so 32 per character bounds a side's tokens with margin.
    Two long sides are kept whole (the records' size bound bounds them)."""
    if b is None:
        return clip_text(a, limit), None
    return clip_text(a, limit + 32 * len(b)), clip_text(b, limit + 32 * len(a))


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
    """A one-line progress report on stderr (only when enabled: user-facing loops such as the CLI):
    done/total, the rate, and the time left. Work skipped (resumed) counts as done, not in the rate."""

    def __init__(self, total: int | None, enabled: bool, label: str = "batches"):
        self.total, self.enabled, self.label = total, enabled and (total is None or total > 1), label
        self.done, self.skipped, self.start = 0, 0, time.perf_counter()

    def skip(self, n: int) -> None:
        self.done += n
        self.skipped += n

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        rate = (self.done - self.skipped) / max(time.perf_counter() - self.start, 1e-9)
        if self.total is None:
            line, end = f"{self.label} {self.done:,} ({rate:,.1f}/s)", ""
        else:
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            line = f"{self.label} {self.done:,}/{self.total:,} ({rate:,.1f}/s, {_duration(left)} left)"
            end = "\n" if self.done >= self.total else ""
        print(f"\r{line}", end=end, file=sys.stderr, flush=True)

    def end(self) -> None:
        if self.enabled and self.total is None:
            print(file=sys.stderr)


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


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
    `forward` gets the model's keyword arguments: {"input_ids", "attention_mask", "token_type_ids"}
    of shape (B, W), or (B, C, W) for groups of C > 1 encodings when squeeze is False (no
    "attention_mask" when the batch holds no padding: the model then attends without a mask), and
    check_inputs=False; it returns one result per row.
    Returns those results in the order of `groups`.
    """
    lengths = [max(len(e.ids) for e in g) for g in groups]
    results: list = [None] * len(groups)
    for rows, width in _longest_first(lengths, batch_size, max_positions, progress):
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
        if arrays["attention_mask"].all():
            del arrays["attention_mask"]
        check_ranges(model.config, arrays)
        outputs = forward({**{k: mx.array(v) for k, v in arrays.items()}, "check_inputs": False})
        for i, result in zip(rows, outputs, strict=True):
            results[i] = result
    return results


def _longest_first(lengths: list[int], batch_size: int, max_positions: int, progress: bool) -> Iterator:
    """(indices, width) of each batch: items longest first, batch_size at a time, each batch as wide
    as its longest rounded up to the backend's bucket (capped at max_positions)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bar = Progress(-(-len(lengths) // batch_size), progress)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, padded_width(lengths[rows[0]], max_positions)
        bar.update()


class Packed(NamedTuple):
    """Sequences packed several to a row for one forward (see `pack`)."""

    inputs: dict[str, np.ndarray]  # the model's inputs: (R, W) ids, types, positions; a mask
    index: np.ndarray  # (N, longest): where each sequence's tokens lie in the (R * W) flattened rows
    mask: np.ndarray  # (N, longest): 1 for a sequence's tokens, 0 past its end

    def batch(self) -> dict:
        """The model's keyword arguments (run_packed checked the ids on the host)."""
        return {**{k: mx.array(v) for k, v in self.inputs.items()}, "check_inputs": False}


def pack(sequences: list[list[int]], pad_id: int, width: int) -> Packed:
    """Packs sequences of at most `width` tokens into rows of `width`, first fit in the order given.
    Positions restart at 0 for each sequence and a (R, W, W) attention mask lets a token attend
    only to its own sequence, so each sequence's states are those of its own forward (to float
    rounding); padding attends to padding only. When no row holds two sequences, the mask is the
    usual (R, W) padding mask (or none without padding), which the attention applies more cheaply."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i, sequence in enumerate(sequences):
        r = next((r for r, f in enumerate(free) if f >= len(sequence)), len(rows))
        if r == len(rows):
            rows.append([])
            free.append(width)
        rows[r].append(i)
        free[r] -= len(sequence)
    shape = (len(rows), width)
    ids, positions = np.full(shape, pad_id, np.int32), np.zeros(shape, np.int32)
    segment = np.full(shape, -1, np.int32)
    longest = max(map(len, sequences))
    index = np.zeros((len(sequences), longest), np.int32)
    mask = np.zeros((len(sequences), longest), np.int32)
    for r, members in enumerate(rows):
        start = 0
        for i in members:
            n = len(sequences[i])
            ids[r, start : start + n] = sequences[i]
            positions[r, start : start + n] = np.arange(n)
            segment[r, start : start + n] = i
            index[i, :n] = r * width + start + np.arange(n)
            mask[i, :n] = 1
            start += n
    inputs = {"input_ids": ids, "token_type_ids": np.zeros(shape, np.int32), "position_ids": positions}
    if len(rows) < len(sequences):
        inputs["attention_mask"] = segment[:, :, None] == segment[:, None, :]
    elif (segment < 0).any():
        inputs["attention_mask"] = segment >= 0
    return Packed(inputs, index, mask)


def run_packed(
    model,
    sequences: list[list[int]],
    forward: Callable[[Packed], list],
    pad_id: int,
    max_positions: int,
    batch_size: int,
    progress: bool = False,
) -> list:
    """Runs `forward` over token-id sequences packed several to a row (`pack`), longest first,
    `batch_size` sequences at a time in rows as wide as the batch's longest (rounded up to the
    backend's bucket). Short sequences share rows instead of padding to the longest: on inputs of
    mixed lengths that is fewer tokens and smaller attention. `forward` gets the Packed rows (their
    ids checked on the host: `packed.batch()` runs the model without its own check) and returns one
    result per sequence; they are returned in the order of `sequences`."""
    for i, sequence in enumerate(sequences):  # positions are given, so the model cannot check lengths
        if not 0 < len(sequence) <= max_positions:
            raise ValueError(
                f"sequence {i} has {len(sequence)} tokens: each needs 1 to {max_positions} "
                "(the model's max_positions); truncate longer ones"
            )
    results: list = [None] * len(sequences)
    for rows, width in _longest_first(list(map(len, sequences)), batch_size, max_positions, progress):
        packed = pack([sequences[i] for i in rows], pad_id, width)
        check_ranges(model.config, packed.inputs)
        outputs = forward(packed)
        for i, result in zip(rows, outputs, strict=True):
            results[i] = result
    return results


def check_ranges(config, arrays: dict[str, np.ndarray]) -> None:
    """Host-side range check of a batch's ids and token types, so the model can run without its own
    (`check_inputs=False`)."""
    for name in ("input_ids", "token_type_ids"):
        values = arrays[name]
        if values.size:
            check_bounds(config, name, int(values.min()), int(values.max()))


def collate(features: list[dict], pad_id: int, max_positions: int | None = None) -> dict[str, mx.array]:
    """A training batch: features (dicts of id lists, and labels) padded to the batch's longest
    sequence rounded up to the backend's bucket (never past max_positions); (B, C, L) when each
    feature holds C sequences (multiple choice). Token labels are padded with -100."""
    width = padded_width(max(_length(f) for f in features), max_positions)
    multi = isinstance(features[0]["input_ids"][0], list)

    def pad(rows, value):
        return [list(r) + [value] * (width - len(r)) for r in rows]

    def rows(f, key):
        return f[key] if multi else [f[key]]

    out = {
        "input_ids": [pad(rows(f, "input_ids"), pad_id) for f in features],
        "token_type_ids": [pad(rows(f, "token_type_ids"), 0) for f in features],
        "attention_mask": [pad([[1] * len(r) for r in rows(f, "input_ids")], 0) for f in features],
    }
    out = {k: np.array(v, np.int32) if multi else np.array(v, np.int32)[:, 0] for k, v in out.items()}
    for key in ("labels", "start_positions", "end_positions", "sentence_order_label"):
        if key in features[0]:
            values = [f[key] for f in features]
            if isinstance(values[0], list) and key == "labels" and not isinstance(values[0][0], float):
                out[key] = np.array(pad(values, -100), np.int32)  # token labels
            elif isinstance(values[0], float) or (
                isinstance(values[0], list) and isinstance(values[0][0], float)
            ):
                out[key] = np.array(values, np.float32)
            else:
                out[key] = np.array(values, np.int32)
    return {k: mx.array(v) for k, v in out.items()}


def _length(feature: dict) -> int:
    """A feature's longest sequence (its choices' longest for multiple choice)."""
    ids = feature["input_ids"]
    return max(len(x) for x in ids) if ids and isinstance(ids[0], list) else len(ids)
