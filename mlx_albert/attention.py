"""ALBERT's self-attention: q/k/v projections, scaled dot-product attention with an additive mask
bias, output projection, residual and post-LayerNorm. GPUs take MLX's fused kernel; the CPU backend
an explicit softmax (see activations.py), at inference dividing by the softmax sums after `@ v`."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from .activations import softmax, softmax_numerator
from .config import AlbertConfig


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
        # One (H -> 3H) matmul for q, k, v instead of three. Off by default: the weights are
        # concatenated on every call, which costs the CPU backend more than the one matmul saves
        # (docs/benchmarks.md; `bench.py --fuse-qkv`).
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

    def __call__(self, x: mx.array, bias: mx.array | None, return_weights: bool = False, plain: bool = False):
        """plain: kernels that mx.export_function can serialise (activations.softmax)."""
        B, L, H = x.shape
        q, k, v = self._qkv(x)  # (B, nh, L, hd)
        # The fused kernel serves GPUs (Metal, CUDA); on the CPU backend it falls back to unfused ops
        # with a slow exp, so there the explicit paths with our softmax are faster.
        explicit = return_weights or (self.training and self.attention_dropout_rate > 0)
        weights = None
        if mx.default_device() == mx.cpu and not (explicit or self.training):
            context = self._attend_deferred(q, k, v, bias, plain)
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
                weights = softmax(scores, plain).astype(v.dtype)
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

    def _attend_deferred(
        self, q: mx.array, k: mx.array, v: mx.array, bias: mx.array | None, plain: bool = False
    ) -> mx.array:
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
            out = (softmax_numerator(scores, self.scale, plain).astype(v.dtype) @ v1).transpose(0, 2, 1, 3)
            parts.append(out[..., :hd] * (1.0 / out[..., hd:]))  # (B, step, nh, hd)
        context = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)
        return context.reshape(B, L, nh * hd)


def _bias_rows(bias: mx.array, start: int, step: int) -> mx.array:
    """The attention bias of queries start..start+step: a (B, 1, 1, L) padding bias serves every
    query; a (B, 1, L, L) one from a query-by-key mask has a row per query."""
    return bias if bias.shape[2] == 1 else bias[:, :, start : start + step]
