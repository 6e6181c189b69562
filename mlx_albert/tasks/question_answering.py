"""question-answering (qa): extractive answers with transformers' QuestionAnsweringPipeline
semantics (as of transformers 4.x; 5.x dropped the pipeline): contexts split into doc_stride
windows, spans scored as p(start) * p(end) within each window, answers aligned to words, scores of
equal answers summed; and its training, evaluated by SQuAD's exact match and F1."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..batching import dispatch, max_tokens, run_batches, to_numpy
from ..files import read_bytes
from ..metrics import squad_scores
from ..records import MAX_RECORD, DataError
from ..text import escape
from ..tokenizer import AlbertTokenizer
from .base import Limits, RequestError, Task, softmax, text_of
from .exported import Export
from .options import Option, declare
from .recipe import Dataset, Recipe, field_of


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
    inputs = _inputs(inputs, question, context)
    if top_k < 1 or max_answer_len < 1:
        raise ValueError(f"top_k and max_answer_len must be >= 1, got {top_k} and {max_answer_len}")
    max_seq_len, doc_stride = window_sizes(
        tokenizer.model_max_length, max_seq_len, doc_stride, lambda n: max_tokens(model, tokenizer, n)
    )

    def run(items: list) -> list:
        windows, sample, contexts = preprocess(tokenizer, items, max_seq_len, doc_stride)

        def forward(batch):
            out = model(**batch)
            return list(np.stack([to_numpy(out.start_logits), to_numpy(out.end_logits)], axis=1))  # (B, 2, W)

        logits = run_batches(
            model, [[w] for w in windows], forward, tokenizer.pad_token_id, max_seq_len, batch_size, progress
        )
        options = (top_k, max_answer_len, handle_impossible_answer, align_to_words)
        return _answers_of(windows, logits, sample, contexts, *options)

    return dispatch(inputs, lambda x: isinstance(x, dict), run, batch_size)


def window_sizes(limit: int, max_seq_len: int | None, doc_stride: int | None, clip=None) -> tuple[int, int]:
    """(tokens per window, tokens consecutive windows share) as transformers' pipeline picks them
    (min(limit, 384), and min(half a window, 128)); `clip` checks the window against the model. The
    pipeline and the server's cost of a request both call this."""
    window = max_seq_len or min(limit, 384)
    window = clip(window) if clip else window
    return window, min(window // 2, 128) if doc_stride is None else doc_stride


def preprocess(tokenizer: AlbertTokenizer, items: list, window: int, stride: int):
    """(windows, the example of each, contexts) of {"question", "context"} items: what the model
    runs, and what a server request costs."""
    examples = [_example(item) for item in items]
    questions, contexts = [q for q, _ in examples], [c for _, c in examples]
    windows, sample = tokenizer.encode_windows(
        questions, contexts, window, stride, names=("max_seq_len", "doc_stride")
    )
    return windows, sample, contexts


def _inputs(inputs, question, context):
    """inputs, or the dicts that question= and context= stand for."""
    if inputs is not None:
        return inputs
    if question is None or context is None:
        raise ValueError("pass inputs={'question': ..., 'context': ...} or both question= and context=")
    if isinstance(question, str) and isinstance(context, str):
        return {"question": question, "context": context}
    if isinstance(question, list) and isinstance(context, str):
        return [{"question": q, "context": context} for q in question]
    if isinstance(question, list) and isinstance(context, list) and len(question) == len(context):
        return [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
    raise ValueError("question and context must be strings or lists of the same length")


def _answers_of(windows, logits, sample, contexts, top_k, max_answer_len, impossible, align_to_words) -> list:
    """Each question's answers from its windows' logits: spans scored p(start) p(end) per window,
    the same answer found in two windows adding up (as transformers), best first."""
    answers: list[list[dict]] = [[] for _ in contexts]
    null = [1e6] * len(contexts)
    for w, (start, end), i in zip(windows, logits, sample, strict=True):
        n = len(w.ids)
        spans, null_score = _spans(w, start[:n], end[:n], top_k, max_answer_len)
        null[i] = min(null[i], null_score)
        for s, e, score in spans:
            a, b = _chars(w, s, e, align_to_words)
            text = contexts[i][a:b]
            same = next((x for x in answers[i] if x["answer"].lower() == text.lower()), None)
            if same is not None:
                same["score"] += score
            else:
                answers[i].append({"score": score, "start": a, "end": b, "answer": text})
    results = []
    for found, null_score in zip(answers, null, strict=True):
        if impossible:
            found.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        found = sorted(found, key=lambda x: x["score"], reverse=True)[:top_k]
        results.append(found[0] if len(found) == 1 else found)
    return results


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


def _answers(where: str, record: dict) -> list[tuple[str, int]]:
    if "answers" in record:
        answers = record["answers"]
        if not isinstance(answers, dict) or not {"text", "answer_start"} <= set(answers):
            raise DataError(f"{where}: answers must be {{'text': [...], 'answer_start': [...]}}")
        pairs = list(zip(answers["text"], answers["answer_start"], strict=False))
    elif "answer" in record:
        pairs = [(record["answer"], field_of(where, record, "answer_start", object))]
    else:
        pairs = []  # unanswerable (SQuAD 2.0 style)
    context = field_of(where, record, "context")
    for text, start in pairs:
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            raise DataError(f"{where}: an answer needs a text string and an integer answer_start")
        if context[start : start + len(text)] != text:
            raise DataError(
                f"{where}: answer {text!r} is not at character {start} of the context "
                f"(found {context[start : start + len(text)]!r}); fix answer_start"
            )
    return pairs


def featurize(records, tokenizer, max_length: int, doc_stride: int) -> Dataset:
    """Records of question, context and answers ({"text": [...], "answer_start": [...]}, or answer +
    answer_start; none: unanswerable) as windows over the context, each pointing at the answer's
    tokens, or at [CLS] where the window does not hold it."""
    questions, contexts, answers = [], [], []
    for where, record in records:
        questions.append(field_of(where, record, "question"))
        contexts.append(field_of(where, record, "context"))
        answers.append(_answers(where, record))
    try:
        windows, sample = tokenizer.encode_windows(
            questions, contexts, max_length, doc_stride, names=("--max-length", "--doc-stride")
        )
    except ValueError as e:
        raise DataError(str(e)) from None
    features = []
    for w, i in zip(windows, sample, strict=True):
        start = end = 0  # no answer in this window: both point at [CLS]
        if answers[i]:
            text, first = answers[i][0]
            last = first + len(text)
            context = [t for t, s in enumerate(w.sequence_ids) if s == 1]
            if context and w.offsets[context[0]][0] <= first and w.offsets[context[-1]][1] >= last:
                start = next(t for t in context if w.offsets[t][1] > first)
                end = max(t for t in context if w.offsets[t][0] < last)
        features.append(
            {"input_ids": w.ids, "token_type_ids": w.type_ids, "start_positions": start, "end_positions": end}
        )
    examples = [
        {"question": q, "context": c, "answers": [t for t, _ in a] or [""]}
        for q, c, a in zip(questions, contexts, answers, strict=True)
    ]
    return Dataset(TASK, features, examples)


class QuestionAnsweringRecipe(Recipe):
    name = "question_answering"

    def featurize(self, examples, tokenizer, max_length, label_to_id, problem_type, doc_stride, seed):
        return featurize(examples, tokenizer, max_length, doc_stride)

    def default_metric(self, config) -> str:
        return "f1"

    def eval_units(self, data: Dataset, batch_size: int) -> tuple[list, int]:
        return list(range(len(data.examples))), batch_size  # examples, answered by the pipeline

    def eval_run(self, model, tokenizer, data: Dataset, units: list, collate, seed: int) -> list[dict]:
        examples = [data.examples[i] for i in units]
        inputs = [{"question": e["question"], "context": e["context"]} for e in examples]
        answers = question_answering(model, tokenizer, inputs, batch_size=max(len(inputs), 1))
        answers = answers if isinstance(answers, list) else [answers]
        return [{"example": i, "answer": a["answer"]} for i, a in zip(units, answers, strict=True)]

    def combine(self, config, data: Dataset, stats: list[dict]) -> dict:
        stats = sorted(stats, key=lambda s: s["example"])
        return squad_scores(
            [s["answer"] for s in stats], [data.examples[s["example"]]["answers"] for s in stats]
        )


class QuestionAnswering(Task):
    name = "question-answering"
    help = "answer questions from a context (jsonl/csv: question, context)"
    texts_help = "questions (with --context)"
    architecture = "for_question_answering"
    command, route = "qa", "/v1/qa"
    fields = ("question", "context")
    options = declare(
        question_answering,
        Option("top_k", int, "answers per question", lo=1, hi=100),
        Option("max_answer_len", int, "longest answer in tokens", lo=1, hi="max_length"),
        Option("doc_stride", int, "tokens shared by consecutive context windows", lo=0, hi="max_length"),
        Option("max_seq_len", int, "tokens per window (CLI: --max-length)", lo=3, hi="max_length", flag=None),
        Option("handle_impossible_answer", bool, "allow the empty answer", flag="--impossible"),
        Option("align_to_words", bool, "widen answers to whole words", flag=None),
    )
    export = Export(("start_logits", "end_logits"))
    recipe = QuestionAnsweringRecipe()

    def predict(self, model, tokenizer, inputs=None, **options):
        return question_answering(model, tokenizer, inputs, **options)

    def add_input_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--context", help="the context for every question")
        parser.add_argument("--context-file", help="read the context from this file")

    def cli_options(self, args: argparse.Namespace) -> dict:
        options = super().cli_options(args)
        if args.max_length:  # the CLI's --max-length is QA's max_seq_len
            options["max_seq_len"] = args.max_length
        return options

    def cli_inputs(self, args, records, open_records):
        if args.context is not None and args.context_file is not None:
            raise ValueError("give --context or --context-file, not both")
        if args.texts and args.context is None and args.context_file is None:
            raise ValueError("give --context (or --context-file) with questions as arguments")
        context = args.context
        if args.context_file is not None:
            try:
                data = read_bytes(Path(args.context_file), MAX_RECORD, "context file")
                context = data.decode("utf-8-sig")
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"--context-file {args.context_file}: {type(e).__name__}: {e}") from None
        if context is None:
            records = open_records(self.fields)
            return records, records.start()
        records = open_records(("question",))
        return records, ({"question": q, "context": context} for q in records.start())

    def human(self, result, args) -> str:
        return "  ".join(
            f"{escape(a['answer'])!r} ({a['start']}:{a['end']} {a['score']:.4f})"
            for a in (result if isinstance(result, list) else [result])
        )

    def request_inputs(self, body: dict) -> dict:
        if "inputs" not in body and {"question", "context"} <= set(body):
            body = {**body, "inputs": {"question": body.pop("question"), "context": body.pop("context")}}
        return body

    def check_request(self, item, options: dict, limits: Limits) -> tuple[int, int]:
        """A long context runs as several windows: the cost counts every window's tokens, split
        as the pipeline will split them (preprocess, on the event loop's own tokenizer)."""
        if not isinstance(item, dict) or set(item) != {"question", "context"}:
            raise RequestError("each input must be {'question': ..., 'context': ...}")
        text_of(item["question"], "question", limits)
        text_of(item["context"], "context", limits)
        window, stride = window_sizes(
            limits.max_length, options.get("max_seq_len"), options.get("doc_stride")
        )
        try:
            windows, _, _ = preprocess(limits.front, [item], window, stride)
        except ValueError as e:
            raise RequestError(str(e), "doc_stride" if "doc_stride=" in str(e) else "inputs") from None
        return len(windows) * window, options.get("top_k", 1)


TASK = QuestionAnswering()
