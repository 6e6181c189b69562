"""pretraining: ALBERT's own objective, masked-LM with n-gram masking plus sentence-order
prediction, as in the ALBERT paper: sentence-order pairs from consecutive segments of a document
(swapped with probability 0.5) and masked-LM corruption (15% of tokens; 80% [MASK], 10% random,
10% kept), optionally of whole n-grams (n <= 3, p(n) ∝ 1/n); evaluated by masked-token top-1/top-5
accuracy, perplexity and sentence-order accuracy. Its checkpoints answer fill-mask."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

from ..batching import clip_text, collate
from ..heads import at_positions
from ..losses import cross_entropy
from ..records import DataError, read_documents
from ..tokenizer import AlbertTokenizer
from .base import Task
from .exported import Export
from .fill_mask import fill_mask
from .recipe import Dataset, Recipe, mean_loss


def sop_dataset(
    documents: list[list[str]], tokenizer: AlbertTokenizer, max_length: int, seed: int = 0
) -> Dataset:
    """[CLS] A [SEP] B [SEP] pairs of consecutive segments filling max_length; label 1 when swapped."""
    rng = np.random.default_rng(seed)
    budget = max_length - 3
    features = []
    for document in documents:
        document = [clip_text(s, max_length) for s in document]  # no pair holds more of one sentence
        sentences = [s.ids[1:-1] for s in tokenizer.encode(document)[0]]  # without [CLS]/[SEP]
        chunk: list[list[int]] = []
        for i, sentence in enumerate(sentences):
            chunk.append(sentence)
            if sum(map(len, chunk)) >= budget or i == len(sentences) - 1:
                tokens = [t for s in chunk for t in s]
                if len(tokens) >= 2:
                    if len(chunk) >= 2:  # split at a sentence boundary
                        cut = int(rng.integers(1, len(chunk)))
                        a, b = [t for s in chunk[:cut] for t in s], [t for s in chunk[cut:] for t in s]
                    else:  # one long sentence: split its tokens
                        cut = int(rng.integers(1, len(tokens)))
                        a, b = tokens[:cut], tokens[cut:]
                    while len(a) + len(b) > budget:  # trim the longer side, as BERT's truncate_seq_pair
                        (a if len(a) > len(b) else b).pop()
                    swapped = bool(rng.random() < 0.5)
                    if swapped:
                        a, b = b, a
                    ids = [tokenizer.cls_token_id, *a, tokenizer.sep_token_id, *b, tokenizer.sep_token_id]
                    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
                    features.append(
                        {"input_ids": ids, "token_type_ids": types, "sentence_order_label": int(swapped)}
                    )
                chunk = []
    if not features:
        raise DataError("the text gave no pre-training pairs: each document needs at least two tokens")
    return Dataset(TASK, features)


def mask_tokens(
    input_ids: np.ndarray,
    special: np.ndarray,
    tokenizer: AlbertTokenizer,
    rng: np.random.Generator,
    probability: float = 0.15,
    max_ngram: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(corrupted ids, labels with -100 where not predicted) for a (B, L) batch; `special` marks
    positions that are never masked ([CLS], [SEP], padding)."""
    ids, labels = input_ids.copy(), np.full_like(input_ids, -100)
    chosen = np.zeros_like(special, dtype=bool)
    ngrams = np.arange(1, max_ngram + 1)
    weights = (1.0 / ngrams) / (1.0 / ngrams).sum()
    for row in range(ids.shape[0]):
        candidates = np.flatnonzero(~special[row])
        if candidates.size == 0:
            continue
        target = max(1, int(round(candidates.size * probability)))
        if max_ngram == 1:
            chosen[row, rng.choice(candidates, size=target, replace=False)] = True
            continue
        for start in rng.permutation(candidates):
            if chosen[row].sum() >= target:
                break
            n = int(rng.choice(ngrams, p=weights))
            span = [p for p in range(start, start + n) if p < ids.shape[1] and not special[row, p]]
            span = span[: target - int(chosen[row].sum())]
            chosen[row, span] = True
    labels[chosen] = input_ids[chosen]
    action = rng.random(ids.shape)
    ids[chosen & (action < 0.8)] = tokenizer.mask_token_id
    randomise = chosen & (action >= 0.8) & (action < 0.9)
    specials = [
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.mask_token_id,
    ]
    normal = np.setdiff1d(np.arange(tokenizer.vocab_size), [i for i in specials if i is not None])
    ids[randomise] = rng.choice(normal, size=int(randomise.sum()))
    return ids, labels


def masked_batch(
    features: list[dict],
    tokenizer: AlbertTokenizer,
    max_positions: int,
    rng: np.random.Generator,
    probability: float = 0.15,
    max_ngram: int = 1,
    positions: bool = False,
) -> dict[str, mx.array]:
    """A padded pre-training batch with MLM corruption ([CLS], [SEP] and padding never masked).
    With positions, also "masked_positions" (B, K): each row's masked positions, padded with an
    unmasked one; K = round(L * probability) bounds every row's count and depends on L only, so a
    compiled step sees one shape per batch width."""
    batch = collate(features, tokenizer.pad_token_id, max_positions)
    ids = np.array(batch["input_ids"])
    special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    special |= np.array(batch["attention_mask"]) == 0
    ids, labels = mask_tokens(ids, special, tokenizer, rng, probability, max_ngram)
    batch["input_ids"], batch["labels"] = mx.array(ids), mx.array(labels)
    if positions:
        batch["masked_positions"] = mx.array(masked_positions(labels, probability))
    return batch


def masked_positions(labels: np.ndarray, probability: float) -> np.ndarray:
    """(B, K) positions of each row's labels (!= -100), padded with the row's first unlabelled one."""
    k = max(1, int(round(labels.shape[1] * probability)))  # >= mask_tokens' count for any row
    out = np.empty((labels.shape[0], k), np.int32)
    for row, row_labels in enumerate(labels):
        chosen, free = np.flatnonzero(row_labels != -100), np.flatnonzero(row_labels == -100)
        if chosen.size > k:
            raise ValueError(f"row {row} has {chosen.size} masked tokens, more than the {k} expected")
        out[row, : chosen.size] = chosen
        out[row, chosen.size :] = free[0] if free.size else 0
    return out


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
    hits = []

    def collate(features, rng):
        batch = masked_batch(features, tokenizer, model.config.max_positions, rng, max_ngram=max_ngram)
        hits.append(int((np.array(batch["labels"]) == constant_token).sum()))
        return batch

    was_training = model.training
    model.eval()
    try:
        data.check_ids(model.config, "evaluation")  # the model then runs unchecked
        units, _ = TASK.recipe.eval_units(data, batch_size)
        stats = TASK.recipe.eval_run(model, tokenizer, data, units, collate, seed)
        metrics = TASK.recipe.combine(model.config, data, stats)
        metrics["masked_tokens"] = sum(s["total"] for s in stats)
        if constant_token is not None:
            metrics["baseline_accuracy"] = sum(hits) / max(metrics["masked_tokens"], 1)
        return metrics
    finally:
        model.train(was_training)


class PretrainingRecipe(Recipe):
    name = "pretraining"

    def read(self, path) -> list:
        return read_documents(path)

    def featurize(self, examples, tokenizer, max_length, label_to_id, problem_type, doc_stride, seed):
        return sop_dataset(examples, tokenizer, max_length, seed)

    def collate(self, features, tokenizer, max_positions, rng, args) -> dict:
        probability, ngram = getattr(args, "mlm_probability", 0.15), getattr(args, "max_ngram", 1)
        # MLM logits at the masked tokens only
        return masked_batch(features, tokenizer, max_positions, rng, probability, ngram, positions=True)

    def default_metric(self, config) -> str:
        return "mlm_accuracy"

    def batch_stats(self, config, data: Dataset, rows, batch: dict, out) -> dict:
        # logits are at masked_positions only when the batch has them
        labels = np.array(at_positions(batch["labels"], batch.get("masked_positions")))
        logits = np.array(out.prediction_logits.astype(mx.float32), np.float64)
        keep = labels != -100
        logits = logits - logits.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        sop = np.array(out.sop_logits.argmax(-1)) == np.array(batch["sentence_order_label"])
        top5 = np.argpartition(logits[keep], -5, axis=-1)[:, -5:] if logits.shape[-1] > 5 else None
        return {
            "loss": float(out.loss.item()),
            "n": len(rows),
            "hit": int(((logits.argmax(-1) == labels) & keep).sum()),
            "hit5": int(keep.sum()) if top5 is None else int((top5 == labels[keep][:, None]).any(-1).sum()),
            "total": int(keep.sum()),
            "nll": float(-logp[keep, labels[keep]].sum()),
            "sop": int(sop.sum()),
        }

    def combine(self, config, data: Dataset, stats: list[dict]) -> dict:
        total = sum(s["total"] for s in stats)
        return {
            "loss": mean_loss(stats),
            "mlm_accuracy": sum(s["hit"] for s in stats) / max(total, 1),
            "mlm_top5_accuracy": sum(s["hit5"] for s in stats) / max(total, 1),
            "perplexity": math.exp(min(sum(s["nll"] for s in stats) / max(total, 1), 50)),
            "sop_accuracy": sum(s["sop"] for s in stats) / len(data),
        }

    def loss_shares(self, batch: dict, mine: np.ndarray) -> list[float]:
        """The MLM term is averaged over masked tokens, sentence order over rows: each its share."""
        labels = np.array(batch["labels"])
        return [(labels[mine] != -100).sum() / (labels != -100).sum(), mine.size / len(labels)]

    def scaled_loss(self, model, batch: dict, scale: mx.array) -> mx.array:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "sentence_order_label")}
        out = model(**inputs, check_inputs=False)
        labels = at_positions(batch["labels"], batch.get("masked_positions"))
        mlm = cross_entropy(out.prediction_logits, labels)
        return mlm * scale[0] + cross_entropy(out.sop_logits, batch["sentence_order_label"]) * scale[1]


class Pretraining(Task):
    name = "pretraining"
    architecture = "for_pre_training"
    aliases = ("pre-training",)
    export = Export(("prediction_logits", "sop_logits"))
    recipe = PretrainingRecipe()

    def predict(self, model, tokenizer, inputs, **options):
        return fill_mask(model, tokenizer, inputs, **options)


TASK = Pretraining()
