"""Labels of training data, read by explicit rules (classification and tagging share them), and
what they ask of the head: its width, names and problem type."""

from __future__ import annotations

import json
import logging
import math

from ..records import DataError
from ..text import escape
from .recipe import field_of

logger = logging.getLogger(__name__)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_vector(values: list) -> bool:
    """transformers' multi-label convention: every label a 0/1 vector of one length (>= 2)."""
    lengths = {len(v) for v in values}
    return (
        len(lengths) == 1
        and min(lengths) >= 2
        and all(is_number(x) and x in (0, 1) for v in values for x in v)
    )


def label_id(where: str, value, label_to_id: dict[str, int]) -> int:
    key = str(value)
    if key not in label_to_id:
        raise DataError(f"{where}: label {key!r} is not in the label set {sorted(label_to_id)}")
    return label_to_id[key]


def tag_set(records: list[tuple[str, dict]]) -> tuple[str, list[str]]:
    """("single_label_classification", sorted tag names) of a tagging file."""
    names = set()
    for where, record in records:
        for tag in field_of(where, record, "tags", list):
            if not isinstance(tag, str | int) or isinstance(tag, bool):
                raise DataError(f"{where}: tags must be strings, got {escape(repr(tag))}")
            names.add(str(tag))
    return "single_label_classification", sorted(names)


def class_set(records: list[tuple[str, dict]]) -> tuple[str, list[str]]:
    """(problem type, sorted label names) of a classification file, by explicit rules: lists are
    multi-label (0/1 vectors of one length, as transformers, or lists of names); any float makes the
    file regression; ints or strings are class names. Anything else (null, booleans, objects, a mix
    of lists and single labels) is an error naming file:line."""
    values = []
    for where, record in records:
        value = field_of(where, record, "label", object)
        if value is None or isinstance(value, bool | dict):
            raise DataError(f"{where}: label {escape(json.dumps(value))} is not a class name, number or list")
        if isinstance(value, list) and not all(is_number(x) or isinstance(x, str) for x in value):
            raise DataError(f"{where}: a multi-label list holds {escape(repr(value)[:60])}: use names or 0/1")
        if values and isinstance(value, list) != isinstance(values[0][1], list):
            raise DataError(
                f"{where}: mixes a list label with single labels ({values[0][0]} has "
                f"{escape(repr(values[0][1])[:40])})"
            )
        values.append((where, value))
    labels = [v for _, v in values]
    if isinstance(labels[0], list):
        if is_vector(labels):
            logger.warning(
                "labels read as 0/1 vectors over %d labels (transformers' multi-label convention)",
                len(labels[0]),
            )
            return "multi_label_vectors", [str(i) for i in range(len(labels[0]))]
        logger.warning("labels read as lists of label names (multi-label)")
        return "multi_label_classification", sorted({str(x) for v in labels for x in v})
    if all(is_number(v) for v in labels) and any(isinstance(v, float) for v in labels):
        for where, v in values:
            if not math.isfinite(v):
                raise DataError(f"{where}: a regression label must be finite, got {v!r}")
        logger.warning("labels read as numbers: regression")
        return "regression", []
    if {type(v) for v in labels} == {int, str}:
        where = next(w for w, v in values if not isinstance(v, type(labels[0])))
        raise DataError(f"{where}: mixes label names and numbers; use one kind (names in quotes, or numbers)")
    names = {str(v) for v in labels}  # numbers in numeric order, names alphabetically
    return "single_label_classification", sorted(
        names, key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)
    )


def plan(kind: str, labels: list[str], existing, problem_type: str | None, sets_problem_type: bool):
    """(config changes, label_to_id, problem type) for training a head on these labels: the
    checkpoint's own label ids when it was trained on the same set before, else new ones; a 0/1
    vector keeps the checkpoint's names when their count fits."""
    if kind == "multi_label_vectors":
        names = existing.id_to_label if existing.num_labels == len(labels) and existing.id_to_label else {}
        labels = [names.get(i, f"LABEL_{i}") for i in range(len(labels))]
        kind = "multi_label_classification"
        if not names:
            existing = existing.replace(label_to_id={n: i for i, n in enumerate(labels)})
    kind = problem_type or kind
    if kind == "regression":
        return {"num_labels": 1, "problem_type": "regression", "id_to_label": {0: "score"}}, {}, kind
    if len(labels) < 2 and kind == "single_label_classification":
        logger.warning(
            "the training data holds one label only (%s): a classifier learns nothing from it; add "
            "examples of the other labels",
            escape(str(labels[0]) if labels else "none")[:80],
        )
    if set(existing.label_to_id) == set(labels) and existing.num_labels == len(labels):
        changes = {"problem_type": kind} if sets_problem_type else {}
        return changes, dict(existing.label_to_id), kind  # a model fine-tuned on these labels before
    changes = {"num_labels": len(labels), "id_to_label": dict(enumerate(labels))}
    if sets_problem_type:
        changes["problem_type"] = kind
    return changes, {name: i for i, name in enumerate(labels)}, kind
