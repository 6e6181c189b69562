"""What keeps compilations few and forwards lean: shapeless activation kernels (GPU default), length
buckets, one trace per batch shape of the compiled training step, the fused QKV projection and the
mask-free attention of unpadded batches, all equal to the plain paths."""

import json
import random
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import case_folder, get_case
from oracle import ARCHITECTURES
from tolerances import PARITY, U, forward_tol

import mlx_albert
from mlx_albert import activations as activations
from mlx_albert import batching as buckets
from mlx_albert.model import AlbertModel
from mlx_albert.training import Trainer, TrainingArgs, build, read_records

TINY = Path(__file__).parent.parent / "models" / "tiny-albert"
SHAPES = [(2, 8, 64), (4, 16, 64), (1, 3, 128), (2, 8, 64)]


@pytest.mark.parametrize("shapeless", [True, False])
def test_activation_kernels_trace_once_when_shapeless(shapeless, monkeypatch):
    """Shapeless (the GPU default): one trace for every shape; per shape otherwise (the CPU default,
    whose kernels run ~2x faster with the sizes built in). Both equal the uncompiled function."""
    monkeypatch.setattr(activations, "SHAPELESS", shapeless)
    monkeypatch.setattr(activations, "TRACES", activations.TRACES.__class__())
    fn = activations._fused(activations.gelu_new)  # fresh compile caches, as the library builds them
    for shape in SHAPES:
        x = mx.random.normal(shape)
        # the same rational function in two evaluation schemes (Estrin, Horner): ~2 x 11 operations on
        # values within [-1, 1], each rounded within u, scaled by the outer 0.5 x (1 + r)
        bound = 32 * U * (1 + mx.abs(x))
        assert mx.all(mx.abs(fn(x) - activations.gelu_new(x)) <= bound).item()
    distinct = len(set(SHAPES))
    assert activations.TRACES["gelu_new"] == (1 if shapeless else distinct)


def test_default_shapeless_only_off_the_cpu():
    assert activations.SHAPELESS is None
    before = activations.TRACES["silu"]
    fn = activations._fused(activations.silu)
    for shape in SHAPES:
        fn(mx.random.normal(shape))
    traced = activations.TRACES["silu"] - before
    assert traced == (len(set(SHAPES)) if mx.default_device() == mx.cpu else 1)


def test_length_buckets(monkeypatch):
    assert buckets.pad_multiple() == (8 if mx.default_device() == mx.cpu else 32)
    monkeypatch.setattr(buckets, "pad_multiple", lambda: 32)  # the GPU rule
    widths = {buckets.padded_width(n, 128) for n in range(1, 129)}
    assert widths == {32, 64, 96, 128}
    assert buckets.padded_width(100, 100) == 100  # never past max_positions
    assert buckets.padded_width(120, 100) == 120  # nor below the longest (the model refuses it)


def test_compiled_training_step_traces_once_per_batch_shape(tmp_path, monkeypatch):
    """mx.compile retraces the step only for a batch shape it has not seen: the forward runs once
    per distinct (batch, width), however many steps reuse it."""
    folder = TINY
    rng = random.Random(0)
    words = ["cat", "dog", "river", "sea", "bird", "hill"]
    rows = [
        {"text": " ".join(rng.choices(words, k=rng.randint(2, 40))), "label": str(i % 2)} for i in range(48)
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = mlx_albert.AlbertTokenizer.from_pretrained(folder)
    model = mlx_albert.load(folder, "for_sequence_classification", num_labels=2)
    train = build("sequence_classification", read_records(path), tok, 64, {"0": 0, "1": 1})
    args = TrainingArgs(output_dir=str(tmp_path / "run"), batch_size=5, progress=False, compile=True)
    trainer = Trainer(model, tok, args, train)
    calls = []
    forward = AlbertModel.__call__
    monkeypatch.setattr(
        AlbertModel, "__call__", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k)
    )
    shapes = []
    for i in range(3 * trainer.batches_per_epoch):  # three epochs: every shape comes back
        (batch,) = trainer._micro_batch(i)
        shapes.append(tuple(batch["input_ids"].shape))
        trainer._step([(batch,)])
    assert len(calls) == len(set(shapes)) < len(shapes) / 2
    assert all(w % buckets.pad_multiple() == 0 or w == 64 for _, w in shapes)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fused_qkv_equals_transformers(arch, tmp_path):
    """The one-matmul q/k/v projection (tolerance as test_parity: PARITY) on every architecture."""
    case = get_case("factorised", arch, "golden")
    model = mlx_albert.load(case_folder(case, tmp_path))
    model.apply_to_modules(lambda _, m: setattr(m, "fuse_qkv", True) if hasattr(m, "fuse_qkv") else None)
    names = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
    out = model(**{k: v for k, v in case["inputs"].items() if k in names})
    for key, ref in case["outputs"].items():
        field = key.split(".")[0]
        if "." in key or field not in out.__dataclass_fields__ or field == "loss" or out[field] is None:
            continue
        err = np.abs(np.array(out[field].astype(mx.float32)) - ref).max()
        assert err <= PARITY, f"{arch} {key}: {err:.3g}"


def test_unpadded_batches_run_without_a_mask(monkeypatch):
    """No attention_mask -> no bias is built at all, and the result equals an all-ones mask."""
    import mlx_albert.model as model_module

    model = AlbertModel(
        mlx_albert.AlbertConfig(
            vocab_size=50,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            embedding_size=16,
            max_positions=16,
        )
    )
    ids = mx.array(np.random.default_rng(0).integers(5, 50, (3, 12)))
    with_mask = model(ids, attention_mask=mx.ones_like(ids)).last_hidden_state
    monkeypatch.setattr(model_module, "attention_bias", lambda *a: pytest.fail("built a bias"))
    # a mask of ones adds a zero bias to every score, which changes no bit
    assert mx.array_equal(model(ids).last_hidden_state, with_mask)


def test_pipelines_drop_the_mask_of_unpadded_batches_with_the_same_result(monkeypatch):
    """A batch whose rows fill its width exactly runs mask-free; mean pooling then averages every
    position, equal to the masked mean of the same text inside a padded batch."""
    tok = mlx_albert.AlbertTokenizer.from_pretrained(TINY)
    candidates = [
        " ".join(["the cat sees a dog"] * n + ["by the river"] * m) for n in range(1, 6) for m in range(4)
    ]
    text = next(t for t in candidates if len(tok.encode([t])[0][0].ids) % buckets.pad_multiple() == 0)
    embed = mlx_albert.pipeline("embed", TINY, pooling="mean")
    seen = []
    forward = AlbertModel.__call__
    monkeypatch.setattr(
        AlbertModel,
        "__call__",
        lambda self, *a, **k: seen.append(k.get("attention_mask")) or forward(self, *a, **k),
    )
    alone = np.array(embed(text))
    assert seen[-1] is None
    batched = np.array(embed([text + " and the sea", text])[1])
    assert seen[-1] is not None
    # another batch and width: the same sums in another order (unit vectors: scale 1)
    assert np.abs(alone - batched).max() <= forward_tol(embed.model.config, 2 * len(text.split()))


@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "silu"])
def test_gradients_through_shapeless_kernels_equal_the_per_shape_ones(activation, monkeypatch):
    """The GPU default (shapeless forward and backward kernels), run on this backend: the same loss
    and gradients as the per-shape kernels, over batches of several shapes."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    config = mlx_albert.AlbertConfig(
        vocab_size=60, hidden_size=32, num_attention_heads=4, intermediate_size=64,
        embedding_size=16, max_positions=32, activation=activation,
    )  # fmt: skip
    mx.random.seed(0)
    model = mlx_albert.AlbertForMaskedLM(config)
    grad = nn.value_and_grad(model, lambda m, ids: m(ids, labels=ids).loss)
    for shape in [(2, 8), (3, 16)]:
        ids = mx.random.randint(5, 60, shape)
        results = []
        for shapeless in (True, False):
            monkeypatch.setattr(activations, "SHAPELESS", shapeless)
            loss, grads = grad(model, ids)
            results.append((loss.item(), dict(tree_flatten(grads))))
        (a, ga), (b, gb) = results
        # the same operations, compiled with or without the sizes: at most reordered (a forward for
        # the loss, forward and backward for the gradients)
        assert abs(a - b) <= forward_tol(config, shape[1], scale=abs(b))
        scale = max(mx.abs(g).max().item() for g in gb.values())
        assert max(mx.abs(ga[k] - gb[k]).max().item() for k in ga) <= forward_tol(config, 16, scale, 3)


def test_staged_activations_match_float64_to_the_approximation_error():
    """The two-kernel rational activations against float64: within 4e-7 * (1 + |x|) (the rational
    tanh and erf are within ~4e-7 of the exact functions; the outer x * (...) scales that by |x|),
    exactly saturated far out, and a bfloat16 input gives bfloat16 within its rounding."""
    import math

    x = mx.array(np.concatenate([np.linspace(-40, 40, 40_001), [1e4, -1e4, 0.0]]).astype(np.float32))
    xd = np.array(x, np.float64)
    erf = np.vectorize(math.erf)
    sig = 0.5 * (1 + np.tanh(0.5 * xd))  # 1 / (1 + exp(-x)), without overflow
    exact = {
        "gelu": 0.5 * xd * (1 + erf(xd / math.sqrt(2))),
        "gelu_new": 0.5 * xd * (1 + np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3))),
        "gelu_fast": 0.5 * xd * (1 + np.tanh(xd * 0.7978845608 * (1 + 0.044715 * xd * xd))),
        "quick_gelu": xd * 0.5 * (1 + np.tanh(0.851 * xd)),
        "silu": xd * sig,
        "sigmoid": sig,
        "tanh": np.tanh(xd),
    }
    assert set(exact) == set(activations._STAGES)
    for name, ref in exact.items():
        got = np.array(activations.ACTIVATIONS[name](x), np.float64)
        assert (np.abs(got - ref) <= 4e-7 * (1 + np.abs(xd))).all(), name
        assert np.array_equal(got[-3:], ref[-3:].round(6)), name  # +-1e4 and 0: exact
        half = x.astype(mx.bfloat16)
        out = activations.ACTIVATIONS[name](half)
        assert out.dtype == mx.bfloat16
        full = np.array(activations.ACTIVATIONS[name](half.astype(mx.float32)))  # float32, then rounded:
        assert (np.abs(np.array(out.astype(mx.float32)) - full) <= 2**-8 * np.abs(full)).all(), name


@pytest.mark.parametrize("mask", ["none", "padding", "pairwise"])
def test_deferred_attention_equals_the_explicit_path(mask, monkeypatch):
    """CPU inference divides by the softmax sums after `@ v` (the sums from a ones column, the scale
    inside the exp): equal to the explicit softmax path (taken for output_attentions) to rounding,
    also in query chunks, and its gradients in eval mode equal the training path's."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    import mlx_albert.attention as model_module

    config = mlx_albert.AlbertConfig(
        vocab_size=50, hidden_size=32, num_attention_heads=4, intermediate_size=64,
        embedding_size=16, max_positions=16, dropout_rate=0.0, attention_dropout_rate=0.0,
    )  # fmt: skip
    mx.random.seed(0)
    model = AlbertModel(config)
    model.eval()
    rng = np.random.default_rng(0)
    ids = mx.array(rng.integers(5, 50, (3, 12)))
    attention = {
        "none": None,
        "padding": mx.array([[1] * 12, [1] * 7 + [0] * 5, [1] * 3 + [0] * 9]),
        "pairwise": mx.array(rng.random((3, 12, 12)) < 0.6) | mx.eye(12, dtype=mx.bool_),
    }[mask]
    explicit = model(ids, attention_mask=attention, output_attentions=True).last_hidden_state
    deferred = model(ids, attention_mask=attention).last_hidden_state
    # the softmax's division moved after `@ v` and its sums taken by a matmul: a reordering
    tol = forward_tol(config, 12, scale=mx.abs(explicit).max().item())
    assert mx.abs(deferred - explicit).max().item() <= tol
    # 5 queries a chunk: (batch, heads, keys, bytes) * 5
    monkeypatch.setattr(model_module.AlbertAttention, "SCORES_BUDGET", 3 * 4 * 12 * 4 * 5)
    assert mx.abs(model(ids, attention_mask=attention).last_hidden_state - explicit).max().item() <= tol

    weights = mx.random.normal(explicit.shape)
    loss = nn.value_and_grad(
        model, lambda m: (m(ids, attention_mask=attention).last_hidden_state * weights).sum()
    )
    _, eval_grads = loss(model)  # the deferred path
    model.train()  # dropout 0: the explicit softmax path with its own gradient
    _, train_grads = loss(model)
    a, b = dict(tree_flatten(eval_grads)), dict(tree_flatten(train_grads))
    scale = max(mx.abs(g).max().item() for g in b.values())
    assert max(mx.abs(a[k] - b[k]).max().item() for k in b) <= forward_tol(config, 12, scale, passes=3)
