"""Task pipelines on raw text, with the arguments and outputs of transformers' pipelines.

Each task is a function `task(model, tokenizer, inputs, **options)`; `pipeline(task, path)` loads a
checkpoint and its tokenizer once and returns a callable, as `transformers.pipeline` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..loading import UntrainedHeadError, check_tokenizer, check_trained, load, missing_keys
from ..tokenizer import AlbertTokenizer
from .classification import text_classification, token_classification
from .embeddings import embed, feature_extraction, similarity
from .fill_mask import fill_mask
from .multiple_choice import multiple_choice
from .question_answering import question_answering

# task name -> (function, architecture it needs)
TASKS: dict[str, tuple[Callable, str]] = {
    "fill-mask": (fill_mask, "for_masked_language_modeling"),
    "text-classification": (text_classification, "for_sequence_classification"),
    "token-classification": (token_classification, "for_token_classification"),
    "question-answering": (question_answering, "for_question_answering"),
    "multiple-choice": (multiple_choice, "for_multiple_choice"),
    "feature-extraction": (feature_extraction, "base"),
    "embed": (embed, "base"),
}
ALIASES = {  # transformers' other names, and the CLI's commands
    "sentiment-analysis": "text-classification",
    "classify": "text-classification",
    "ner": "token-classification",
    "qa": "question-answering",
}


class Pipeline:
    """A model, its tokenizer and default options for one task: `pipe(inputs, **options)`."""

    def __init__(
        self, task: str, model, tokenizer: AlbertTokenizer, allow_untrained_head: bool = False, **defaults
    ):
        self.task, self.model, self.tokenizer, self.defaults = task, model, tokenizer, defaults
        self.allow_untrained_head = allow_untrained_head
        self.function = TASKS[task][0]

    def __call__(self, inputs=None, **options):
        options = {**self.defaults, **options}
        if self.task == "embed" and options.get("pooling") == "pooler" and not self.allow_untrained_head:
            if any(k.removeprefix("albert.").startswith("pooler.") for k in missing_keys(self.model)):
                raise UntrainedHeadError(
                    "this checkpoint has no trained pooler: pooling='pooler' would be random; "
                    "use 'mean' or 'cls' (or allow_untrained_head=True)"
                )
        return self.function(self.model, self.tokenizer, inputs, **options)

    def __repr__(self) -> str:
        return f"Pipeline(task={self.task!r}, model={type(self.model).__name__})"


def pipeline(
    task: str,
    model: str | os.PathLike | object,
    tokenizer: AlbertTokenizer | None = None,
    allow_untrained_head: bool = False,
    **defaults,
) -> Pipeline:
    """Builds a pipeline for `task` ("fill-mask", "text-classification", "token-classification"/"ner",
    "question-answering", "multiple-choice", "feature-extraction", "embed").

    Args:
        model: a checkpoint folder or Hub repo id (loaded with the task's architecture), or a model.
        tokenizer: default: the checkpoint's own (a model object needs one passed).
        allow_untrained_head: run even when the checkpoint lacks the task's head (e.g. question
            answering on a masked-LM checkpoint), whose new weights give random answers.
        **defaults: options for every call, e.g. top_k=3, batch_size=32; `dtype`, `revision` and
            `cache_dir` go to loading instead.

    Raises:
        UntrainedHeadError: the checkpoint has no trained weights for the task's head.
        ValueError: an unknown task, or a tokenizer with more tokens than the model's vocabulary.
    """
    task = ALIASES.get(task, task)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {sorted(TASKS) + sorted(ALIASES)}")
    load_options = {k: defaults.pop(k) for k in ("dtype", "revision", "cache_dir") if k in defaults}
    if isinstance(model, str | os.PathLike):
        source = str(model)
        if tokenizer is None:  # both from the one resolved checkpoint
            model, tokenizer = load(model, TASKS[task][1], return_tokenizer=True, **load_options)
        else:
            model = load(model, TASKS[task][1], **load_options)
        if not allow_untrained_head:
            pooler_used = task not in ("feature-extraction", "embed") or defaults.get("pooling") == "pooler"
            check_trained(model, task, source, allow_pooler=not pooler_used)
    elif tokenizer is None:
        raise ValueError("pass tokenizer= along with a model object (or give a checkpoint path instead)")
    check_tokenizer(model, tokenizer)
    return Pipeline(task, model, tokenizer, allow_untrained_head, **defaults)


__all__ = [
    "TASKS",
    "UntrainedHeadError",
    "Pipeline",
    "pipeline",
    "fill_mask",
    "text_classification",
    "token_classification",
    "question_answering",
    "multiple_choice",
    "feature_extraction",
    "embed",
    "similarity",
]
