"""The backbone's inputs: converted to mx.arrays, filled with transformers' defaults and checked
(shapes, dtypes, id ranges) with errors that name the fix; the additive attention bias of a mask."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from .config import AlbertConfig


def as_array(name: str, value: Any) -> mx.array:
    if isinstance(value, mx.array):
        return value
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(
            f"{name} must be an mx.array or a rectangular numeric array, got {type(value).__name__}"
        )
    return mx.array(array)


def _is_integer(a: mx.array) -> bool:
    return mx.issubdtype(a.dtype, mx.integer) or a.dtype == mx.bool_


def prepare_inputs(
    config: AlbertConfig,
    input_ids,
    attention_mask=None,
    token_type_ids=None,
    position_ids=None,
    check: bool = True,
) -> tuple[mx.array, mx.array | None, mx.array, mx.array]:
    """Converts inputs to mx.arrays, fills transformers' defaults and validates shapes and ranges.
    A missing attention_mask stays None: no padding, so attention needs no mask at all."""
    input_ids = _ids(config, input_ids, position_ids is None)
    B, L = input_ids.shape
    arrays = {"input_ids": input_ids}
    for name, value in (
        ("attention_mask", attention_mask),
        ("token_type_ids", token_type_ids),
        ("position_ids", position_ids),
    ):
        if value is None:
            continue
        value = as_array(name, value)
        pairwise = name == "attention_mask" and tuple(value.shape) == (B, L, L)
        if tuple(value.shape) != (B, L) and not pairwise:
            also = f" (or {(B, L, L)} for a query-by-key mask)" if name == "attention_mask" else ""
            raise ValueError(
                f"{name} has shape {tuple(value.shape)} but input_ids has {(B, L)}: "
                f"pass arrays of the same (batch, seq) shape{also}"
            )
        if name != "attention_mask" and not _is_integer(value):
            raise TypeError(f"{name} must hold integers, got dtype {value.dtype}")
        arrays[name] = value
    if check:
        _check_ranges(config, arrays)
    if "token_type_ids" not in arrays:
        arrays["token_type_ids"] = mx.zeros((B, L), dtype=mx.int32)
    if "position_ids" not in arrays:
        arrays["position_ids"] = mx.broadcast_to(mx.arange(L), (B, L))
    return arrays["input_ids"], arrays.get("attention_mask"), arrays["token_type_ids"], arrays["position_ids"]


def _ids(config: AlbertConfig, input_ids, default_positions: bool) -> mx.array:
    """input_ids as a (batch, seq) integer array no longer than max_positions (when positions
    default to 0..L-1)."""
    if input_ids is None:
        raise ValueError("input_ids is required: a (batch, seq) array of token ids")
    input_ids = as_array("input_ids", input_ids)
    if input_ids.ndim != 2:
        raise ValueError(
            f"input_ids must have shape (batch, seq), got {tuple(input_ids.shape)}; "
            "add a batch axis with input_ids[None] for one sequence"
        )
    B, L = input_ids.shape
    if B == 0 or L == 0:
        raise ValueError(
            f"input_ids has shape {(B, L)}: every batch needs at least one sequence of at least one "
            "token (a tokenizer adds [CLS] and [SEP])"
        )
    if L > config.max_positions and default_positions:
        raise ValueError(
            f"sequence length {L} exceeds max_positions={config.max_positions}: truncate the input (e.g. "
            f"tokenizer(..., truncation=True, max_length={config.max_positions}))"
        )
    if not _is_integer(input_ids):
        raise TypeError(f"input_ids must hold integers, got dtype {input_ids.dtype}")
    return input_ids


# what indexes which embedding table: the config field that sizes it, and how a message names it
TABLES = {
    "input_ids": ("vocab_size", "token id", "vocabulary"),
    "token_type_ids": ("max_token_types", "token type", "token types"),
    "position_ids": ("max_positions", "position", "positions"),
}


def check_bounds(config, name: str, lo: int, hi: int, where: str | None = None, error=ValueError) -> None:
    """The one check that ids index their embedding table: values in [lo, hi] within [0, limit)
    of the config's field, else `error` naming them, the table and the fix (`where`: which
    example or input, for data read from files or requests)."""
    field, what, table = TABLES[name]
    limit = getattr(config, field)
    if 0 <= lo and hi < limit:
        return
    if where:  # one example or input: its first bad value
        problem = (
            f"{where} holds {what} {hi if hi >= limit else lo} outside the model's {table} "
            f"({name} outside [0, {limit}), {field}={limit})"
        )
    else:
        problem = f"{name} must be in [0, {limit}) ({field}={limit}), found values in [{lo}, {hi}]"
    raise error(f"{problem}; use the tokenizer that belongs to this checkpoint")


def _check_ranges(config: AlbertConfig, arrays: dict[str, mx.array]) -> None:
    """Ids, token types and positions within their tables, with one host sync for all of them."""
    names = [n for n in TABLES if n in arrays and arrays[n].size]
    if not names:
        return
    bounds = mx.stack([mx.stack([arrays[n].min(), arrays[n].max()]).astype(mx.int64) for n in names]).tolist()
    for n, (lo, hi) in zip(names, bounds, strict=True):
        check_bounds(config, n, lo, hi)


def attention_bias(attention_mask: mx.array, dtype: mx.Dtype) -> mx.array:
    """(B, L) mask of 1 = attend / 0 = padding -> additive (B, 1, 1, L) bias, as transformers; a
    (B, L, L) mask (query i may attend to key j, as BERT's 3-D masks) -> (B, 1, L, L)."""
    bias = (1 - attention_mask.astype(dtype)) * mx.finfo(dtype).min
    return bias[:, None] if bias.ndim == 3 else bias[:, None, None, :]
