"""sentence-transformers' training losses on MLX, as small objects over an encoder: each computes
its value from the columns' embeddings (`compute_loss_from_embeddings`, sentence-transformers'
name) and gives the loss and the gradients of the trainable weights (`value_and_grad`).
CachedMultipleNegativesRankingLoss is GradCache: the same loss and gradients as the uncached one,
in the memory of one mini-batch."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from ..losses import cross_entropy


def cos_sim(a: mx.array, b: mx.array) -> mx.array:
    """(N, M) cosine similarity (sentence-transformers' util.cos_sim: rows scaled to unit norm)."""
    a = a / mx.maximum(mx.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / mx.maximum(mx.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


def pairwise_cos_sim(a: mx.array, b: mx.array) -> mx.array:
    """(N,) cosine similarity of row i of a with row i of b (torch.cosine_similarity's eps 1e-8)."""
    dot = (a * b).sum(axis=-1)
    return dot / mx.maximum(mx.linalg.norm(a, axis=-1) * mx.linalg.norm(b, axis=-1), 1e-8)


def embed(encoder, features: dict) -> mx.array:
    """A column's sentence embeddings, differentiable: the backbone over padded input_ids (with its
    attention_mask, token_type_ids) and the encoder's pooling, Dense and Normalize head."""
    backbone = encoder.backbone
    states = backbone(**features, check_inputs=False).last_hidden_state
    pooler = backbone.pool if "pooler" in backbone else None
    return encoder.head(states, features["attention_mask"], 0, pooler)


class Trainable(nn.Module):
    """What a sentence loss trains: the encoder's model and its head (Dense layers), as one module
    whose parameters are {"model": ..., "head": ...}."""

    def __init__(self, encoder):
        super().__init__()
        self.model, self.head = encoder.model, encoder.head

    @property
    def backbone(self):
        return self.model.backbone

    @property
    def config(self):
        return self.model.config


class SentenceLoss:
    """A loss over the embeddings of a batch's columns (anchor, positive, negatives...)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.trainable = Trainable(encoder)

    def compute_loss_from_embeddings(self, embeddings: Sequence[mx.array], labels=None) -> mx.array:
        raise NotImplementedError

    def __call__(self, columns: Sequence[dict], labels=None) -> mx.array:
        return self.compute_loss_from_embeddings([embed(self.encoder, c) for c in columns], labels)

    def value_and_grad(self, columns: Sequence[dict], labels=None) -> tuple[mx.array, dict]:
        """(loss, gradients of the trainable parameters: {"model": ..., "head": ...})."""
        step = nn.value_and_grad(self.trainable, lambda _: self(columns, labels))
        return step(self.trainable)


class MultipleNegativesRankingLoss(SentenceLoss):
    """In-batch negatives (sentence-transformers' defaults: query_to_doc, cosine, scale 20): each
    anchor's positive against every positive and negative of the batch, by cross-entropy."""

    def __init__(self, encoder, scale: float = 20.0):
        super().__init__(encoder)
        self.scale = scale

    def compute_loss_from_embeddings(self, embeddings, labels=None) -> mx.array:
        if len(embeddings) < 2:
            raise ValueError(f"{type(self).__name__} needs (anchor, positive[, negative ...]) columns")
        anchors, candidates = embeddings[0], mx.concatenate(list(embeddings[1:]), axis=0)
        scores = cos_sim(anchors, candidates) * self.scale  # (B, B * (columns - 1))
        return cross_entropy(scores, mx.arange(anchors.shape[0]))


class CachedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """GradCache: embeddings computed mini-batch by mini-batch without a graph, the loss's gradient
    with respect to them taken once, then each mini-batch run again and backpropagated with its
    share of that gradient. The random state of each mini-batch is replayed, so dropout draws the
    same masks in both passes."""

    def __init__(self, encoder, scale: float = 20.0, mini_batch_size: int = 32):
        super().__init__(encoder, scale)
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        self.mini_batch_size = mini_batch_size

    def _pieces(self, column: dict) -> list[dict]:
        rows, size = column["input_ids"].shape[0], self.mini_batch_size
        return [{k: v[i : i + size] for k, v in column.items()} for i in range(0, rows, size)]

    def value_and_grad(self, columns, labels=None, compute=None):
        """(loss, gradients) in two passes; `compute`: the loss of the embeddings (default this
        loss's; MatryoshkaLoss passes its own)."""
        compute = compute or self.compute_loss_from_embeddings
        model = self.trainable
        pieces = [self._pieces(c) for c in columns]
        base = int(mx.random.randint(0, 1 << 30, ()).item())  # each piece's seed: base + its number
        seeds, embeddings = iter(range(base, base + sum(map(len, pieces)))), []
        for column in pieces:  # pass 1: no graph kept, one mini-batch in memory at a time
            parts = []
            for piece in column:
                mx.random.seed(next(seeds))
                parts.append(mx.stop_gradient(embed(self.encoder, piece)))
                mx.eval(parts[-1])
            embeddings.append(mx.concatenate(parts, axis=0))
        loss, cotangents = mx.value_and_grad(lambda e: compute(e, labels))(embeddings)
        grads, replay = None, iter(range(base, base + sum(map(len, pieces))))
        for column, cotangent in zip(pieces, cotangents, strict=True):  # pass 2: each piece's share
            start = 0
            for piece in column:
                rows = piece["input_ids"].shape[0]
                share = cotangent[start : start + rows]
                start += rows
                mx.random.seed(next(replay))  # the same dropout masks as in pass 1

                def surrogate(_, piece=piece, share=share):
                    return (embed(self.encoder, piece) * share).sum()

                _, g = nn.value_and_grad(model, surrogate)(model)
                grads = g if grads is None else tree_map(mx.add, grads, g)
                mx.eval(grads)
        return loss, grads


class CoSENTLoss(SentenceLoss):
    """(sentence1, sentence2, score) pairs: log(1 + sum over pairs ranked wrongly of
    exp(scale * (s_low - s_high))), sentence-transformers' CoSENT with scale 20."""

    def __init__(self, encoder, scale: float = 20.0):
        super().__init__(encoder)
        self.scale = scale

    def compute_loss_from_embeddings(self, embeddings, labels) -> mx.array:
        scores = pairwise_cos_sim(embeddings[0], embeddings[1]) * self.scale
        labels = mx.array(labels).reshape(-1)
        wrong = labels[:, None] < labels[None, :]  # pair i should score below pair j
        differences = mx.where(wrong, scores[:, None] - scores[None, :], -mx.inf).reshape(-1)
        return mx.logsumexp(mx.concatenate([mx.zeros((1,)), differences]))


class CosineSimilarityLoss(SentenceLoss):
    """(sentence1, sentence2, score) pairs: mean squared error of their cosine to the score."""

    def compute_loss_from_embeddings(self, embeddings, labels) -> mx.array:
        cosine = pairwise_cos_sim(embeddings[0], embeddings[1])
        return mx.mean(mx.square(cosine - mx.array(labels, mx.float32).reshape(-1)))


class MatryoshkaLoss(SentenceLoss):
    """Any loss above at each of `dims` (weights default 1): the embeddings cut to the first d
    dimensions and scaled to unit norm, as sentence-transformers' MatryoshkaLoss does, so
    `truncate_dim` vectors stay good."""

    def __init__(
        self, encoder, loss: SentenceLoss, dims: Sequence[int], weights: Sequence[float] | None = None
    ):
        super().__init__(encoder)
        self.loss, self.dims = loss, list(dims)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.dims)
        if not self.dims or len(self.weights) != len(self.dims) or any(d < 1 for d in self.dims):
            raise ValueError(f"matryoshka dims must be positive, one weight each; got {dims} and {weights}")

    def value_and_grad(self, columns, labels=None):
        if isinstance(self.loss, CachedMultipleNegativesRankingLoss):  # GradCache over every width
            return self.loss.value_and_grad(columns, labels, self.compute_loss_from_embeddings)
        return super().value_and_grad(columns, labels)

    def compute_loss_from_embeddings(self, embeddings, labels=None) -> mx.array:
        width = embeddings[0].shape[-1]
        if max(self.dims) > width:
            raise ValueError(f"matryoshka dimension {max(self.dims)} is over the model's {width}")
        total = mx.array(0.0)
        for dim, weight in zip(self.dims, self.weights, strict=True):
            cut = [_unit(e[..., :dim]) for e in embeddings]
            total = total + weight * self.loss.compute_loss_from_embeddings(cut, labels)
        return total


def _unit(x: mx.array) -> mx.array:
    return x / mx.maximum(mx.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


LOSSES = {
    cls.__name__: cls
    for cls in (
        MultipleNegativesRankingLoss,
        CachedMultipleNegativesRankingLoss,
        CoSENTLoss,
        CosineSimilarityLoss,
    )
}
