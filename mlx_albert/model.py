"""The ALBERT backbone in MLX: factorised embeddings, the shared-layer encoder and the pooler.
Mirrors transformers' `modeling_albert.py` (post-LayerNorm layers, group index i // (L / G))."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from . import _blas, memory
from .activations import ACTIVATIONS, tanh
from .attention import AlbertAttention
from .config import AlbertConfig
from .inputs import attention_bias, prepare_inputs
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


class AlbertLayer(nn.Module):
    """One transformer layer: attention then FFN, each with residual + post-LayerNorm."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.attention = AlbertAttention(config)
        self.ffn = nn.Linear(config.hidden_size, config.intermediate_size)
        self.ffn_output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.activation = ACTIVATIONS[config.activation]

    def __call__(self, x: mx.array, bias: mx.array | None, return_weights: bool = False, plain: bool = False):
        x, weights = self.attention(x, bias, return_weights, plain)
        return self.norm(x + self.ffn_output(self.activation(self.ffn(x), plain))), weights


class AlbertLayerGroup(nn.Module):
    """The block_depth layers whose parameters a group's blocks share."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.layers = [AlbertLayer(config) for _ in range(config.block_depth)]


class AlbertEncoder(nn.Module):
    """The embedding projection and the shared-layer loop: block i runs the layers of group
    i // (num_blocks / num_groups). Inference runs the batch in slices under an activation budget
    (memory.py; a call's `activation_budget` in bytes overrides the backend's default)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.num_blocks = config.num_blocks
        self.num_heads = config.num_attention_heads
        self.intermediate_size = config.intermediate_size
        self.embedding_projection = nn.Linear(config.embedding_size, config.hidden_size)
        self.groups = [AlbertLayerGroup(config) for _ in range(config.num_groups)]

    def slice_size(self, batch: int, seq: int, itemsize: int, budget: int | None = None) -> int:
        """Sequences run at once under `budget` bytes of activations (None: the backend's default)."""
        return memory.slice_size(batch, seq, itemsize, self.num_heads, self.intermediate_size, budget)

    def __call__(
        self,
        x: mx.array,
        bias: mx.array | None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        activation_budget: int | None = None,
        plain: bool = False,
    ):
        """bias: the additive (B, 1, 1, L) attention bias, or None when no position is padding."""
        B, L, _ = x.shape
        size = (
            B
            if self.training or output_hidden_states or output_attentions
            else self.slice_size(B, L, x.dtype.size, activation_budget)
        )
        if size < B:
            parts = []
            for i in range(0, B, size):
                piece = x[i : i + size]
                if parts:  # still lazy, but a slice starts only once the previous one is done
                    piece = mx.depends(piece, parts[-1])
                part_bias = None if bias is None else bias[i : i + size]
                parts.append(self._run(piece, part_bias, False, False, plain)[0])
            return mx.concatenate(parts), None, None
        return self._run(x, bias, output_hidden_states, output_attentions, plain)

    def _run(
        self,
        x: mx.array,
        bias: mx.array | None,
        output_hidden_states: bool,
        output_attentions: bool,
        plain: bool,
    ):
        x = self.embedding_projection(x)  # (B, L, E) -> (B, L, H)
        hidden_states = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        blocks_per_group = self.num_blocks // len(self.groups)
        # The shared-parameter loop: block i runs the layers of group i // (num_blocks / num_groups).
        for i in range(self.num_blocks):
            for layer in self.groups[i // blocks_per_group].layers:
                x, weights = layer(x, bias, output_attentions, plain)
                if output_hidden_states:
                    hidden_states.append(x)
                if output_attentions:
                    attentions.append(weights)
        return x, hidden_states, attentions


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
        *,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        check_inputs: bool = True,
        activation_budget: int | None = None,
        exportable: bool = False,
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
            check_inputs: range-check the ids (one host sync); callers that checked them on the
                host already (batching.py, the trainer, export) pass False.
            activation_budget: bytes of activations inference may hold at once (the batch runs
                in slices under it); default: the backend's (memory.py).
            exportable: plain ops only (no compiled kernels or custom gradients), which
                `mx.export_function` can serialise.

        Raises:
            ValueError/TypeError: on wrong shapes, dtypes or out-of-range ids.
        """
        config = self.config
        _blas.warn_if_slow()
        input_ids, attention_mask, token_type_ids, position_ids = prepare_inputs(
            config, input_ids, attention_mask, token_type_ids, position_ids, check_inputs
        )
        if output_hidden_states is None:
            output_hidden_states = config.output_hidden_states
        if output_attentions is None:
            output_attentions = config.output_attentions
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        bias = None if attention_mask is None else attention_bias(attention_mask, x.dtype)
        x, hidden_states, attentions = self.encoder(
            x, bias, output_hidden_states, output_attentions, activation_budget, exportable
        )
        pooled = self.pool(x[:, 0]) if "pooler" in self else None
        return BaseModelOutputWithPooling(
            last_hidden_state=x,
            pooler_output=pooled,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
        )
