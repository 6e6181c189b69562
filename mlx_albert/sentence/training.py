"""Sentence-embedding training (`mlx-albert train --task sentence-embedding --loss L`) on the
trainer's callables: sentence-transformers' data conventions (text columns in order; a "label" or
"score" column is the label), its losses (losses.py), the metrics of its
InformationRetrievalEvaluator (pairs) and EmbeddingSimilarityEvaluator (scored pairs), and a
sentence-transformers folder as the result."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..batching import padded_width
from ..checks import finite
from ..metrics import pearson, spearman
from ..records import DataError, read_records
from ..tasks.recipe import Recipe
from ..text import escape
from .losses import (
    LOSSES,
    CachedMultipleNegativesRankingLoss,
    MatryoshkaLoss,
    SentenceLoss,
    Trainable,
    embed,
)

logger = logging.getLogger(__name__)

LABELS = ("label", "score")  # sentence-transformers' names of the label column
LOSS_NAMES = tuple(LOSSES)  # sentence-transformers' class names: `--loss`
SCORED = ("CoSENTLoss", "CosineSimilarityLoss")  # (sentence1, sentence2, score in [0, 1])


@dataclass
class Pairs:
    """A pairs file read: its text columns (in order), each record's texts, and scores."""

    columns: list[str]
    texts: list[list[str]]
    scores: list[float] | None


def read_pairs(path: str | Path, loss: str) -> Pairs:
    """The records of a .jsonl/.csv pairs file for `loss`: the first record's columns are every
    record's; (anchor, positive[, negative ...]) for the ranking losses, (sentence1, sentence2,
    score) for the scored ones. A bad record is a DataError naming file:line."""
    records = read_records(path)
    if not records:
        raise DataError(f"{path}: the file holds no records")
    where, first = records[0]
    keys = list(first)
    label = next((k for k in LABELS if k in keys), None)
    columns = [k for k in keys if k not in LABELS]
    scored = loss in SCORED
    if scored and (label is None or len(columns) != 2):
        raise DataError(
            f"{where}: {loss} takes two text columns and a 'score' (or 'label') column in [0, 1]; "
            f"the record has {keys}"
        )
    if not scored and len(columns) < 2:
        raise DataError(
            f"{where}: {loss} takes (anchor, positive[, negative ...]) text columns; the record has {keys}"
        )
    texts, scores = [], [] if scored else None
    for where, record in records:
        missing = [k for k in keys if k not in record]
        if missing:
            raise DataError(f"{where}: missing column {missing[0]!r} (every record has the first's {keys})")
        extra = [k for k in record if k not in keys]
        if extra:
            raise DataError(f"{where}: unexpected column {escape(extra[0])!r} (the first record has {keys})")
        row = []
        for c in columns:
            value = record[c]
            if not isinstance(value, str) or not value.strip():
                raise DataError(
                    f"{where}: column {c!r} must be a non-empty text, got {escape(repr(value))[:60]}"
                )
            row.append(value)
        texts.append(row)
        if scored:
            scores.append(_score(where, label, record[label]))
    return Pairs(columns, texts, scores)


def _score(where: str, name: str, value) -> float:
    if isinstance(value, str):  # a CSV cell
        try:
            value = float(value)
        except ValueError:
            pass
    if not finite(value):
        raise DataError(f"{where}: {name} must be a number in [0, 1], got {escape(repr(value))[:60]}")
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{where}: {name} {value} is outside [0, 1]: scale the scores to [0, 1]")
    return float(value)


def featurize(pairs: Pairs, encoder, max_length: int, task):
    """A Dataset whose features hold each record's token ids per column (and its score), cut to
    max_length as the encoder tokenizes (prompts none, lower case as the folder says)."""
    from ..tasks import Dataset

    encoder = encoder.with_length(min(max_length, encoder.max_seq_length))
    by_column = [encoder.tokenize([row[c] for row in pairs.texts])[0] for c in range(len(pairs.columns))]
    features = []
    for i in range(len(pairs.texts)):
        feature = {"input_ids": [ids[i] for ids in by_column]}
        if pairs.scores is not None:
            feature["label"] = pairs.scores[i]
        features.append(feature)
    return Dataset(task, features, [{"texts": t} for t in pairs.texts])


def make_loss(name: str, encoder, matryoshka_dims=None, mini_batch_size: int = 32) -> SentenceLoss:
    """sentence-transformers' loss of that class name (its defaults), in MatryoshkaLoss when dims
    are given."""
    if name not in LOSSES:
        raise ValueError(f"--loss must be one of {list(LOSSES)}, got {name!r}")
    if name == "CachedMultipleNegativesRankingLoss":
        loss = LOSSES[name](encoder, mini_batch_size=mini_batch_size)
    else:
        loss = LOSSES[name](encoder)
    return MatryoshkaLoss(encoder, loss, matryoshka_dims) if matryoshka_dims else loss


class Objective:
    """The trainer's loss callable for a sentence loss: loss(model, columns[, scores]). Under
    `mlx.launch` each rank embeds its rows and the embeddings are gathered across ranks before the
    loss (sentence-transformers' gather_across_devices): every anchor meets the global batch's
    negatives. The cached loss brings its own value_and_grad (two passes, so not compiled)."""

    def __init__(self, loss: SentenceLoss, group=None):
        self.sentence_loss = loss
        self.group = group if group is not None and group.size() > 1 else None
        inner = loss.loss if isinstance(loss, MatryoshkaLoss) else loss
        if isinstance(inner, CachedMultipleNegativesRankingLoss):
            if self.group is not None:
                raise ValueError(
                    "CachedMultipleNegativesRankingLoss runs in one process: under mlx.launch use "
                    "MultipleNegativesRankingLoss, whose negatives are gathered across the ranks"
                )
            self.value_and_grad = lambda model, columns, scores=None: loss.value_and_grad(columns, scores)

    def __call__(self, model, columns, scores=None) -> mx.array:
        if self.group is None:
            return self.sentence_loss(columns, scores).astype(mx.float32)
        world = self.group.size()

        def gather(x):
            return mx.distributed.all_gather(x, group=self.group)  # rank order: the global rows

        encoder = self.sentence_loss.encoder
        embeddings = [gather(embed(encoder, c)) for c in columns]
        labels = None if scores is None else gather(scores)
        value = self.sentence_loss.compute_loss_from_embeddings(embeddings, labels).astype(mx.float32)
        # Every rank computes the global loss, its gradient flowing through its own rows only; the
        # trainer sums the ranks' gradients (the whole gradient) and values: each value counts 1/world.
        return value - (world - 1) / world * mx.stop_gradient(value)


def pad_column(rows: list[list[int]], pad_id: int, max_positions: int) -> dict:
    """One column of a batch: (B, W) ids, mask and token types, W rounded up to the backend's
    bucket so compiled steps see few shapes."""
    width = padded_width(max(map(len, rows)), max_positions)
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for r, row in enumerate(rows):
        ids[r, : len(row)], mask[r, : len(row)] = row, 1
    return {
        "input_ids": mx.array(ids),
        "attention_mask": mx.array(mask),
        "token_type_ids": mx.zeros_like(mx.array(mask)),
    }


def batches(data, batch_size: int, seed: int, pad_id: int, max_positions: int, rank: int = 0, world: int = 1):
    """iterate_batches for the trainer: shuffled batches (a permutation per epoch, fixed by the seed,
    as sentence-transformers' default sampler) from micro-batch `start` on, as ((columns[,
    scores]), tokens). Under `mlx.launch`, this rank's share of each global batch (an epoch's last
    batch topped up from the epoch's first rows to split evenly: the gathered shapes must agree)."""
    per_epoch = math.ceil(len(data) / batch_size)
    scored = "label" in data.features[0]

    def iterate(start: int):
        index, order, order_epoch = start, None, None
        while True:
            epoch, position = divmod(index, per_epoch)
            if order_epoch != epoch:
                order, order_epoch = np.random.default_rng([seed, epoch]).permutation(len(data)), epoch
            picked = order[position * batch_size : (position + 1) * batch_size]
            if world > 1:
                picked = np.array_split(np.concatenate([picked, order[: -len(picked) % world]]), world)[rank]
            rows = [data.features[i] for i in picked]
            columns = [
                pad_column([f["input_ids"][c] for f in rows], pad_id, max_positions)
                for c in range(len(rows[0]["input_ids"]))
            ]
            tokens = sum(len(ids) for f in rows for ids in f["input_ids"])
            scores = (mx.array([f["label"] for f in rows], dtype=mx.float32),) if scored else ()
            yield (columns, *scores), tokens
            index += 1

    return iterate


def evaluate(encoder, data, batch_size: int) -> dict:
    """sentence-transformers' evaluators on held-out pairs: scored pairs by the Spearman (and
    Pearson) correlation of cosine similarity with the scores; otherwise information retrieval
    with the anchors as queries, every other column's texts as the corpus and each anchor's
    positive as its relevant document: MRR@10, NDCG@10, Recall@1/5/10, Accuracy@1."""
    texts = [e["texts"] for e in data.examples]
    if "label" in data.features[0]:
        a = encoder.encode([t[0] for t in texts], batch_size=batch_size, normalize_embeddings=True)
        b = encoder.encode([t[1] for t in texts], batch_size=batch_size, normalize_embeddings=True)
        similarity = (np.asarray(a, np.float64) * np.asarray(b, np.float64)).sum(-1)
        scores = np.array([f["label"] for f in data.features])
        return {"spearman": spearman(similarity, scores), "pearson": pearson(similarity, scores)}
    queries = list(dict.fromkeys(t[0] for t in texts))
    corpus = list(dict.fromkeys(x for t in texts for x in t[1:]))
    where = {text: i for i, text in enumerate(corpus)}
    relevant: dict[str, set[int]] = {}
    for t in texts:
        relevant.setdefault(t[0], set()).add(where[t[1]])
    q = np.asarray(encoder.encode(queries, batch_size=batch_size, normalize_embeddings=True), np.float32)
    d = np.asarray(encoder.encode(corpus, batch_size=batch_size, normalize_embeddings=True), np.float32)
    return retrieval_metrics(q @ d.T, [relevant[x] for x in queries])


def retrieval_metrics(scores: np.ndarray, relevant: list[set[int]], k: int = 10) -> dict:
    """InformationRetrievalEvaluator's cosine metrics from a (queries, corpus) score matrix: MRR@k,
    NDCG@k (binary relevance), Recall@1/5/k and Accuracy@1, averaged over queries."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    mrr, ndcg, recall, accuracy = [], [], {1: [], 5: [], k: []}, []
    for ranked, wanted in zip(order, relevant, strict=True):
        hits = [int(doc in wanted) for doc in ranked]
        first = next((i for i, h in enumerate(hits) if h), None)
        mrr.append(0.0 if first is None else 1.0 / (first + 1))
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
        ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(wanted), k)))
        ndcg.append(dcg / ideal)
        for n in recall:
            recall[n].append(sum(hits[:n]) / len(wanted))
        accuracy.append(float(hits[0]))
    out = {f"mrr@{k}": float(np.mean(mrr)), f"ndcg@{k}": float(np.mean(ndcg))}
    out.update({f"recall@{n}": float(np.mean(v)) for n, v in recall.items()})
    out["accuracy@1"] = float(np.mean(accuracy))
    return out


def write_folder(encoder, folder: Path, trainer) -> None:
    """The trained encoder as a sentence-transformers folder (modules.json, Pooling, Dense,
    Normalize and prompts as the base had them): float32 master weights put in and LoRA merged for
    the write only, the training model left as it was."""
    import json
    from dataclasses import asdict

    from ..lora import LoRALinear

    model = trainer.model
    live = model.parameters()
    swapped = []
    try:
        if trainer.master is not None:
            model.update(trainer.master)
        for _, module in model.named_modules():
            for name, child in list(module.children().items()):
                if isinstance(child, LoRALinear):
                    swapped.append((module, name, child))
                    setattr(module, name, child.merged())
        encoder.save(folder)
    finally:
        for module, name, child in swapped:
            setattr(module, name, child)
        model.update(live)
    (folder / "training_args.json").write_text(json.dumps(asdict(trainer.args), indent=2))


def trainable(encoder) -> Trainable:
    """The encoder's weights that train: the backbone and the head's Dense layers; the pooler only
    when the pooling reads it (sentence-transformers' optimizer never steps a weight without a
    gradient, so an unused pooler must not decay either)."""
    module = Trainable(encoder)
    if "pooler" in encoder.backbone and "pooler" not in encoder.head.modes:
        encoder.backbone.pooler.freeze()
    return module


class SentenceRecipe(Recipe):
    """The embed task's training: builds its own Trainer (an encoder, not a task head)."""

    name = "sentence-embedding"

    def trainer(
        self,
        checkpoint,
        base_model: str,
        train_file,
        eval_file,
        args,
        max_length: int,
        loss: str | None = None,
        matryoshka_dims=None,
        mini_batch_size: int = 32,
        task=None,
    ):
        """A Trainer for `loss` on the pairs files, over the checkpoint's SentenceEncoder (its
        sentence-transformers head, float32 weights for AdamW)."""
        from ..training.trainer import Trainer
        from .encoder import SentenceEncoder

        if loss is None:
            raise ValueError(f"--task sentence-embedding needs --loss, one of {list(LOSS_NAMES)}")
        encoder = SentenceEncoder.from_pretrained(checkpoint, dtype=mx.float32)
        train = featurize(read_pairs(train_file, loss), encoder, max_length, task)
        evaluation = featurize(read_pairs(eval_file, loss), encoder, max_length, task) if eval_file else None
        group = mx.distributed.init()
        objective = Objective(make_loss(loss, encoder, matryoshka_dims, mini_batch_size), group)
        pad, limit = encoder.tokenizer.pad_token_id, encoder.backbone.config.max_positions
        share = (group.rank(), group.size())
        return Trainer(
            trainable(encoder),
            encoder.tokenizer,
            args,
            train,
            evaluation,
            base_model,
            loss=objective,
            iterate_batches=batches(train, args.batch_size, args.seed, pad, limit, *share),
            evaluate=lambda data: evaluate(encoder, data, args.eval_batch_size),
            write=lambda folder, trainer: write_folder(encoder, folder, trainer),
            metric="spearman" if loss in SCORED else "ndcg@10",
        )
