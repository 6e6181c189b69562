"""The suite's float tolerances, each derived from float32 arithmetic, never measured on one machine.

Three kinds of comparison occur:

* Two evaluations of the same float32 computation that differ only in the order of their sums: another
  batch size or padding width lets the BLAS block a product differently, packed rows and chunked queries
  reduce in other groups, ranks sum halves of a batch, a compiled graph fuses differently. Rounding is
  the whole difference. `reorder_tol` bounds it with the probabilistic model of Higham & Mary (SIAM J.
  Sci. Comput. 41(5), 2019): rounding errors are independent, mean zero and at most u relative each, so a
  result reached through `depth` sums of at most `terms` terms has an error of standard deviation at
  most sqrt(terms * depth) * u * scale (scale: the size of the terms summed; LayerNorm keeps hidden states
  near 1). The difference of two evaluations has sqrt(2) times that, and LAMBDA = 6 standard deviations
  are exceeded with probability below 2e-9.
* Another implementation (transformers on torch): other kernels and our rational erf/tanh/exp
  (< 4e-7 relative) besides the reordering. `PARITY` is the project's stated bound for float32 parity.
* Closed forms against their float32 evaluation: a few ulps of the value, `ulps`.
"""

from __future__ import annotations

import math

import numpy as np

U = 2.0**-24  # float32 unit roundoff: half an ulp of 1.0
EPS32 = float(np.finfo(np.float32).eps)  # one ulp of 1.0 (2u)
LAMBDA = 6.0  # standard deviations: exceeded with probability < 2e-9
PARITY = 1e-4  # float32 parity with transformers (the project's standard, README)


def reorder_tol(terms: int, depth: int, scale: float = 1.0) -> float:
    """|a - b| for two float32 evaluations that differ only in summation order (see the module doc)."""
    return LAMBDA * math.sqrt(2 * terms * depth) * U * scale


def model_depth(config) -> int:
    """Sums one after another in a forward pass: 9 per transformer layer (q/k/v projections, scores,
    softmax, attention x values, output projection, LayerNorm, FFN in, FFN out, LayerNorm), plus the
    embeddings' LayerNorm and projection and a head's two (pooler or dense, classifier or decoder)."""
    return 9 * config.num_blocks * config.block_depth + 4


def model_terms(config, seq: int) -> int:
    """The longest sum of a forward pass: an FFN row, a projection row, or attention over `seq` keys."""
    return max(config.intermediate_size, config.hidden_size, config.embedding_size, seq)


def forward_tol(config, seq: int, scale: float = 1.0, passes: int = 1) -> float:
    """reorder_tol for outputs of `passes` forward passes of `config`'s model over `seq` tokens
    (a backward pass counts as two: it sums over the same sizes, once for inputs, once for weights)."""
    return reorder_tol(model_terms(config, seq), passes * model_depth(config), scale)


def ulps(value: float, n: int = 4) -> float:
    """n float32 ulps of `value`: the error of a closed form evaluated in a few float32 operations."""
    return n * EPS32 * max(abs(value), np.finfo(np.float32).tiny)


def unit_norm_tol(dim: int) -> float:
    """| |v| - 1 | for a float32 vector scaled to unit norm and measured again: two sums of `dim`
    squares, each within dim * u relative in the worst case (Higham, eq. 3.5), plus the square roots
    and the division (a few u): at most (dim + 4) ulps of 1."""
    return (dim + 4) * EPS32


def adam_tol(
    grads: list[np.ndarray],
    errors: list[np.ndarray | float],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> np.ndarray:
    """Elementwise bound on how far apart two runs of len(grads) AdamW steps leave a weight when
    step t's gradient is grads[t] on one side and within errors[t] of it on the other (rounding, or
    another implementation), to first order (the weights' own small differences feeding back into
    later gradients are left out).

    Step t moves a weight by lr * m / (sqrt(v) + eps) with bias-corrected averages m = sum a_s g_s
    and v = sum c_s g_s^2. Perturbing every g_s by at most e_s moves m by at most M = sum a_s e_s
    and sqrt(v) by at most S = sqrt(sum c_s e_s^2) (Minkowski), so the step lies within
    [(|m| - M) / (sqrt(v) + S + eps), (|m| + M) / (max(sqrt(v) - S, 0) + eps)] (the lower end over the
    smaller denominator where |m| - M < 0: the sign may flip) around |m| / (sqrt(v) + eps):
    a gradient far above its error moves by about its relative error, one at rounding level (an
    analytically zero gradient) by up to the step's own bound sqrt(sum a_s^2 / c_s) (Cauchy-Schwarz)
    on either side."""
    b1, b2 = betas
    total = np.zeros_like(np.asarray(grads[0], np.float64))
    for t in range(1, len(grads) + 1):
        a = [(1 - b1) * b1 ** (t - s) / (1 - b1**t) for s in range(1, t + 1)]
        c = [(1 - b2) * b2 ** (t - s) / (1 - b2**t) for s in range(1, t + 1)]
        g = [np.asarray(x, np.float64) for x in grads[:t]]
        e = [np.broadcast_to(np.asarray(x, np.float64), g[0].shape) for x in errors[:t]]
        m = np.abs(sum(ai * gi for ai, gi in zip(a, g, strict=False)))
        root = np.sqrt(sum(ci * gi**2 for ci, gi in zip(c, g, strict=False)))
        big_m = sum(ai * ei for ai, ei in zip(a, e, strict=False))
        big_s = np.sqrt(sum(ci * ei**2 for ci, ei in zip(c, e, strict=False)))
        step = m / (root + eps)
        smallest = np.maximum(root - big_s, 0) + eps  # the other side's denominators
        high = (m + big_m) / smallest
        low = np.where(m >= big_m, (m - big_m) / (root + big_s + eps), (m - big_m) / smallest)
        most = math.sqrt(sum(ai**2 / ci for ai, ci in zip(a, c, strict=False)))  # |m| / sqrt(v) <= most
        total += lr * np.minimum(np.maximum(high - step, step - low), 2 * most)
    return total


def quantization_rms(bits: int, group_size: int) -> float:
    """RMS error of MLX's affine quantization of a group of normally distributed weights, relative to
    their standard deviation: a group of g spans about 2 sqrt(2 ln g) standard deviations (the
    expected extremes of g normal samples), cut into 2^bits - 1 steps, and rounding to the nearest
    step errs uniformly over a step: step / sqrt(12)."""
    span = 2 * math.sqrt(2 * math.log(group_size))
    return span / (2**bits - 1) / math.sqrt(12)


def min_cosine(relative_rms: float, layers: int) -> float:
    """Cosine similarity an output keeps when each of `layers` weight matrices on its path adds an
    independent relative error of `relative_rms`: errors add in quadrature to r = relative_rms *
    sqrt(layers), and the cosine of a vector with one perpendicular to it of relative size 2r (twice
    the RMS: a margin for the estimate) is 1 / sqrt(1 + 4 r^2) >= 1 - 2 r^2."""
    r = relative_rms * math.sqrt(layers)
    return 1 - 2 * r * r
