"""Evaluation metrics of a trained model per task, from the outputs of an evaluation pass."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from ..heads import at_positions
from .data import Dataset, batch_order
from .metrics import accuracy, entity_scores, macro_f1, pearson, spearman


def batch_stats(task: str, config, data: Dataset, rows, batch: dict, out) -> dict:
    """What the metrics need from one evaluation batch, small and JSON-able (ranks exchange it)."""
    stats = {"loss": float(out.loss.item()), "n": len(rows)}
    if task == "pretraining":
        # logits are at masked_positions only when the batch has them
        labels = np.array(at_positions(batch["labels"], batch.get("masked_positions")))
        logits = np.array(out.prediction_logits.astype(mx.float32), np.float64)
        keep = labels != -100
        logits = logits - logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        sop = np.array(out.sop_logits.argmax(-1)) == np.array(batch["sentence_order_label"])
        top5 = np.argpartition(logits[keep], -5, axis=-1)[:, -5:] if logits.shape[-1] > 5 else None
        return {
            **stats,
            "hit": int(((logits.argmax(-1) == labels) & keep).sum()),
            "hit5": int(keep.sum()) if top5 is None else int((top5 == labels[keep][:, None]).any(-1).sum()),
            "total": int(keep.sum()),
            "nll": float(-logp[keep, labels[keep]].sum()),
            "sop": int(sop.sum()),
        }
    if task == "token_classification":
        names, predicted, gold = config.id_to_label, [], []
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
        return {**stats, "predicted": predicted, "gold": gold}
    return {
        **stats,
        "rows": [int(i) for i in rows],
        "logits": np.array(out.logits.astype(mx.float32)).tolist(),
    }


def combine(task: str, config, data: Dataset, stats: list[dict]) -> dict:
    """The task's metrics (and the mean loss) from every batch's stats, in any order."""
    loss = sum(s["loss"] * s["n"] for s in stats) / sum(s["n"] for s in stats)
    if task == "pretraining":
        total = sum(s["total"] for s in stats)
        mlm_loss = sum(s["nll"] for s in stats) / max(total, 1)
        return {
            "loss": loss,
            "mlm_accuracy": sum(s["hit"] for s in stats) / max(total, 1),
            "mlm_top5_accuracy": sum(s["hit5"] for s in stats) / max(total, 1),
            "perplexity": math.exp(min(mlm_loss, 50)),
            "sop_accuracy": sum(s["sop"] for s in stats) / len(data),
        }
    if task == "token_classification":
        predicted = [p for s in stats for p in s["predicted"]]
        gold = [g for s in stats for g in s["gold"]]
        flat_p, flat_g = sum(predicted, []), sum(gold, [])
        return {"loss": loss, **entity_scores(predicted, gold), "accuracy": accuracy(flat_p, flat_g)}
    logits = np.concatenate([np.array(s["logits"], np.float32).reshape(s["n"], -1) for s in stats])
    rows = np.concatenate([np.array(s["rows"], int) for s in stats])
    labels = np.array([data.features[i]["labels"] for i in rows])
    if task == "regression":
        return {
            "loss": loss,
            "pearson": pearson(logits[:, 0], labels),
            "spearman": spearman(logits[:, 0], labels),
        }
    if config.problem_type == "multi_label_classification":
        predicted = (logits > 0).astype(int)
        return {
            "loss": loss,
            "accuracy": accuracy(predicted.ravel(), labels.ravel()),
            "subset_accuracy": float((predicted == labels).all(1).mean()),
        }
    predicted = logits.argmax(-1)
    result = {"loss": loss, "accuracy": accuracy(predicted, labels)}
    if task == "sequence_classification":
        result["macro_f1"] = macro_f1(predicted, labels)
    return result


def batches_stats(
    task: str, model, data: Dataset, order: list, indices, collate, seed: int, check_inputs: bool = True
) -> list[dict]:
    """batch_stats of the batches order[j] for j in indices, each collated by collate(features, rng)
    with rng fixed by (seed, j): pre-training masks are a function of the batch, whoever runs it.
    check_inputs=False for data whose ids were checked already (the trainer's)."""
    stats = []
    for j in indices:
        rows = order[j]
        batch = collate([data.features[i] for i in rows], np.random.default_rng([seed, 10**6, j]))
        out = model(**batch, check_inputs=check_inputs)
        stats.append(batch_stats(task, model.config, data, rows, batch, out))
    return stats


def evaluate_pretraining(
    model,
    tokenizer,
    data: Dataset,
    batch_size: int = 32,
    seed: int = 0,
    max_ngram: int = 1,
    constant_token: int | None = None,
) -> dict:
    """Masked-LM top-1/top-5 accuracy and perplexity, and sentence-order accuracy of a pre-training
    model on `data` (from `sop_dataset`); 15% of tokens masked, fixed by `seed`. With
    constant_token, also "baseline_accuracy": that of always predicting it on the same masks.
    "masked_tokens" counts the predicted positions."""
    from .pretraining import masked_batch

    hits = []

    def collate(features, rng):
        batch = masked_batch(features, tokenizer, model.config.max_positions, rng, max_ngram=max_ngram)
        hits.append(int((np.array(batch["labels"]) == constant_token).sum()))
        return batch

    was_training = model.training
    model.eval()
    try:
        order = batch_order(data.lengths(), batch_size, 0, 0, shuffle=False)
        stats = batches_stats("pretraining", model, data, order, range(len(order)), collate, seed)
        metrics = combine("pretraining", model.config, data, stats)
        metrics["masked_tokens"] = sum(s["total"] for s in stats)
        if constant_token is not None:
            metrics["baseline_accuracy"] = sum(hits) / max(metrics["masked_tokens"], 1)
        return metrics
    finally:
        model.train(was_training)


def qa_answers(model, tokenizer, examples: list[dict], batch_size: int) -> list[str]:
    """The question-answering pipeline's answer to each raw example."""
    from ..pipelines import question_answering

    inputs = [{"question": e["question"], "context": e["context"]} for e in examples]
    return [a["answer"] for a in question_answering(model, tokenizer, inputs, batch_size=batch_size)]
