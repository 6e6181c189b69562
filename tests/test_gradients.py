"""Gradients through every custom piece (fast softmax, rational activations) equal transformers'.

Tolerance: PARITY (1e-4) relative to each gradient's largest entry (float32, a few layers), with that scale
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
from tolerances import EPS32, PARITY, U

import mlx_albert
from mlx_albert.weights import mlx_to_hf

LOG2E_ERR = abs(float(np.float32(np.log2(np.e))) / np.log2(np.e) - 1)  # 1.3e-8
EXP_REL = U + LOG2E_ERR  # relative error of exp(t) per unit |t|, besides 8 ulps (test below)
# p_i = e^(t_i) / S with t_i = x_i - max <= 0 and S >= 1: p_i EXP_REL |t_i| <= EXP_REL max(t e^-t)
# = EXP_REL / e; the sum S over the 20 unmasked scores carries at most 20 such errors, relative
SOFTMAX_ERR = EXP_REL / np.e * (1 + 20) + 16 * EPS32


@pytest.mark.parametrize("name", ["factorised", "grouped_deep", "relu_groups"])
def test_softmax_and_activation_gradients_match_exact_ops(name):
    x = mx.linspace(-10, 10, 84).reshape(3, 4, 7)
    from mlx_albert import activations as A

    g = mx.arange(7)
    ours = mx.grad(lambda v: (A.softmax(v) * g).sum())(x)
    ref = mx.grad(lambda v: (mx.softmax(v, axis=-1, precise=True) * g).sum())(x)
    # the gradient p_i (g_i - <g, p>) with each p_j off by at most SOFTMAX_ERR (the test below):
    # |error| <= SOFTMAX_ERR (2 max|g| + sum|g|)
    assert mx.abs(ours - ref).max().item() <= SOFTMAX_ERR * (2 * 6 + 21)
    for act, exact in (
        ("gelu", lambda v: nn.gelu(v)),
        ("gelu_new", lambda v: nn.gelu_approx(v)),
        ("gelu_fast", lambda v: nn.gelu_approx(v)),
        ("silu", nn.silu),
        ("relu", nn.relu),
        ("quick_gelu", lambda v: v * mx.sigmoid(1.702 * v)),
    ):
        g = mx.grad(lambda v, f=A.ACTIVATIONS[act]: f(v).sum())(x)
        # the rational tanh/erf's 4e-7 error scaled by the derivative's growth, at most
        # 0.5 |x| sqrt(2/pi) (1 + 3 * 0.044715 x^2) < 58 for |x| <= 10, plus a few ulps: < 1e-4
        assert mx.abs(g - mx.grad(lambda v, f=exact: f(v).sum())(x)).max().item() < 1e-4, act


def test_exp_and_softmax_accuracy():
    """The bit-built exp (round-to-nearest reduction, Cephes' 2^f on [-0.5, 0.5]) against float64
    over its whole range: relative error < 4e-6 (most of it from rounding x * log2(e) in float32),
    and softmax over masked-like scores within SOFTMAX_ERR of float64 with exact-enough zeros."""
    from mlx_albert import activations as A

    x = mx.linspace(-87.0, 0.0, 400_001)
    xd = np.array(x, np.float64)
    exact = np.exp(xd)
    # y = x log2(e): rounding the product costs u |y| in the exponent, log2(e) as a float32 another
    # LOG2E_ERR |y|, each a relative error of that times ln 2 in 2^y (ln 2 log2(e) = 1); Cephes'
    # polynomial for 2^f (1.7e-7), its six Horner steps and the final product add < 8 ulps
    bound = EXP_REL * np.abs(xd) + 8 * EPS32
    assert (np.abs(np.array(A.exp_nonpositive(x)) - exact) / exact <= bound).all()
    assert np.array(A.exp_nonpositive(mx.array([-1e30, -200.0]))).max() < 2e-38  # underflow, no wrap
    # exactly 0 where exp underflows (padding): a 2^-126 weight made the backward pass subnormal
    assert (np.array(A.exp_nonpositive(mx.array([-1e30, -200.0, -87.5]))) == 0).all()
    scores = np.random.default_rng(0).normal(0, 6, (4, 33)).astype(np.float32)
    scores[:, 20:] = np.finfo(np.float32).min  # padding, as attention_bias adds
    ref = np.exp(scores.astype(np.float64) - scores.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    assert np.abs(np.array(A.softmax(mx.array(scores))) - ref).max() <= SOFTMAX_ERR
    assert (np.array(A.softmax(mx.array(scores)))[:, 20:] == 0).all()


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
    assert abs(loss.item() - ref_loss.item()) <= PARITY * abs(ref_loss.item())
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
        assert err < PARITY, f"{key}: relative error {err:.3g}"


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
    assert np.abs(full - ref).max() <= PARITY * max(np.abs(ref).max(), 1e-6)
