"""Evaluation metrics of a trained model per task, from the outputs of an evaluation pass."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from .data import Dataset
from .metrics import accuracy, entity_scores, macro_f1, pearson, spearman, squad_scores


def task_metrics(task: str, config, data: Dataset, outputs) -> dict:
    """The metrics of `task` from (rows, batch, output) triples of an evaluation pass."""
    if task == "pretraining":
        hit = total = sop = 0
        for _, batch, out in outputs:
            labels = np.array(batch["labels"])
            predicted = np.array(out.prediction_logits.argmax(-1))
            hit += int(((predicted == labels) & (labels != -100)).sum())
            total += int((labels != -100).sum())
            sop += int((np.array(out.sop_logits.argmax(-1)) == np.array(batch["sentence_order_label"])).sum())
        mlm_loss = _mlm_loss(outputs)
        return {
            "mlm_accuracy": hit / max(total, 1),
            "perplexity": math.exp(min(mlm_loss, 50)),
            "sop_accuracy": sop / len(data),
        }
    if task == "token_classification":
        names = config.id_to_label
        predicted, gold = [], []
        for rows, _, out in outputs:
            logits = np.array(out.logits.argmax(-1))
            for r, i in enumerate(rows):
                example, feature = data.examples[i], data.features[i]
                words = [
                    (t, w)
                    for t, w in enumerate(example["word_ids"])
                    if w is not None and feature["labels"][t] != -100
                ]
                predicted.append([names.get(int(logits[r, t]), "O") for t, _ in words])
                gold.append([names.get(example["tags"][w], "O") for _, w in words])
        scores = entity_scores(predicted, gold)
        flat_p, flat_g = sum(predicted, []), sum(gold, [])
        return {**scores, "accuracy": accuracy(flat_p, flat_g)}
    logits = np.concatenate([np.array(out.logits.astype(mx.float32)) for _, _, out in outputs])
    rows = np.concatenate([rows for rows, _, _ in outputs])
    labels = np.array([data.features[i]["labels"] for i in rows])
    if task == "regression":
        return {"pearson": pearson(logits[:, 0], labels), "spearman": spearman(logits[:, 0], labels)}
    if config.problem_type == "multi_label_classification":
        predicted = (logits > 0).astype(int)
        return {
            "accuracy": accuracy(predicted.ravel(), labels.ravel()),
            "subset_accuracy": float((predicted == labels).all(1).mean()),
        }
    predicted = logits.argmax(-1)
    result = {"accuracy": accuracy(predicted, labels)}
    if task == "sequence_classification":
        result["macro_f1"] = macro_f1(predicted, labels)
    return result


def _mlm_loss(outputs) -> float:
    """Mean negative log-likelihood of the masked tokens (float64)."""
    total = count = 0.0
    for _, batch, out in outputs:
        labels = np.array(batch["labels"])
        logits = np.array(out.prediction_logits.astype(mx.float32), np.float64)
        logits = logits - logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        keep = labels != -100
        total -= logp[keep, labels[keep]].sum()
        count += keep.sum()
    return total / max(count, 1)


def qa_metrics(model, tokenizer, data: Dataset, batch_size: int) -> dict:
    """SQuAD exact match and F1 of the question-answering pipeline's answers on the raw examples."""
    from ..pipelines import question_answering

    examples = data.examples
    answers = question_answering(
        model,
        tokenizer,
        [{"question": e["question"], "context": e["context"]} for e in examples],
        batch_size=batch_size,
    )
    return squad_scores([a["answer"] for a in answers], [e["answers"] for e in examples])
