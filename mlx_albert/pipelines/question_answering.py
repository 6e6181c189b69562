"""question_answering: extractive QA with transformers' QuestionAnsweringPipeline semantics (as of
transformers 4.x; 5.x dropped the pipeline): contexts split into doc_stride windows, spans scored
as p(start) * p(end) within each window, answers aligned to words, scores of equal answers summed."""

from __future__ import annotations

import numpy as np

from ..runtime import dispatch, max_tokens, run_batches, to_numpy
from ..tokenizer import AlbertTokenizer
from .fill_mask import softmax


def _example(item) -> tuple[str, str]:
    if not isinstance(item, dict) or not {"question", "context"} <= set(item):
        raise ValueError(f"question answering takes {{'question': ..., 'context': ...}} dicts, got {item!r}")
    for key in ("question", "context"):
        if not isinstance(item[key], str):
            raise TypeError(f"`{key}` must be a string, got {type(item[key]).__name__}")
        if not item[key].strip():
            raise ValueError(f"`{key}` cannot be empty")
    return item["question"], item["context"]


def question_answering(
    model,
    tokenizer: AlbertTokenizer,
    inputs=None,
    *,
    question: str | list[str] | None = None,
    context: str | list[str] | None = None,
    top_k: int = 1,
    doc_stride: int | None = None,
    max_answer_len: int = 15,
    max_seq_len: int | None = None,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
    batch_size: int = 8,
    progress: bool = False,
):
    """Finds the answer span of each question in its context.

    Args:
        model: an AlbertForQuestionAnswering.
        inputs: a {"question", "context"} dict or a list/iterable of them; or pass question= and
            context= (strings, or lists of equal length, or a list of questions on one context).
        top_k: answers per question; max_answer_len: longest answer, in tokens.
        max_seq_len: tokens per window (default min(384, model limit)); doc_stride: tokens shared by
            consecutive windows (default min(max_seq_len // 2, 128)).
        handle_impossible_answer: also offer the empty answer, scored by the [CLS] position.
        align_to_words: widen answers to whole words.

    Returns:
        {"score", "start", "end", "answer"} (character offsets into the context), a list of top_k of
        them when top_k > 1, and a list of those for a list of questions.
    """
    if inputs is None:
        if question is None or context is None:
            raise ValueError("pass inputs={'question': ..., 'context': ...} or both question= and context=")
        if isinstance(question, str) and isinstance(context, str):
            inputs = {"question": question, "context": context}
        elif isinstance(question, list) and isinstance(context, str):
            inputs = [{"question": q, "context": context} for q in question]
        elif isinstance(question, list) and isinstance(context, list) and len(question) == len(context):
            inputs = [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
        else:
            raise ValueError("question and context must be strings or lists of the same length")
    if top_k < 1 or max_answer_len < 1:
        raise ValueError(f"top_k and max_answer_len must be >= 1, got {top_k} and {max_answer_len}")
    max_seq_len = max_tokens(model, tokenizer, max_seq_len or min(tokenizer.model_max_length, 384))
    doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride

    def run(items: list) -> list:
        examples = [_example(item) for item in items]
        questions, contexts = [q for q, _ in examples], [c for _, c in examples]
        windows, sample = tokenizer.encode_windows(
            questions, contexts, max_seq_len, doc_stride, names=("max_seq_len", "doc_stride")
        )

        def forward(batch):
            out = model(**batch)
            return list(np.stack([to_numpy(out.start_logits), to_numpy(out.end_logits)], axis=1))  # (B, 2, W)

        logits = run_batches(
            model, [[w] for w in windows], forward, tokenizer.pad_token_id, max_seq_len, batch_size, progress
        )
        answers: list[list[dict]] = [[] for _ in items]
        null = [1e6] * len(items)
        for w, (start, end), i in zip(windows, logits, sample, strict=True):
            n = len(w.ids)
            spans, null_score = _spans(w, start[:n], end[:n], top_k, max_answer_len)
            null[i] = min(null[i], null_score)
            for s, e, score in spans:
                a, b = _chars(w, s, e, align_to_words)
                text = contexts[i][a:b]
                same = next((x for x in answers[i] if x["answer"].lower() == text.lower()), None)
                if same is not None:  # as transformers: one answer found in two windows adds up
                    same["score"] += score
                else:
                    answers[i].append({"score": score, "start": a, "end": b, "answer": text})
        results = []
        for found, null_score in zip(answers, null, strict=True):
            if handle_impossible_answer:
                found.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
            found = sorted(found, key=lambda x: x["score"], reverse=True)[:top_k]
            results.append(found[0] if len(found) == 1 else found)
        return results

    return dispatch(inputs, lambda x: isinstance(x, dict), run, batch_size)


def _spans(window, start: np.ndarray, end: np.ndarray, top_k: int, max_answer_len: int):
    """The top_k (start, end, score) spans of one window and its null ([CLS]) score."""
    allowed = np.array([s == 1 for s in window.sequence_ids])  # context tokens
    allowed[0] = True  # [CLS] stays in the softmax: it scores the impossible answer
    start = softmax(np.where(allowed, start, -10000.0).astype(np.float64))
    end = softmax(np.where(allowed, end, -10000.0).astype(np.float64))
    null_score = float(start[0] * end[0])
    start[0] = end[0] = 0.0
    scores = np.tril(np.triu(np.outer(start, end)), max_answer_len - 1)  # end >= start, length <= max
    flat = scores.ravel()
    best = np.argsort(-flat, kind="stable")[:top_k]
    spans = []
    for s, e in zip(*np.unravel_index(best, scores.shape), strict=True):
        if allowed[s] and allowed[e] and s > 0:
            spans.append((int(s), int(e), float(scores[s, e])))
    return spans, null_score


def _chars(window, s: int, e: int, align_to_words: bool) -> tuple[int, int]:
    if align_to_words:
        start_word, end_word = window.token_to_word(s), window.token_to_word(e)
        if start_word is not None and end_word is not None:
            return window.word_to_chars(start_word, 1)[0], window.word_to_chars(end_word, 1)[1]
    return window.offsets[s][0], window.offsets[e][1]
