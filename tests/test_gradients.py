"""Gradients through every custom piece (fast softmax, rational activations) equal transformers'.

Tolerance: 1e-4 relative to each gradient's largest entry (float32, a few layers), with that scale
floored at 1e-3 of the model's largest gradient. Gradients that are analytically zero (the QA and
multiple-choice biases: softmax minus one-hot sums to 0 over positions/choices) hold only float32
summation noise (~1e-8) in both frameworks: there both must stay below a floor of 16 float32 ulps
of the loss (plus 1e-6 of the largest gradient), which GPU reduction orders also meet."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import case_folder, get_case, needs_torch
from mlx.utils import tree_flatten

import mlx_albert
from mlx_albert.weights import mlx_to_hf


@pytest.mark.parametrize("name", ["factorised", "grouped_deep", "relu_groups"])
def test_softmax_and_activation_gradients_match_exact_ops(name):
    x = mx.random.normal((3, 4, 7)) * 4
    from mlx_albert import activations as A

    ours = mx.grad(lambda v: (A.softmax(v) * mx.arange(7)).sum())(x)
    ref = mx.grad(lambda v: (mx.softmax(v, axis=-1, precise=True) * mx.arange(7)).sum())(x)
    assert mx.abs(ours - ref).max().item() < 1e-5
    for act, exact in (
        ("gelu", lambda v: nn.gelu(v)),
        ("gelu_new", lambda v: nn.gelu_approx(v)),
        ("gelu_fast", lambda v: nn.gelu_approx(v)),
        ("silu", nn.silu),
        ("relu", nn.relu),
        ("quick_gelu", lambda v: v * mx.sigmoid(1.702 * v)),
    ):
        g = mx.grad(lambda v, f=A.ACTIVATIONS[act]: f(v).sum())(x)
        assert mx.abs(g - mx.grad(lambda v, f=exact: f(v).sum())(x)).max().item() < 1e-4, act


def test_exp_and_softmax_accuracy():
    """The bit-built exp (round-to-nearest reduction, Cephes' 2^f on [-0.5, 0.5]) against float64
    over its whole range: relative error < 4e-6 (most of it from rounding x * log2(e) in float32),
    and softmax over masked-like scores within 1e-6 of float64 with exact-enough zeros."""
    from mlx_albert import activations as A

    x = mx.linspace(-87.0, 0.0, 400_001)
    exact = np.exp(np.array(x, np.float64))
    assert (np.abs(np.array(A.exp_nonpositive(x)) - exact) / exact).max() < 4e-6
    assert np.array(A.exp_nonpositive(mx.array([-1e30, -200.0]))).max() < 2e-38  # underflow, no wrap
    scores = np.random.default_rng(0).normal(0, 6, (4, 33)).astype(np.float32)
    scores[:, 20:] = np.finfo(np.float32).min  # padding, as attention_bias adds
    ref = np.exp(scores.astype(np.float64) - scores.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    assert np.abs(np.array(A.softmax(mx.array(scores))) - ref).max() < 1e-6


@needs_torch
@pytest.mark.parametrize(
    "arch",
    [
        "AlbertForMaskedLM",
        "AlbertForSequenceClassification",
        "AlbertForTokenClassification",
        "AlbertForQuestionAnswering",
        "AlbertForMultipleChoice",
        "AlbertForPreTraining",
    ],
)
def test_parameter_gradients_match_transformers(arch, tmp_path):
    import torch
    import transformers

    case = get_case("grouped_deep", arch, "golden")
    folder = case_folder(case, tmp_path)
    inputs = {
        k: v
        for k, v in case["inputs"].items()
        if k
        in (
            "input_ids",
            "attention_mask",
            "token_type_ids",
            "position_ids",
            "labels",
            "sentence_order_label",
            "start_positions",
            "end_positions",
        )
    }
    hf = getattr(transformers, arch).from_pretrained(folder, attn_implementation="eager").eval()
    ref_loss = hf(**{k: torch.tensor(v) for k, v in inputs.items()}).loss
    ref_loss.backward()
    ref = {k: p.grad.numpy() for k, p in hf.named_parameters() if p.grad is not None}

    model = mlx_albert.load(folder)
    loss_and_grad = nn.value_and_grad(model, lambda m: m(**inputs).loss)
    loss, grads = loss_and_grad(model)
    assert abs(loss.item() - ref_loss.item()) <= 1e-4 * abs(ref_loss.item())
    grads = mlx_to_hf(dict(tree_flatten(grads)))
    if "predictions.bias" in grads:  # transformers splits the tied bias gradient across two names
        ref["predictions.bias"] = ref["predictions.bias"] + ref.pop("predictions.decoder.bias", 0)
    assert set(grads) == set(ref)
    largest = max(np.abs(v).max() for v in ref.values())
    floor = 1e-3 * largest
    # An analytically zero gradient (softmax minus one-hot summed over positions or choices) holds
    # only float32 rounding residue, which scales with the loss it came from, not with the largest
    # gradient: 16 ulps of the loss (GPU reductions sum in other orders than the CPU's).
    noise = 1e-6 * largest + 16 * np.finfo(np.float32).eps * max(abs(ref_loss.item()), 1.0)
    for key, g in grads.items():
        if np.abs(ref[key]).max() < noise:  # analytically zero: both must be float32 noise
            assert np.abs(np.array(g)).max() < noise, key
            continue
        scale = max(np.abs(ref[key]).max(), floor)
        err = np.abs(np.array(g) - ref[key]).max() / scale
        assert err < 1e-4, f"{key}: relative error {err:.3g}"


@pytest.mark.parametrize("arch", ["AlbertForSequenceClassification", "AlbertForMaskedLM"])
def test_pad_token_lookups_train_no_embedding_row(arch, tmp_path):
    """transformers builds the word embedding with padding_idx = pad_token_id: a pad token in the input
    gives its row no gradient (the MLM decoder's tied use of the row still does)."""
    case = get_case("grouped_deep", arch, "golden")
    folder = case_folder(case, tmp_path)
    model = mlx_albert.load(folder)
    pad = model.config.pad_token_id
    ids = np.array(case["inputs"]["input_ids"])
    ids[:, 1::3] = pad  # pad ids inside the attended text, as fine-tuning data can hold
    inputs = {"input_ids": ids, "labels": np.array(case["inputs"]["labels"])}
    grads = dict(tree_flatten(nn.value_and_grad(model, lambda m: m(**inputs).loss)(model)[1]))
    row = np.array(grads["albert.embeddings.word_embeddings.weight"])[pad]
    if arch == "AlbertForSequenceClassification":
        assert np.abs(row).max() == 0.0
    else:
        assert np.abs(row).max() > 0  # the tied decoder's contribution stays
    try:
        import torch
        import transformers
    except ImportError:
        return
    hf = getattr(transformers, arch).from_pretrained(folder, attn_implementation="eager").eval()
    hf(**{k: torch.tensor(v) for k, v in inputs.items()}).loss.backward()
    ref = hf.albert.embeddings.word_embeddings.weight.grad.numpy()
    full = np.array(grads["albert.embeddings.word_embeddings.weight"])
    assert np.abs(full - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1e-6)
