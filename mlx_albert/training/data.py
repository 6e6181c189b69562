"""Training batches: each epoch's order (shuffled, then sorted by length within windows so batches
hold similar lengths), and the records of a task turned into features by the task itself.

Record fields (JSONL objects, or CSV columns):
  sequence_classification  text, [text_pair], label (a class name/id, a number for regression,
                           or a list of names for multi-label)
  token_classification     tokens, tags (lists; in CSV space-separated strings)
  question_answering       question, context, answers {"text": [...], "answer_start": [...]}
                           (or answer + answer_start)
  multiple_choice          question, choices (list; in CSV "|"-separated), label (index) or
                           answer (the right choice's text)
  pretraining              plain text: one sentence a line, a blank line between documents
"""

from __future__ import annotations

import numpy as np

from ..batching import collate
from ..records import DataError, read_records
from ..tasks import Dataset, get
from ..tokenizer import AlbertTokenizer


def label_set(task: str, records: list[tuple[str, dict]]) -> tuple[str, list[str]]:
    """(problem type, sorted label names) of a classification or tagging file (tasks/labels.py)."""
    return get(task).recipe.label_set(records)


def build(
    task: str,
    records: list,
    tokenizer: AlbertTokenizer,
    max_length: int,
    label_to_id: dict[str, int] | None = None,
    problem_type: str | None = None,
    doc_stride: int = 64,
    seed: int = 0,
) -> Dataset:
    """Tokenises a task's records into a Dataset (see the module docstring for the fields)."""
    return get(task).recipe.featurize(
        records, tokenizer, max_length, label_to_id or {}, problem_type, doc_stride, seed
    )


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


__all__ = ["DataError", "Dataset", "batch_order", "build", "collate", "label_set", "read_records"]
