"""sentence-transformers' losses on MLX: each loss's value and the gradients it gives every weight
equal sentence-transformers' own implementation on the same batch and weights (live, against torch);
the cached loss equals the uncached one; a few steps of each lower it."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from sentence_folders import write

from mlx_albert import SentenceEncoder
from mlx_albert.sentence.losses import (
    CachedMultipleNegativesRankingLoss,
    CoSENTLoss,
    CosineSimilarityLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)
from mlx_albert.weights import hf_to_mlx

ANCHORS = ["how do I sort a list", "read a file line by line", "the cat sat", "open a socket", "a b c d e"]
POSITIVES = ["sorted() returns a new list", "iterate over the file object", "a cat on a mat",
             "socket.create_connection", "letters of the alphabet"]  # fmt: skip
NEGATIVES = ["the weather is fine", "dogs bark", "a ship at sea", "rivers run", "numbers"]
SCORES = [0.9, 0.1, 0.5, 0.7, 0.3]
# float32 sums of a few hundred terms, on both sides, relative to each gradient's size
TOL = 1e-5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write(tmp_path_factory.mktemp("st") / "m", ("mean",), "new", dense=16, activation="Tanh")


def _columns(texts_by_column, tokenizer_model):
    """The same token ids for both libraries: sentence-transformers' tokenization."""
    features = [tokenizer_model.tokenize(texts) for texts in texts_by_column]
    keys = ("input_ids", "attention_mask", "token_type_ids")
    ours = [{k: mx.array(f[k].numpy()) for k in keys if k in f} for f in features]
    return features, ours


def _theirs(folder, make_loss, texts_by_column, labels):
    st = pytest.importorskip("sentence_transformers")
    import torch

    model = st.SentenceTransformer(str(folder), device="cpu")
    model.eval()  # (no dropout in the tiny model either way)
    from sentence_transformers import losses

    loss = make_loss(losses, model)
    features, ours = _columns(texts_by_column, model)
    value = loss(features, torch.tensor(labels, dtype=torch.float32) if labels is not None else None)
    value.backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            grads[name] = mx.array(p.grad.numpy())
    prefix = ("0.auto_model.", "0.model.")  # sentence-transformers 5, 6
    transformer = {k.split(".", 2)[2]: v for k, v in grads.items() if k.startswith(prefix)}
    renamed, _ = hf_to_mlx(transformer)
    head = {k: v for k, v in grads.items() if not k.startswith("0.")}
    return float(value.detach()), renamed, head, ours


def _compare(ours_grads, theirs, head):
    """Every weight's gradient: the transformer's by transformers' names, the Dense module's."""
    ours = dict(tree_flatten(ours_grads))
    theirs = {f"model.{k}": v for k, v in theirs.items()}
    theirs.update({f"head.dense.0.{k.rsplit('.', 1)[1]}": v for k, v in head.items()})  # "2.linear.weight"
    assert len(theirs) > 20 and set(theirs) <= set(ours), sorted(set(theirs) - set(ours))
    for name, g in theirs.items():
        scale = max(1.0, float(mx.abs(g).max()))
        assert float(mx.abs(ours[name] - g).max()) <= TOL * scale, name


CASES = {
    "MultipleNegativesRankingLoss": (
        lambda losses, m: losses.MultipleNegativesRankingLoss(m),
        lambda e: MultipleNegativesRankingLoss(e),
        [ANCHORS, POSITIVES, NEGATIVES],
        None,
    ),
    "CachedMultipleNegativesRankingLoss": (
        lambda losses, m: losses.CachedMultipleNegativesRankingLoss(m, mini_batch_size=2),
        lambda e: CachedMultipleNegativesRankingLoss(e, mini_batch_size=2),
        [ANCHORS, POSITIVES, NEGATIVES],
        None,
    ),
    "CoSENTLoss": (
        lambda losses, m: losses.CoSENTLoss(m),
        lambda e: CoSENTLoss(e),
        [ANCHORS, POSITIVES],
        SCORES,
    ),
    "CosineSimilarityLoss": (
        lambda losses, m: losses.CosineSimilarityLoss(m),
        lambda e: CosineSimilarityLoss(e),
        [ANCHORS, POSITIVES],
        SCORES,
    ),
    "MatryoshkaLoss": (
        lambda losses, m: losses.MatryoshkaLoss(m, losses.MultipleNegativesRankingLoss(m), [16, 8, 4]),
        lambda e: MatryoshkaLoss(e, MultipleNegativesRankingLoss(e), [16, 8, 4]),
        [ANCHORS, POSITIVES],
        None,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_value_and_gradients_equal_sentence_transformers(folder, name):
    make_theirs, make_ours, texts, labels = CASES[name]
    value, grads, head, columns = _theirs(folder, make_theirs, texts, labels)
    encoder = SentenceEncoder(str(folder))
    loss, ours = make_ours(encoder).value_and_grad(columns, labels)
    assert abs(float(loss) - value) <= TOL * max(1.0, abs(value))
    _compare(ours, grads, head)


def test_the_cached_loss_is_the_uncached_one(folder):
    """GradCache in mini-batches of 1, 2 and 5 rows, alone and inside MatryoshkaLoss: the uncached
    loss and gradients (float32)."""
    encoder = SentenceEncoder(str(folder))
    columns = [
        {
            "input_ids": mx.array(ids),
            "attention_mask": mx.array(mask),
            "token_type_ids": mx.zeros_like(mx.array(ids)),
        }
        for ids, mask in (_pad(encoder, texts) for texts in (ANCHORS, POSITIVES, NEGATIVES))
    ]
    loss, grads = MultipleNegativesRankingLoss(encoder).value_and_grad(columns)
    for size in (1, 2, 5):
        cached, cached_grads = CachedMultipleNegativesRankingLoss(
            encoder, mini_batch_size=size
        ).value_and_grad(columns)
        assert abs(float(cached) - float(loss)) <= TOL
        for (name, a), (_, b) in zip(tree_flatten(grads), tree_flatten(cached_grads), strict=True):
            assert float(mx.abs(a - b).max()) <= TOL * max(1.0, float(mx.abs(a).max())), (size, name)
    # MatryoshkaLoss around each: GradCache over every width gives the uncached value and gradients
    loss, grads = MatryoshkaLoss(encoder, MultipleNegativesRankingLoss(encoder), [16, 8]).value_and_grad(
        columns
    )
    inner = CachedMultipleNegativesRankingLoss(encoder, mini_batch_size=2)
    cached, cached_grads = MatryoshkaLoss(encoder, inner, [16, 8]).value_and_grad(columns)
    assert abs(float(cached) - float(loss)) <= TOL
    for (name, a), (_, b) in zip(tree_flatten(grads), tree_flatten(cached_grads), strict=True):
        assert float(mx.abs(a - b).max()) <= TOL * max(1.0, float(mx.abs(a).max())), name


def _pad(encoder, texts):
    ids = encoder.tokenize(texts)[0]
    width = max(map(len, ids))
    padded = np.array([row + [encoder.tokenizer.pad_token_id] * (width - len(row)) for row in ids], np.int32)
    mask = np.array([[1] * len(row) + [0] * (width - len(row)) for row in ids], np.int32)
    return padded, mask


@pytest.mark.parametrize("name", ["MultipleNegativesRankingLoss", "CoSENTLoss"])
def test_a_few_steps_lower_each_loss(folder, name):
    import mlx.optimizers as optim

    encoder = SentenceEncoder(str(folder))
    _, make_ours, texts, labels = CASES[name]
    columns = []
    for column in texts:
        ids, mask = _pad(encoder, column)
        columns.append({"input_ids": mx.array(ids), "attention_mask": mx.array(mask),
                        "token_type_ids": mx.zeros(ids.shape, mx.int32)})  # fmt: skip
    loss = make_ours(encoder)
    optimizer = optim.Adam(learning_rate=1e-3)
    first = None
    for _ in range(8):
        value, grads = loss.value_and_grad(columns, labels)
        optimizer.update(loss.trainable, grads)
        mx.eval(loss.trainable.parameters(), optimizer.state)
        first = float(value) if first is None else first
    assert float(loss(columns, labels)) < 0.9 * first
