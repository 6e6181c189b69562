"""fill-mask: transformers' FillMaskPipeline, with the MLM head run only at the [MASK] positions.
Answered by masked-LM and pre-training checkpoints."""

from __future__ import annotations

import logging

import mlx.core as mx
import numpy as np

from ..batching import check_strings, clip_text, dispatch, max_tokens, run_batches, to_numpy
from ..checks import integer_in
from ..text import escape
from ..tokenizer import AlbertTokenizer
from .base import Limits, RequestError, Task, scores, softmax, text_of
from .options import Option, declare

logger = logging.getLogger(__name__)


def fill_mask(
    model,
    tokenizer: AlbertTokenizer,
    inputs,
    top_k: int = 5,
    targets: str | list[str] | None = None,
    batch_size: int = 8,
    progress: bool = False,
    max_length: int | None = None,
):
    """Predicts the [MASK] tokens of each text (transformers' FillMaskPipeline).

    Args:
        model: an AlbertForMaskedLM (or AlbertForPreTraining).
        inputs: a text, a list of texts, or an iterable of texts (then results are streamed).
        top_k: answers per mask; targets: restrict answers to these words (their first token).

    Returns:
        Per text, a list of {"score", "token", "token_str", "sequence"} dicts (top_k of them), or a list
        of such lists when the text has several masks; a list of those for a list of texts.

    Raises:
        ValueError: a text without the mask token (after truncation), an empty list.
    """
    if not integer_in(top_k, 1):
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    mask_id = tokenizer.mask_token_id
    target_ids = _target_ids(tokenizer, targets)
    top_k = top_k if target_ids is None else min(top_k, len(target_ids))
    limit = max_tokens(model, tokenizer, max_length)

    def forward(batch):
        ids = np.array(batch["input_ids"])
        rows, cols = np.nonzero(ids == mask_id)
        hidden = model.backbone(**batch).last_hidden_state[mx.array(rows), mx.array(cols)]  # (M, H)
        logits = to_numpy(model.predictions(hidden, model.backbone.embeddings.word_embeddings))  # (M, V)
        return [logits[rows == r] for r in range(ids.shape[0])]

    def run(texts: list) -> list:
        texts = [clip_text(t, limit) for t in check_strings("fill_mask", texts)]
        encodings, _ = tokenizer.encode(texts, truncation=True, max_length=limit)
        _check_masks(tokenizer, texts, encodings, limit)
        logits = run_batches(
            model, [[e] for e in encodings], forward, tokenizer.pad_token_id, limit, batch_size, progress
        )
        return [
            _answers(tokenizer, np.array(e.ids), lg, top_k, target_ids)
            for e, lg in zip(encodings, logits, strict=True)
        ]

    return dispatch(inputs, lambda x: isinstance(x, str), run, batch_size)


def _target_ids(tokenizer: AlbertTokenizer, targets) -> np.ndarray | None:
    """The vocabulary ids answers are restricted to (None: every token)."""
    if targets is None:
        return None
    if not isinstance(targets, str | list | tuple) or not all(isinstance(t, str) for t in targets):
        raise TypeError(f"targets must be a string or a list of strings, got {type(targets).__name__}")
    targets = [targets] if isinstance(targets, str) else list(targets)
    ids = np.array(sorted({i for t in targets if (i := _target_id(tokenizer, t)) is not None}))
    if ids.size == 0:
        raise ValueError("targets holds no usable word: pass non-empty strings")
    return ids


def _check_masks(tokenizer: AlbertTokenizer, texts: list[str], encodings, limit: int) -> None:
    """Every text has a [MASK] within the tokens the model reads."""
    for text, e in zip(texts, encodings, strict=True):
        if tokenizer.mask_token_id not in e.ids:
            if tokenizer.mask_token in text:
                raise ValueError(
                    f"the {tokenizer.mask_token} of the input {escape(text[:60])!r}... lies past its first "
                    f"{limit} tokens, which is all the model reads: shorten the text before the mask"
                )
            raise ValueError(
                f"No mask_token ({tokenizer.mask_token}) found on the input {escape(text[:200])!r}"
            )


def _target_id(tokenizer: AlbertTokenizer, target: str) -> int | None:
    """As transformers: a vocabulary token (e.g. "▁list") as it is, else the first piece of the word
    (with a warning naming what replaced it)."""
    if not isinstance(target, str) or not target:
        return None
    found = tokenizer.tokenizer.token_to_id(target)
    if found is not None:
        return found
    ids = tokenizer(target)["input_ids"][1:-1]  # without [CLS] and [SEP]
    if not ids:
        logger.warning(
            "the target %r is not in the vocabulary and tokenizes to nothing: ignored", escape(target)
        )
        return None
    logger.warning(
        "the target %r is not in the vocabulary: using its first piece %r",
        escape(target),
        escape(tokenizer.convert_ids_to_tokens([ids[0]])[0]),
    )
    return ids[0]


def _answers(tokenizer, ids: np.ndarray, logits: np.ndarray, top_k: int, target_ids) -> list:
    positions = np.flatnonzero(ids == tokenizer.mask_token_id)
    per_mask = []
    for position, row in zip(positions, logits, strict=True):
        probs = softmax(row.astype(np.float64))
        candidates = np.arange(probs.size) if target_ids is None else target_ids
        best = candidates[np.argsort(-probs[candidates], kind="stable")[:top_k]]
        answers = []
        for token in best:
            filled = ids.copy()
            filled[position] = token
            answers.append(
                {
                    "score": float(probs[token]),
                    "token": int(token),
                    "token_str": tokenizer.decode([token]),
                    # As transformers: special tokens (other masks) stay when there are several.
                    "sequence": tokenizer.decode(filled, skip_special_tokens=len(positions) == 1),
                }
            )
        per_mask.append(answers)
    return per_mask[0] if len(per_mask) == 1 else per_mask


class FillMask(Task):
    name = "fill-mask"
    help = "predict the [MASK] tokens of texts"
    texts_help = "texts with [MASK]"
    architecture = "for_masked_language_modeling"
    command, route = "fill-mask", "/v1/fill-mask"
    accepts = ("for_pre_training",)
    options = declare(
        fill_mask,
        Option("top_k", int, "answers per mask", lo=1, hi="vocab_size"),
        Option("targets", list, "only score these words (their first token)", single=True),
    )

    def predict(self, model, tokenizer, inputs, **options):
        return fill_mask(model, tokenizer, inputs, **options)

    def human(self, result, args) -> str:
        lists = result if result and isinstance(result[0], list) else [result]
        lines = [scores([{**d, "t": d["token_str"]} for d in answers], "t") for answers in lists]
        if len(lines) == 1:
            return lines[0]
        return "\n".join(f"{'' if i == 0 else chr(9)}[MASK {i + 1}] {line}" for i, line in enumerate(lines))

    def check_request(self, item, options: dict, limits: Limits) -> tuple[int, int]:
        text_of(item, "inputs", limits)
        front = limits.front  # not the worker's tokenizer: encode changes its settings
        ids = front(clip_text(item, limits.max_length), truncation=True, max_length=limits.max_length)[
            "input_ids"
        ]
        masks = ids.count(front.mask_token_id)
        if not masks:
            raise RequestError(f"no {front.mask_token} within the model's first {limits.max_length} tokens")
        targets = options.get("targets")
        k = options.get("top_k", 5) if targets is None else min(options.get("top_k", 5), len(targets) or 1)
        return len(ids), masks * k


TASK = FillMask()
