"""Training data: JSONL/CSV readers for each task, tokenised into features, and length-bucketed,
per-epoch shuffled batches padded to the backend's length bucket (buckets.py).

Record fields (JSONL objects, or CSV columns):
  sequence_classification  text, [text_pair], label (a class name/id, a number for regression,
                           or a list of names for multi-label)
  token_classification     tokens, tags (lists; in CSV space-separated strings)
  question_answering       question, context, answers {"text": [...], "answer_start": [...]}
                           (or answer + answer_start)
  multiple_choice          question, choices (list; in CSV "|"-separated), label (index) or
                           answer (the right choice's text)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from ..records import DataError, read_records  # noqa: F401  (the training data API)
from ..runtime import collate  # noqa: F401  (training batches: padded as inference)
from ..text import escape
from ..tokenizer import AlbertTokenizer

logger = logging.getLogger(__name__)

# each task and the spec architecture it trains
TASK_ARCHITECTURES = {
    "sequence_classification": "for_sequence_classification",
    "token_classification": "for_token_classification",
    "question_answering": "for_question_answering",
    "multiple_choice": "for_multiple_choice",
    "pretraining": "for_pre_training",
}
TASKS = tuple(TASK_ARCHITECTURES)


def _field(where: str, record: dict, name: str, kind=str):
    if name not in record:
        raise DataError(f"{where}: missing field {name!r} (has {sorted(record)})")
    value = record[name]
    if kind is list and isinstance(value, str):  # CSV cells
        value = value.split("|") if name == "choices" else value.split()
    if not isinstance(value, kind):
        raise DataError(f"{where}: field {name!r} should be a {kind.__name__}, got {value!r}")
    return value


@dataclass
class Dataset:
    """Tokenised features (dicts of int lists) and, for evaluation, what the metrics need."""

    task: str
    features: list[dict]
    examples: list[dict] = field(default_factory=list)  # raw inputs kept for evaluation (QA, NER)

    def __len__(self) -> int:
        return len(self.features)

    def check_ids(self, vocab_size: int, name: str = "training") -> None:
        """Raises when a token id falls outside [0, vocab_size): it would read past the embedding table."""
        for i, f in enumerate(self.features):
            rows = (
                f["input_ids"] if f["input_ids"] and isinstance(f["input_ids"][0], list) else [f["input_ids"]]
            )
            for ids in rows:
                if ids and (max(ids) >= vocab_size or min(ids) < 0):
                    raise DataError(
                        f"{name} example {i} holds token id "
                        f"{max(ids) if max(ids) >= vocab_size else min(ids)} "
                        f"outside the model's vocabulary [0, {vocab_size}): the tokenizer does not belong to "
                        "this model; use the checkpoint's own tokenizer"
                    )

    def lengths(self) -> np.ndarray:
        """The longest sequence of each example (for length bucketing)."""
        return np.array([_length(f) for f in self.features])

    def token_counts(self) -> np.ndarray:
        """Tokens of each example, every choice counted (for throughput)."""
        return np.array(
            [
                sum(map(len, ids)) if isinstance(ids[0], list) else len(ids)
                for ids in (f["input_ids"] for f in self.features)
            ]
        )


def _length(feature: dict) -> int:
    ids = feature["input_ids"]
    return max(len(x) for x in ids) if ids and isinstance(ids[0], list) else len(ids)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_vector(values: list) -> bool:
    """transformers' multi-label convention: every label a 0/1 vector of one length (>= 2)."""
    lengths = {len(v) for v in values}
    return (
        len(lengths) == 1
        and min(lengths) >= 2
        and all(_is_number(x) and x in (0, 1) for v in values for x in v)
    )


def label_set(task: str, records: list[tuple[str, dict]]) -> tuple[str, list[str]]:
    """(problem type, sorted label names) of a training file, by explicit rules:
    lists are multi-label (0/1 vectors of one length, as transformers, or lists of names); any float
    makes the file regression; ints or strings are class names. Anything else (null, booleans,
    objects, a mix of lists and single labels) is an error naming file:line."""
    if task == "token_classification":
        names = set()
        for where, record in records:
            for tag in _field(where, record, "tags", list):
                if not isinstance(tag, str | int) or isinstance(tag, bool):
                    raise DataError(f"{where}: tags must be strings, got {escape(repr(tag))}")
                names.add(str(tag))
        return "single_label_classification", sorted(names)
    values = []
    for where, record in records:
        value = _field(where, record, "label", object)
        if value is None or isinstance(value, bool | dict):
            raise DataError(f"{where}: label {escape(json.dumps(value))} is not a class name, number or list")
        if isinstance(value, list) and not all(
            isinstance(x, str | int | float) and not isinstance(x, bool) for x in value
        ):
            raise DataError(f"{where}: a multi-label list holds {escape(repr(value)[:60])}: use names or 0/1")
        if values and isinstance(value, list) != isinstance(values[0][1], list):
            raise DataError(
                f"{where}: mixes a list label with single labels "
                f"({values[0][0]} has {escape(repr(values[0][1])[:40])})"
            )
        values.append((where, value))
    labels = [v for _, v in values]
    if isinstance(labels[0], list):
        if _is_vector(labels):
            logger.warning(
                "labels read as 0/1 vectors over %d labels (transformers' multi-label convention)",
                len(labels[0]),
            )
            return "multi_label_vectors", [str(i) for i in range(len(labels[0]))]
        logger.warning("labels read as lists of label names (multi-label)")
        return "multi_label_classification", sorted({str(x) for v in labels for x in v})
    if all(_is_number(v) for v in labels) and any(isinstance(v, float) for v in labels):
        for where, v in values:
            if not math.isfinite(v):
                raise DataError(f"{where}: a regression label must be finite, got {v!r}")
        logger.warning("labels read as numbers: regression")
        return "regression", []
    kinds = {type(v) for v in labels}
    if kinds == {int, str}:
        where = next(w for w, v in values if isinstance(v, type(labels[0])) is False)
        raise DataError(f"{where}: mixes label names and numbers; use one kind (names in quotes, or numbers)")
    names = {str(v) for v in labels}  # numbers in numeric order, names alphabetically
    return "single_label_classification", sorted(
        names, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)
    )


def build(
    task: str,
    records: list[tuple[str, dict]],
    tokenizer: AlbertTokenizer,
    max_length: int,
    label_to_id: dict[str, int] | None = None,
    problem_type: str | None = None,
    doc_stride: int = 64,
) -> Dataset:
    """Tokenises records into a Dataset for `task` (see the module docstring for the fields)."""
    if task not in TASKS[:-1]:
        raise ValueError(f"task must be one of {TASKS[:-1]}, got {task!r}")
    return {
        "sequence_classification": _classification,
        "token_classification": _tokens,
        "question_answering": _qa,
        "multiple_choice": _choices,
    }[task](records, tokenizer, max_length, label_to_id or {}, problem_type, doc_stride)


def _label_id(where: str, value, label_to_id: dict[str, int]) -> int:
    key = str(value)
    if key not in label_to_id:
        raise DataError(f"{where}: label {key!r} is not in the label set {sorted(label_to_id)}")
    return label_to_id[key]


def _classification(records, tokenizer, max_length, label_to_id, problem_type, _):
    features, texts, pairs = [], [], []
    for where, record in records:
        texts.append(_field(where, record, "text"))
        pairs.append(_field(where, record, "text_pair") if "text_pair" in record else None)
    if all(p is not None for p in pairs) or all(p is None for p in pairs):
        encodings, _ = tokenizer.encode(
            texts, pairs if pairs[0] is not None else None, truncation=True, max_length=max_length
        )
    else:  # some records are pairs, some single texts: each as it is
        encodings = [
            tokenizer.encode(t, p, truncation=True, max_length=max_length)[0][0]
            for t, p in zip(texts, pairs, strict=True)
        ]
    for (where, record), e in zip(records, encodings, strict=True):
        value = _field(where, record, "label", object)
        if problem_type == "regression":
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise DataError(f"{where}: a regression label must be a finite number, got {value!r}")
            label = float(value)
        elif problem_type == "multi_label_classification" and isinstance(value, list) and _is_vector([value]):
            if len(value) != len(label_to_id):
                raise DataError(
                    f"{where}: a 0/1 label vector of {len(value)} entries for {len(label_to_id)} labels"
                )
            label = [float(v) for v in value]
        elif problem_type == "multi_label_classification":
            if not isinstance(value, list):
                raise DataError(
                    f"{where}: a multi-label label must be a list, got {escape(repr(value)[:60])}"
                )
            label = [0.0] * len(label_to_id)
            for v in value:
                label[_label_id(where, v, label_to_id)] = 1.0
        else:
            label = _label_id(where, value, label_to_id)
        features.append({"input_ids": e.ids, "token_type_ids": e.type_ids, "labels": label})
    return Dataset("sequence_classification", features)


def _tokens(records, tokenizer, max_length, label_to_id, *_):
    words, tags = [], []
    for where, record in records:
        w, t = _field(where, record, "tokens", list), _field(where, record, "tags", list)
        bad = [x for x in w if not isinstance(x, str)] + [
            x for x in t if not isinstance(x, str | int) or isinstance(x, bool)
        ]
        if bad:
            raise DataError(f"{where}: tokens and tags must be strings, got {escape(repr(bad[0])[:40])}")
        if len(w) != len(t):
            raise DataError(f"{where}: {len(w)} tokens but {len(t)} tags")
        if not w:
            raise DataError(f"{where}: an example with no tokens")
        words.append([str(x) for x in w])
        tags.append([_label_id(where, x, label_to_id) for x in t])
    encodings, _ = tokenizer.encode(words, truncation=True, max_length=max_length, is_split_into_words=True)
    features, examples = [], []
    for e, word_tags in zip(encodings, tags, strict=True):
        labels, previous = [], None
        for word in e.word_ids:  # the first piece of each word carries its tag, as transformers' examples
            labels.append(-100 if word is None or word == previous else word_tags[word])
            previous = word
        features.append({"input_ids": e.ids, "token_type_ids": e.type_ids, "labels": labels})
        examples.append({"word_ids": e.word_ids, "tags": word_tags})
    return Dataset("token_classification", features, examples)


def _answers(where: str, record: dict) -> list[tuple[str, int]]:
    if "answers" in record:
        answers = record["answers"]
        if not isinstance(answers, dict) or not {"text", "answer_start"} <= set(answers):
            raise DataError(f"{where}: answers must be {{'text': [...], 'answer_start': [...]}}")
        pairs = list(zip(answers["text"], answers["answer_start"], strict=False))
    elif "answer" in record:
        pairs = [(record["answer"], _field(where, record, "answer_start", object))]
    else:
        pairs = []  # unanswerable (SQuAD 2.0 style)
    context = _field(where, record, "context")
    for text, start in pairs:
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            raise DataError(f"{where}: an answer needs a text string and an integer answer_start")
        if context[start : start + len(text)] != text:
            raise DataError(
                f"{where}: answer {text!r} is not at character {start} of the context "
                f"(found {context[start : start + len(text)]!r}); fix answer_start"
            )
    return pairs


def _qa(records, tokenizer, max_length, _labels, _problem, doc_stride):
    questions, contexts, answers = [], [], []
    for where, record in records:
        questions.append(_field(where, record, "question"))
        contexts.append(_field(where, record, "context"))
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
    return Dataset("question_answering", features, examples)


def _choices(records, tokenizer, max_length, *_):
    features, count = [], None
    for where, record in records:
        question, choices = _field(where, record, "question"), _field(where, record, "choices", list)
        if not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: choices must be strings")
        if "label" not in record and "answer" in record:  # the right choice's text instead of its index
            if record["answer"] not in choices:
                raise DataError(f"{where}: answer {record['answer']!r} is not one of the choices {choices}")
            label = choices.index(record["answer"])
        else:
            label = _field(where, record, "label", object)
            if isinstance(label, str) and label.strip().lstrip("-").isdigit():  # a CSV cell
                label = int(label)
            if not isinstance(label, int) or isinstance(label, bool):
                raise DataError(
                    f"{where}: label {escape(json.dumps(label))} should be the index (an integer) "
                    "of the right choice"
                )
        count = count or len(choices)
        if len(choices) != count or count < 2:
            raise DataError(
                f"{where}: every example needs the same number (>= 2) of choices: {count} vs {len(choices)}"
            )
        if not 0 <= label < len(choices):
            raise DataError(f"{where}: label {label} is not a choice index (0..{len(choices) - 1})")
        encodings, _ = tokenizer.encode(
            [question] * len(choices), choices, truncation=True, max_length=max_length
        )
        features.append(
            {
                "input_ids": [e.ids for e in encodings],
                "token_type_ids": [e.type_ids for e in encodings],
                "labels": label,
            }
        )
    return Dataset("multiple_choice", features)


def batch_order(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> list[np.ndarray]:
    """Index batches for one epoch: shuffled, then sorted by length within windows of 50 batches so
    batches hold similar lengths, then the batches shuffled. Deterministic in (seed, epoch)."""
    n = len(lengths)
    if not shuffle:
        order = np.argsort(-lengths, kind="stable")
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    window = batch_size * 50
    for i in range(0, n, window):
        part = order[i : i + window]
        order[i : i + window] = part[np.argsort(-lengths[part], kind="stable")]
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
