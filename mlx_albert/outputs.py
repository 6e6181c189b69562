"""Output dataclasses, with the field names of transformers' modeling outputs."""

from __future__ import annotations

from dataclasses import dataclass, fields

import mlx.core as mx


@dataclass
class ModelOutput:
    """Base: fields are read by name or, as in transformers, `out["name"]`."""

    def __getitem__(self, name: str):
        return getattr(self, name)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: mx.array = None  # (B, L, H)
    pooler_output: mx.array | None = None  # (B, H): tanh(W h[CLS] + b)
    hidden_states: tuple[mx.array, ...] | None = None  # 1 + num_blocks*block_depth of (B, L, H)
    attentions: tuple[mx.array, ...] | None = None  # num_blocks*block_depth of (B, nh, L, L)


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: mx.array | None = None
    logits: mx.array = None  # (B, L, vocab_size)
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: mx.array | None = None
    logits: mx.array = None  # (B, num_labels)
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    loss: mx.array | None = None
    logits: mx.array = None  # (B, L, num_labels)
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: mx.array | None = None
    start_logits: mx.array = None  # (B, L)
    end_logits: mx.array = None  # (B, L)
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class MultipleChoiceModelOutput(ModelOutput):
    loss: mx.array | None = None
    logits: mx.array = None  # (B, num_choices)
    hidden_states: tuple[mx.array, ...] | None = None  # of the flattened (B*num_choices, L, H)
    attentions: tuple[mx.array, ...] | None = None


@dataclass
class AlbertForPreTrainingOutput(ModelOutput):
    loss: mx.array | None = None  # MLM loss + sentence-order loss
    prediction_logits: mx.array = None  # (B, L, vocab_size)
    sop_logits: mx.array = None  # (B, num_labels)
    hidden_states: tuple[mx.array, ...] | None = None
    attentions: tuple[mx.array, ...] | None = None
