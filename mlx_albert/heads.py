"""The six task models of ALBERT: backbone + head + transformers' loss, a few lines each."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .activations import ACTIVATIONS
from .config import AlbertConfig
from .inputs import as_array
from .losses import binary_cross_entropy_with_logits, check_labels, cross_entropy, mse
from .model import AlbertModel, init_weights
from .outputs import (
    AlbertForPreTrainingOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from .pretrained import PreTrainedMixin


class AlbertMLMHead(nn.Module):
    """dense -> activation -> LayerNorm -> decoder tied to the word embeddings (+ own bias)."""

    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_epsilon)
        self.bias = mx.zeros((config.vocab_size,))
        self.activation = ACTIVATIONS[config.activation]

    def __call__(self, x: mx.array, word_embeddings: nn.Embedding, plain: bool = False) -> mx.array:
        x = self.norm(self.activation(self.dense(x), plain))
        return word_embeddings.as_linear(x) + self.bias  # (B, L, vocab_size)


def at_positions(x: mx.array, positions: mx.array | None) -> mx.array:
    """x (B, L, ...) at positions (B, K): (B, K, ...); x itself when positions is None."""
    if positions is None:
        return x
    index = positions.reshape(*positions.shape, *([1] * (x.ndim - 2)))
    return mx.take_along_axis(x, index, axis=1)


class _AlbertHeadModel(nn.Module, PreTrainedMixin):
    """Shared plumbing: the backbone under `albert` (of `backbone`'s class, AlbertModel by default),
    its initialisation, and the backbone's inputs passed through: a head's `__call__` takes its
    labels by name and everything else as AlbertModel does (input_ids, attention_mask,
    token_type_ids, position_ids, output_hidden_states, output_attentions, check_inputs,
    activation_budget, exportable)."""

    add_pooling_layer = True

    def __init__(self, config: AlbertConfig, backbone: type[nn.Module] = AlbertModel):
        super().__init__()
        self.config = config
        self.albert = backbone(config, add_pooling_layer=self.add_pooling_layer)

    def _init_head(self):
        for name, child in self.children().items():
            if name != "albert":
                init_weights(child, self.config.initializer_scale)

    def _masked_lm(
        self, hidden: mx.array, masked_positions, labels, check: bool, plain: bool = False
    ) -> tuple[mx.array, mx.array | None]:
        """(logits, labels) of the MLM heads (`predictions`): at masked_positions when given."""
        positions = self._positions(masked_positions, hidden.shape[1], check)
        logits = self.predictions(
            at_positions(hidden, positions), self.albert.embeddings.word_embeddings, plain
        )
        if labels is not None:
            labels = at_positions(self._labels("labels", labels, self.config.vocab_size, check), positions)
        return logits, labels

    def _positions(self, positions, length: int, check: bool) -> mx.array | None:
        """masked_positions as an index array, checked: (B, K) integers in [0, L)."""
        if positions is None:
            return None
        positions = as_array("masked_positions", positions)
        if positions.ndim != 2 or not mx.issubdtype(positions.dtype, mx.integer):
            raise ValueError(
                "masked_positions must be (batch, K) integers, "
                f"got {positions.dtype} {tuple(positions.shape)}"
            )
        if check and positions.size:
            lo, hi = mx.stack([positions.min(), positions.max()]).tolist()
            if lo < 0 or hi >= length:
                raise ValueError(f"masked_positions must lie in [0, {length}), got [{lo}, {hi}]")
        return positions

    def _labels(self, name: str, labels, num_classes: int | None = None, check: bool = True) -> mx.array:
        """labels as an array; class ids range-checked (one host sync) when `check`."""
        labels = as_array(name, labels)
        if num_classes is not None and check:
            check_labels(name, labels, num_classes)
        return labels


class AlbertForMaskedLM(_AlbertHeadModel):
    add_pooling_layer = False

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.predictions = AlbertMLMHead(config)
        self._init_head()

    def __call__(self, *inputs, labels=None, masked_positions=None, **backbone) -> MaskedLMOutput:
        """masked_positions (B, K), as the original ALBERT's masked_lm_positions: logits (B, K,
        vocab_size) there only, labels (B, L) read there (pad K with an unlabelled position). Training
        then skips the vocabulary projection of the tokens nothing is predicted for."""
        out = self.albert(*inputs, **backbone)
        check_inputs = backbone.get("check_inputs", True)
        logits, labels = self._masked_lm(
            out.last_hidden_state, masked_positions, labels, check_inputs, backbone.get("exportable", False)
        )
        loss = None if labels is None else cross_entropy(logits, labels)
        return MaskedLMOutput(loss, logits, out.hidden_states, out.attentions)


class AlbertForSequenceClassification(_AlbertHeadModel):
    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self._init_head()

    def problem_type(self, labels: mx.array) -> str:
        """transformers' rule: the config's, else from num_labels and the labels' dtype."""
        if self.config.problem_type is not None:
            return self.config.problem_type
        if self.config.num_labels == 1:
            return "regression"
        if mx.issubdtype(labels.dtype, mx.integer):
            return "single_label_classification"
        return "multi_label_classification"

    def __call__(self, *inputs, labels=None, **backbone) -> SequenceClassifierOutput:
        out = self.albert(*inputs, **backbone)
        check_inputs = backbone.get("check_inputs", True)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            labels = self._labels("labels", labels)
            problem = self.problem_type(labels)
            if problem == "regression":
                loss = (
                    mse(logits.squeeze(), labels.squeeze())
                    if self.config.num_labels == 1
                    else mse(logits, labels)
                )
            elif problem == "single_label_classification":
                if check_inputs:
                    check_labels("labels", labels, self.config.num_labels)
                loss = cross_entropy(logits, labels)
            else:
                if labels.shape != logits.shape:
                    raise ValueError(
                        f"multi-label labels must have shape {tuple(logits.shape)} "
                        f"(one 0/1 column per label), got {tuple(labels.shape)}"
                    )
                loss = binary_cross_entropy_with_logits(logits, labels)
        return SequenceClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class AlbertForTokenClassification(_AlbertHeadModel):
    add_pooling_layer = False

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self._init_head()

    def __call__(self, *inputs, labels=None, **backbone) -> TokenClassifierOutput:
        out = self.albert(*inputs, **backbone)
        check_inputs = backbone.get("check_inputs", True)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, L, num_labels)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits, self._labels("labels", labels, self.config.num_labels, check_inputs))
        return TokenClassifierOutput(loss, logits, out.hidden_states, out.attentions)


class AlbertForQuestionAnswering(_AlbertHeadModel):
    add_pooling_layer = False

    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(f"question answering needs num_labels=2 (start, end), got {config.num_labels}")
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self._init_head()

    def __call__(
        self, *inputs, start_positions=None, end_positions=None, **backbone
    ) -> QuestionAnsweringModelOutput:
        out = self.albert(*inputs, **backbone)
        logits = self.qa_outputs(out.last_hidden_state)  # (B, L, 2)
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            # As transformers: positions outside the sequence are clamped to L and ignored.
            ignored = start_logits.shape[1]
            start = mx.clip(self._labels("start_positions", start_positions).reshape(-1), 0, ignored)
            end = mx.clip(self._labels("end_positions", end_positions).reshape(-1), 0, ignored)
            loss = (cross_entropy(start_logits, start, ignored) + cross_entropy(end_logits, end, ignored)) / 2
        return QuestionAnsweringModelOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions)


class AlbertForMultipleChoice(_AlbertHeadModel):
    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self._init_head()

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        *,
        labels=None,
        **backbone,
    ) -> MultipleChoiceModelOutput:
        input_ids = as_array("input_ids", input_ids)
        if input_ids.ndim != 3:
            raise ValueError(
                f"multiple choice input_ids must have shape (batch, num_choices, seq), "
                f"got {tuple(input_ids.shape)}"
            )
        B, C, L = input_ids.shape

        def flat(name, value):
            if value is None:
                return None
            value = as_array(name, value)
            if tuple(value.shape) != (B, C, L):
                raise ValueError(f"{name} has shape {tuple(value.shape)} but input_ids has {(B, C, L)}")
            return value.reshape(B * C, L)

        out = self.albert(
            input_ids.reshape(B * C, L),
            flat("attention_mask", attention_mask),
            flat("token_type_ids", token_type_ids),
            flat("position_ids", position_ids),
            **backbone,
        )
        check_inputs = backbone.get("check_inputs", True)
        logits = self.classifier(self.dropout(out.pooler_output)).reshape(B, C)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits, self._labels("labels", labels, C, check_inputs))
        return MultipleChoiceModelOutput(loss, logits, out.hidden_states, out.attentions)


class AlbertSOPHead(nn.Module):
    def __init__(self, config: AlbertConfig):
        super().__init__()
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def __call__(self, pooled: mx.array) -> mx.array:
        return self.classifier(self.dropout(pooled))


class AlbertForPreTraining(_AlbertHeadModel):
    def __init__(self, config: AlbertConfig):
        super().__init__(config)
        self.predictions = AlbertMLMHead(config)
        self.sop_classifier = AlbertSOPHead(config)
        self._init_head()

    def __call__(
        self, *inputs, labels=None, sentence_order_label=None, masked_positions=None, **backbone
    ) -> AlbertForPreTrainingOutput:
        """masked_positions: as AlbertForMaskedLM's (prediction_logits (B, K, vocab_size))."""
        out = self.albert(*inputs, **backbone)
        check_inputs = backbone.get("check_inputs", True)
        both = labels is not None and sentence_order_label is not None  # as transformers: both or none
        prediction_logits, labels = self._masked_lm(
            out.last_hidden_state,
            masked_positions,
            labels if both else None,
            check_inputs,
            backbone.get("exportable", False),
        )
        sop_logits = self.sop_classifier(out.pooler_output)
        loss = None
        if both:
            loss = cross_entropy(prediction_logits, labels) + cross_entropy(
                sop_logits,
                self._labels(
                    "sentence_order_label", sentence_order_label, self.config.num_labels, check_inputs
                ),
            )
        return AlbertForPreTrainingOutput(
            loss, prediction_logits, sop_logits, out.hidden_states, out.attentions
        )


# The spec's architecture names, with transformers' class names.
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "base": AlbertModel,
    "for_masked_language_modeling": AlbertForMaskedLM,
    "for_sequence_classification": AlbertForSequenceClassification,
    "for_token_classification": AlbertForTokenClassification,
    "for_question_answering": AlbertForQuestionAnswering,
    "for_multiple_choice": AlbertForMultipleChoice,
    "for_pre_training": AlbertForPreTraining,
}
