"""The ALBERT backbone in MLX: factorised embeddings, the shared-layer encoder and the pooler.
Mirrors transformers' `modeling_albert.py` (post-LayerNorm layers, group index i // (L / G))."""

from __future__ import annotations

import functools
import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import _blas
from .activations import ACTIVATIONS, softmax, softmax_numerator, tanh
from .config import AlbertConfig
from .outputs import BaseModelOutputWithPooling
from .pretrained import PreTrainedMixin


class AlbertEmbeddings(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.position_embeddings = nn.Embedding(config.max_positions, config.embedding_size)
        self.token_type_embeddings = nn.Embedding(config.max_token_types, config.embedding_size)
        self.norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.pad_token_id = config.pad_token_id

    def __call__(self, input_ids: mx.array, token_type_ids: mx.array, position_ids: mx.array) -> mx.array:
        x = self.word_embeddings(input_ids)
        if self.pad_token_id is not None:  # transformers' padding_idx: pad lookups train no row
            x = mx.where((input_ids == self.pad_token_id)[..., None], mx.stop_gradient(x), x)
        x = x + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)
        return self.dropout(self.norm(x))  # (B, L, E)


class AlbertAttention(nn.Module):
    SCORES_BUDGET = 64 * 2**20  # bytes of attention scores per chunk on the explicit path

    def __init__(self, config: AlbertConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.scale = 1.0 / math.sqrt(config.head_dim)
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.out_proj = nn.Linear(h, h)
        self.norm = nn.LayerNorm(h, eps=config.layer_norm_epsilon)
        self.attention_dropout = nn.Dropout(config.attention_dropout_rate)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.attention_dropout_rate = config.attention_dropout_rate
        # One (H -> 3H) matmul for q, k, v instead of three. Off by default: on the CPU backend it
        # measured 4-8% slower (the weights are concatenated per call); `bench.py --fuse-qkv` measures it.
        self.fuse_qkv = False

    def _qkv(self, x: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Queries, keys and values as (B, nh, L, hd): one fused projection where it pays (the
        weights stay three transformers-named Linears; LoRA and quantized layers run unfused)."""
        B, L, _ = x.shape
        projections = (self.query, self.key, self.value)
        if self.fuse_qkv and all(type(p) is nn.Linear and "bias" in p for p in projections):
            weight = mx.concatenate([p.weight for p in projections])  # (3H, H)
            bias = mx.concatenate([p.bias for p in projections])
            qkv = mx.addmm(bias, x, weight.T).reshape(B, L, 3, self.num_heads, -1)
            qkv = qkv.transpose(2, 0, 3, 1, 4)  # (3, B, nh, L, hd)
            return qkv[0], qkv[1], qkv[2]
        q, k, v = (p(x).reshape(B, L, self.num_heads, -1).transpose(0, 2, 1, 3) for p in projections)
        return q, k, v

    def __call__(self, x: mx.array, bias: mx.array | None, return_weights: bool = False):
        B, L, H = x.shape
        q, k, v = self._qkv(x)  # (B, nh, L, hd)
        # The fused kernel serves GPUs (Metal, CUDA); on the CPU backend it falls back to unfused ops
        # with a slow exp, so there the explicit paths with our softmax are faster.
        explicit = return_weights or (self.training and self.attention_dropout_rate > 0)
        weights = None
        if mx.default_device() == mx.cpu and not (explicit or self.training):
            context = self._attend_deferred(q, k, v, bias)
        elif explicit or mx.default_device() == mx.cpu:
            # Queries in chunks whose scores stay under SCORES_BUDGET bytes (one chunk for usual
            # sizes), so long batches never hold (B, nh, L, L) at once; weights need it whole.
            step = L if return_weights else self._step(B, L)
            k_t = k.transpose(0, 1, 3, 2)
            parts = []
            for start in range(0, L, step):
                scores = (q[:, :, start : start + step] * self.scale) @ k_t  # (B, nh, step, L)
                if bias is not None:
                    scores = scores + _bias_rows(bias, start, step)
                weights = softmax(scores).astype(v.dtype)
                parts.append(self.attention_dropout(weights) @ v)
            context = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=2)
            context = context.transpose(0, 2, 1, 3).reshape(B, L, H)
            weights = weights if return_weights else None
        else:
            context = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=bias)
            context = context.transpose(0, 2, 1, 3).reshape(B, L, H)
        return self.norm(x + self.dropout(self.out_proj(context))), weights

    def _step(self, B: int, L: int) -> int:
        return max(1, self.SCORES_BUDGET // (B * self.num_heads * L * 4))

    def _attend_deferred(self, q: mx.array, k: mx.array, v: mx.array, bias: mx.array | None) -> mx.array:
        """Inference on the CPU backend: softmax(scale q k^T + bias) v with each row divided by its
        sum after `@ v`, where it is head_dim wide instead of L; the sums come out of the same
        matmul, as a column of ones appended to v, and the scale is applied inside the exp. Saves
        two passes over the (B, nh, L, L) scores. Returns (B, L, H)."""
        B, nh, L, hd = q.shape
        step = self._step(B, L)
        k_t = k.transpose(0, 1, 3, 2)
        v1 = mx.concatenate([v, mx.ones((B, nh, L, 1), v.dtype)], axis=-1)  # (B, nh, L, hd + 1)
        parts = []
        for start in range(0, L, step):
            scores = q[:, :, start : start + step] @ k_t  # (B, nh, step, L), not yet scaled
            if bias is not None:  # scaled after the bias: masked scores stay far below the rest
                scores = scores + _bias_rows(bias, start, step)
            out = (softmax_numerator(scores, self.scale).astype(v.dtype) @ v1).transpose(0, 2, 1, 3)
            parts.append(out[..., :hd] * (1.0 / out[..., hd:]))  # (B, step, nh, hd)
        context = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)
        return context.reshape(B, L, nh * hd)


def _bias_rows(bias: mx.array, start: int, step: int) -> mx.array:
    """The attention bias of queries start..start+step: a (B, 1, 1, L) padding bias serves every
    query; a (B, 1, L, L) one from a query-by-key mask has a row per query."""
    return bias if bias.shape[2] == 1 else bias[:, :, start : start + step]


class AlbertLayer(nn.Module):
    """One transformer layer: attention then FFN, each with residual + post-LayerNorm."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.attention = AlbertAttention(config)
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.activation = ACTIVATIONS[config.activation]

    def __call__(self, x: mx.array, bias: mx.array | None, return_weights: bool = False):
        x, weights = self.attention(x, bias, return_weights)
        return self.norm(x + self.ffn_output(self.activation(self.ffn(x)))), weights


class AlbertLayerGroup(nn.Module):
    """The block_depth layers whose parameters a group's blocks share."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.layers = [AlbertLayer(config) for _ in range(config.block_depth)]


def on_gpu() -> bool:
    return mx.default_device() != mx.cpu


def device_memory() -> int | None:
    """Bytes of memory the default GPU may use (Metal's recommended working set, CUDA's total)."""
    return _device_memory(str(mx.default_device()))


@functools.cache  # asked once per device, not on every forward (CUDA asks NVML)
def _device_memory(device: str) -> int | None:
    info = mx.device_info()
    for key in ("max_recommended_working_set_size", "memory_size", "total_memory"):
        if isinstance(info.get(key), int) and info[key] > 0:
            return info[key]
    return None


class AlbertEncoder(nn.Module):
    # Inference runs the batch in slices whose activations stay under a budget (activation_budget,
    # bytes; None: the backend's default). The CPU computes one op at a time anyway, so slicing there
    # costs little and bounds peak memory. GPUs get a sixteenth of their memory (a Mac's GPU shares
    # it with the system): big batches still fill the device, corpus-sized ones no longer swap.
    CPU_ACTIVATION_BUDGET = 128 << 20
    GPU_MEMORY_FRACTION = 16
    # A GPU holds more of the graph in flight: peak measured ~5x the one-layer estimate below
    # (12 GB at batch 256 x 128, bfloat16 ALBERT-base, H200, MLX 0.32).
    GPU_GRAPH_FACTOR = 5

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.num_blocks = config.num_blocks
        self.num_heads = config.num_attention_heads
        self.intermediate_size = config.intermediate_size
        self.embedding_projection = nn.Linear(config.embedding_size, config.hidden_size)
        self.groups = [AlbertLayerGroup(config) for _ in range(config.num_groups)]
        self.activation_budget: int | None = None  # bytes; None: the backend's default

    def default_budget(self) -> int | None:
        if not on_gpu():
            return self.CPU_ACTIVATION_BUDGET
        memory = device_memory()
        return memory // self.GPU_MEMORY_FRACTION if memory else None

    def slice_size(self, batch: int, seq: int, itemsize: int) -> int:
        """Sequences per slice: all of them unless their activations would pass the budget."""
        budget = self.activation_budget if self.activation_budget is not None else self.default_budget()
        # measured: about 5 copies of the attention scores and 10 of the FFN activation per sequence
        per_sequence = seq * (5 * self.num_heads * seq + 10 * self.intermediate_size) * itemsize
        if on_gpu():
            per_sequence *= self.GPU_GRAPH_FACTOR
        if budget is None or batch * per_sequence <= budget:
            return batch
        return max(1, budget // per_sequence)

    def __call__(
        self,
        x: mx.array,
        bias: mx.array | None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        """bias: the additive (B, 1, 1, L) attention bias, or None when no position is padding."""
        B, L, _ = x.shape
        size = (
            B
            if self.training or output_hidden_states or output_attentions
            else self.slice_size(B, L, x.dtype.size)
        )
        if size < B:
            parts = []
            for i in range(0, B, size):
                piece = x[i : i + size]
                if parts:  # still lazy, but a slice starts only once the previous one is done
                    piece = mx.depends(piece, parts[-1])
                part_bias = None if bias is None else bias[i : i + size]
                parts.append(self._run(piece, part_bias, False, False)[0])
            return mx.concatenate(parts), None, None
        return self._run(x, bias, output_hidden_states, output_attentions)

    def _run(self, x: mx.array, bias: mx.array | None, output_hidden_states: bool, output_attentions: bool):
        x = self.embedding_projection(x)  # (B, L, E) -> (B, L, H)
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        blocks_per_group = self.num_blocks // len(self.groups)
        # The shared-parameter loop: block i runs the layers of group i // (num_blocks / num_groups).
        for i in range(self.num_blocks):
            for layer in self.groups[i // blocks_per_group].layers:
                x, weights = layer(x, bias, output_attentions)
                if output_hidden_states:
                    hidden_states.append(x)
                if output_attentions:
                    attentions.append(weights)
        return x, hidden_states, attentions


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
    if L > config.max_positions and position_ids is None:
        raise ValueError(
            f"sequence length {L} exceeds max_positions={config.max_positions}: "
            "truncate the input (e.g. tokenizer(..., truncation=True, max_length="
            f"{config.max_positions}))"
        )
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
        arrays[name] = value
    for name in ("input_ids", "token_type_ids", "position_ids"):
        if name in arrays and not _is_integer(arrays[name]):
            raise TypeError(f"{name} must hold integers, got dtype {arrays[name].dtype}")
    if check:
        limits = {
            "input_ids": ("vocab_size", config.vocab_size),
            "token_type_ids": ("max_token_types", config.max_token_types),
            "position_ids": ("max_positions", config.max_positions),
        }
        names = [n for n in limits if n in arrays and arrays[n].size]
        # One host sync for all range checks; the input arrays are usually already materialised.
        bounds = (
            mx.stack([mx.stack([arrays[n].min(), arrays[n].max()]).astype(mx.int64) for n in names]).tolist()
            if names
            else []
        )
        for n, (lo, hi) in zip(names, bounds, strict=True):
            field, limit = limits[n]
            if lo < 0 or hi >= limit:
                raise ValueError(
                    f"{n} must be in [0, {limit}) ({field}={limit}), found values in "
                    f"[{lo}, {hi}]; check the tokenizer matches this checkpoint"
                )
    if "token_type_ids" not in arrays:
        arrays["token_type_ids"] = mx.zeros((B, L), dtype=mx.int32)
    if "position_ids" not in arrays:
        arrays["position_ids"] = mx.broadcast_to(mx.arange(L), (B, L))
    return (
        arrays["input_ids"],
        arrays.get("attention_mask"),
        arrays["token_type_ids"],
        arrays["position_ids"],
    )


def attention_bias(attention_mask: mx.array, dtype: mx.Dtype) -> mx.array:
    """(B, L) mask of 1 = attend / 0 = padding -> additive (B, 1, 1, L) bias, as transformers; a
    (B, L, L) mask (query i may attend to key j, as BERT's 3-D masks) -> (B, 1, L, L)."""
    bias = (1 - attention_mask.astype(dtype)) * mx.finfo(dtype).min
    return bias[:, None] if bias.ndim == 3 else bias[:, None, None, :]


def init_weights(module: nn.Module, scale: float) -> None:
    """transformers' _init_weights: N(0, scale) for linear and embedding weights, zero biases."""

    def init(_, m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.weight = scale * mx.random.normal(m.weight.shape)
            if "bias" in m:
                m.bias = mx.zeros_like(m.bias)

    module.apply_to_modules(init)


class AlbertModel(nn.Module, PreTrainedMixin):
    """The bare ALBERT encoder (`:base`): last hidden state and pooled [CLS] output."""

    def __init__(self, config: AlbertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.check_inputs = True  # range-check ids (one host sync); trainers turn it off
        self.embeddings = AlbertEmbeddings(config)
        self.encoder = AlbertEncoder(config)
        if add_pooling_layer:
            self.pooler = nn.Linear(config.hidden_size, config.hidden_size)
        init_weights(self, config.initializer_scale)

    def pool(self, first: mx.array) -> mx.array:
        """ALBERT's pooler: tanh(dense) of each sequence's first ([CLS]) state."""
        return tanh(self.pooler(first))

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """Runs the encoder.

        Args:
            input_ids: (batch, seq) token ids, mx.array or numpy.
            attention_mask: (batch, seq), 1 for tokens and 0 for padding; default none (all tokens
                attended, and the attention runs without a mask). A (batch, seq, seq) mask says
                which keys each query attends to (e.g. several sequences packed in one row).
            token_type_ids: (batch, seq) segment ids; default 0.
            position_ids: (batch, seq) positions; default 0..seq-1.
            output_hidden_states / output_attentions: override the config's defaults.

        Raises:
            ValueError/TypeError: on wrong shapes, dtypes or out-of-range ids.
        """
        config = self.config
        _blas.warn_if_slow()
        input_ids, attention_mask, token_type_ids, position_ids = prepare_inputs(
            config, input_ids, attention_mask, token_type_ids, position_ids, self.check_inputs
        )
        if output_hidden_states is None:
            output_hidden_states = config.output_hidden_states
        if output_attentions is None:
            output_attentions = config.output_attentions
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        bias = None if attention_mask is None else attention_bias(attention_mask, x.dtype)
        x, hidden_states, attentions = self.encoder(x, bias, output_hidden_states, output_attentions)
        pooled = self.pool(x[:, 0]) if "pooler" in self else None
        return BaseModelOutputWithPooling(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
