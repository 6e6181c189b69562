"""multiple-choice: a question (or context) and its candidate answers -> a probability per choice
(no transformers pipeline: the head's softmax over choices), and its training, by accuracy."""

from __future__ import annotations

import argparse
import json

import numpy as np

from ..batching import dispatch, max_tokens, run_batches, to_numpy
from ..metrics import accuracy
from ..pairs import encode_pairs
from ..records import DataError
from ..text import escape
from ..tokenizer import AlbertTokenizer
from .base import Limits, RequestError, Task, scores, softmax, text_of, tokens_at_most
from .exported import Export
from .recipe import Dataset, Recipe, field_of, logits_and_rows, mean_loss


def _example(item) -> tuple[str, list[str]]:
    if isinstance(item, dict) and {"question", "choices"} <= set(item):
        question, choices = item["question"], item["choices"]
        if isinstance(question, str) and isinstance(choices, list | tuple) and choices:
            if all(isinstance(c, str) for c in choices):
                return question, list(choices)
    raise ValueError(
        "multiple choice takes {'question': str, 'choices': [str, ...]} with at least one choice, "
        f"got {item!r}"
    )


def multiple_choice(
    model,
    tokenizer: AlbertTokenizer,
    inputs,
    batch_size: int = 8,
    progress: bool = False,
    max_length: int | None = None,
):
    """Scores the choices of each question with an AlbertForMultipleChoice.

    Each choice is encoded as the pair (question, choice), truncated longest-first to the model.
    Returns, per question, [{"choice", "index", "score"}] sorted by score (softmax over its choices);
    a list of those for a list of questions.
    """
    limit = max_tokens(model, tokenizer, max_length)

    def run(items: list) -> list:
        examples = [_example(item) for item in items]
        groups = [_encode(tokenizer, q, choices, limit) for q, choices in examples]
        results = []
        # Batches group questions with the same number of choices (the model takes (B, C, L)).
        for size in sorted({len(g) for g in groups}):
            rows = [i for i, g in enumerate(groups) if len(g) == size]
            logits = run_batches(
                model,
                [groups[i] for i in rows],
                lambda b: list(to_numpy(model(**b).logits)),
                tokenizer.pad_token_id,
                limit,
                batch_size,
                progress,
                squeeze=False,
            )
            results += list(zip(rows, logits, strict=True))
        out = [None] * len(items)
        for i, row in results:
            scores = softmax(np.asarray(row, np.float64))
            ranked = sorted(range(len(scores)), key=lambda c: -scores[c])
            out[i] = [{"choice": examples[i][1][c], "index": c, "score": float(scores[c])} for c in ranked]
        return out

    return dispatch(inputs, lambda x: isinstance(x, dict), run, batch_size)


def _encode(tokenizer, question: str, choices: list[str], limit: int) -> list:
    """The (question, choice) pairs of one question, truncated longest-first."""
    return encode_pairs(tokenizer, [question] * len(choices), choices, limit)


def featurize(records, tokenizer, max_length: int) -> Dataset:
    """Records of question, choices (a list; in CSV \"|\"-separated) and label (the right choice's
    index) or answer (its text) as (choices, seq) features."""
    features, count = [], None
    for where, record in records:
        question, choices = field_of(where, record, "question"), field_of(where, record, "choices", list)
        if not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: choices must be strings")
        if "label" not in record and "answer" in record:  # the right choice's text instead of its index
            if record["answer"] not in choices:
                raise DataError(f"{where}: answer {record['answer']!r} is not one of the choices {choices}")
            label = choices.index(record["answer"])
        else:
            label = field_of(where, record, "label", object)
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
        encodings = _encode(tokenizer, question, choices, max_length)
        features.append(
            {
                "input_ids": [e.ids for e in encodings],
                "token_type_ids": [e.type_ids for e in encodings],
                "labels": label,
            }
        )
    return Dataset(TASK, features)


class MultipleChoiceRecipe(Recipe):
    name = "multiple_choice"

    def featurize(self, examples, tokenizer, max_length, label_to_id, problem_type, doc_stride, seed):
        return featurize(examples, tokenizer, max_length)

    def combine(self, config, data: Dataset, stats: list[dict]) -> dict:
        logits, rows = logits_and_rows(stats)
        labels = np.array([data.features[i]["labels"] for i in rows])
        return {"loss": mean_loss(stats), "accuracy": accuracy(logits.argmax(-1), labels)}


class MultipleChoice(Task):
    name = "multiple-choice"
    help = "score the choices of a question (jsonl/csv: question, choices)"
    texts_help = "choices (with --question)"
    architecture = "for_multiple_choice"
    command, route = "multiple-choice", "/v1/multiple-choice"
    fields = ("question", "choices")
    export = Export(inputs_rank=3)
    recipe = MultipleChoiceRecipe()

    def predict(self, model, tokenizer, inputs, **options):
        return multiple_choice(model, tokenizer, inputs, **options)

    def add_input_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--question", help="the question whose choices are the arguments")

    def cli_inputs(self, args, records, open_records):
        if args.texts:
            if args.question is None:
                raise ValueError(
                    "give --question with the choices as arguments (or --file with question, choices)"
                )
            args.texts = [{"question": args.question, "choices": args.texts}]
        records = open_records(self.fields)
        return records, records.start()

    def human(self, result, args) -> str:
        return scores(result, "choice")

    def check_request(self, item, options: dict, limits: Limits) -> tuple[int, int]:
        """Every choice is a sequence of its own: the cost counts choices, not inputs."""
        if not isinstance(item, dict) or set(item) != {"question", "choices"}:
            raise RequestError("each input must be {'question': ..., 'choices': [...]}")
        question = text_of(item["question"], "question", limits)
        if not isinstance(item["choices"], list) or not item["choices"]:
            raise RequestError("choices must be a non-empty list of strings")
        tokens = 0
        for choice in item["choices"]:
            tokens += tokens_at_most(question + text_of(choice, "a choice", limits), limits)
        return tokens, len(item["choices"])


TASK = MultipleChoice()
