"""Evaluation metrics of each task: accuracy and macro-F1, Pearson/Spearman, entity-level P/R/F1
with seqeval's rules, SQuAD exact match and F1, MLM accuracy and perplexity."""

from __future__ import annotations

import collections
import re
import string

import numpy as np


def accuracy(predictions, labels) -> float:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float((predictions == labels).mean()) if labels.size else 0.0


def macro_f1(predictions, labels) -> float:
    """Mean over the classes present in labels or predictions of each class's F1."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    scores = []
    for c in np.union1d(predictions, labels):
        tp = np.sum((predictions == c) & (labels == c))
        fp, fn = np.sum((predictions == c) & (labels != c)), np.sum((predictions != c) & (labels == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse = np.unique(x, return_inverse=True)
    return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]


def pearson(x, y) -> float:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x, y) -> float:
    return pearson(_ranks(np.asarray(x, np.float64)), _ranks(np.asarray(y, np.float64)))


_ENDS = {("B", "B"), ("B", "S"), ("B", "O"), ("I", "B"), ("I", "S"), ("I", "O")}
_STARTS = {("E", "E"), ("E", "I"), ("S", "E"), ("S", "I"), ("O", "E"), ("O", "I")}


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) chunks of an IOB1/IOB2/IOBES tag sequence, by seqeval's get_entities rules."""
    chunks, prev_tag, prev_type, begin = set(), "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"
        if (
            prev_tag in ("E", "S")
            or (prev_tag, tag) in _ENDS
            or (prev_tag not in ("O", ".") and prev_type != type_)
        ):
            chunks.add((prev_type, begin, i - 1))
        if tag in ("B", "S") or (prev_tag, tag) in _STARTS or (tag not in ("O", ".") and prev_type != type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def entity_scores(predicted: list[list[str]], gold: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 over sentences (seqeval's default mode)."""
    tp = n_pred = n_gold = 0
    for p, g in zip(predicted, gold, strict=True):
        p_set, g_set = entities(list(p)), entities(list(g))
        tp += len(p_set & g_set)
        n_pred += len(p_set)
        n_gold += len(g_set)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def squad_scores(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    """Exact match and token F1 (percent), each the best over an example's gold answers."""

    def f1(prediction: str, truth: str) -> float:
        p, t = normalize_answer(prediction).split(), normalize_answer(truth).split()
        if not p or not t:
            return float(p == t)
        common = sum((collections.Counter(p) & collections.Counter(t)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(p), common / len(t)
        return 2 * precision * recall / (precision + recall)

    em = [
        max(float(normalize_answer(p) == normalize_answer(t)) for t in ts)
        for p, ts in zip(predictions, answers, strict=True)
    ]
    f = [max(f1(p, t) for t in ts) for p, ts in zip(predictions, answers, strict=True)]
    return {
        "exact_match": 100 * float(np.mean(em)) if em else 0.0,
        "f1": 100 * float(np.mean(f)) if f else 0.0,
    }
