"""The model's element-wise kernels: activation functions by transformers name, softmax and the
exp under it. MLX's CPU backend evaluates transcendental ops ~100x slower than a BLAS-backed matmul,
so tanh, erf and exp are built from mul/add/div/clip: rational approximations (Eigen's float tanh
and erf, within 4e-7) and a bit-built exp (within 4e-6 relative), all through one polynomial
evaluator, compiled into two kernels per activation on every backend (`_staged`)."""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Callable

import mlx.core as mx

# Coefficients lowest order first, for `polynomial`.
# Eigen's ptanh_float: odd 13/6 rational approximation of tanh, exact to float32 rounding.
_TANH_NUM = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
_TANH_DEN = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)
# Eigen's generic_fast_erf_float: odd 13/8 rational approximation of erf on [-4, 4].
_ERF_NUM = (
    -1.60960333262415e-02,
    -2.95459980854025e-03,
    -7.34990630326855e-04,
    -5.69250639462346e-05,
    -2.10102402082508e-06,
    2.77068142495902e-08,
    -2.72614225801306e-10,
)
_ERF_DEN = (
    -1.42647390514189e-02,
    -7.37332916720468e-03,
    -1.68282697438203e-03,
    -2.13374055278905e-04,
    -1.45660718464996e-05,
)
# 2^f = 1 + f P(f) on [-0.5, 0.5] (Cephes exp2f).
_EXP2 = (
    6.931472028550421e-1,
    2.402264791363012e-1,
    5.550332471162809e-2,
    9.618437357674640e-3,
    1.339887440266574e-3,
    1.535336188319500e-4,
)
# Clip bounds: where the rational forms reach +-1.0 in float32, so saturated inputs give exactly +-1.
TANH_BOUND, ERF_BOUND = 7.99894, 4.0


def polynomial(z: mx.array, coefficients: tuple[float, ...]) -> mx.array:
    """sum(c_i z^i), lowest order first, by Estrin's scheme: ~2 log2(n) operations deep where
    Horner's is 2n (MLX fuses at most 11 operations into one kernel)."""
    terms, power = list(coefficients), z
    while len(terms) > 1:
        paired = [terms[i] + terms[i + 1] * power for i in range(0, len(terms) - 1, 2)]
        terms, power = paired + terms[len(terms) - len(terms) % 2 :], power * power
    return terms[0]


def _rational_odd(u: mx.array, num, den) -> mx.array:
    """u P(u^2) / Q(u^2) for an already clipped u."""
    z = u * u
    return u * polynomial(z, num) / polynomial(z, den)


def tanh(x: mx.array) -> mx.array:
    return _rational_odd(mx.clip(x, -TANH_BOUND, TANH_BOUND), _TANH_NUM, _TANH_DEN)


def erf(x: mx.array) -> mx.array:
    return _rational_odd(mx.clip(x, -ERF_BOUND, ERF_BOUND), _ERF_NUM, _ERF_DEN)


def exp_nonpositive(x: mx.array, scale: float = 1.0) -> mx.array:
    """exp(scale * x) for scale * x <= 0 (float32): 2^n by building the exponent bits, 2^f by a
    polynomial."""
    exponent = x * (scale * 1.4426950408889634)  # x * log2(e)
    y = mx.maximum(exponent, -126.0)  # kept in the normal range
    # n = round(y) by truncating y - 0.5 (y <= 0): a conversion, where floor is a libm call per
    # element on the CPU backend.
    n = (y - 0.5).astype(mx.int32)
    f = y - n.astype(mx.float32)  # in [-0.5, 0.5]
    value = (polynomial(f, _EXP2) * f + 1.0) * mx.view((n + 127) << 23, mx.float32)
    # Below 2^-126 (padding's weights): exactly 0, as exp underflows, not 2^-126: such tiny weights
    # make the backward pass's products subnormal, which x86 computes ~10x slower.
    return mx.where(exponent > -126.0, value, 0.0)


@functools.cache  # one compiled function per scale (1 for softmax; a model's attention has one more)
def _shifted_exp(scale: float) -> Callable[[mx.array, mx.array], mx.array]:
    return mx.compile(lambda x, m: exp_nonpositive(x - m, scale))


def _exp_below_max(x: mx.array, scale: float = 1.0) -> mx.array:
    """exp(scale * (x - max(x))) over the last axis, in float32 (every value <= 1)."""
    x = x.astype(mx.float32)
    return _shifted_exp(scale)(x, mx.max(x, axis=-1, keepdims=True))


def softmax(x: mx.array, plain: bool = False) -> mx.array:
    """Softmax over the last axis in float32; on the CPU backend ~2.5x faster than mx.softmax,
    whose exp dominates attention there. Within 2e-6 of the exact softmax. `plain`: mx.softmax,
    which `mx.export_function` can serialise (it stores no custom gradients or compiled kernels)."""
    if plain:
        return mx.softmax(x.astype(mx.float32), axis=-1, precise=True)
    return _softmax(x)


@mx.custom_function
def _softmax(x: mx.array) -> mx.array:
    e = _exp_below_max(x)
    return e * (1.0 / e.sum(axis=-1, keepdims=True))


@_softmax.vjp
def _softmax_vjp(primals, cotangent, output):
    # The bit-built exponent has no derivative of its own; softmax's is p * (g - <g, p>).
    x, p = primals, output  # one input and one output: passed as arrays, not tuples
    g = cotangent.astype(mx.float32)
    return (p * (g - (g * p).sum(axis=-1, keepdims=True))).astype(x.dtype)


def softmax_numerator(x: mx.array, scale: float = 1.0, plain: bool = False) -> mx.array:
    """exp(scale * (x - max(x))) over the last axis, in float32: softmax(scale * x) before the
    division by its sum, for callers that divide where it is cheaper (attention divides its
    (.., L, head_dim) output instead of the (.., L, L) weights). Only ratios of these values are
    meaningful, and the gradient is exact for them (not for the values alone). `plain`: as
    softmax's."""
    if plain:
        x = x.astype(mx.float32)
        return mx.exp((x - mx.max(x, axis=-1, keepdims=True)) * scale)
    return _numerator(scale)(x)


@functools.cache  # one per scale (a model has one)
def _numerator(scale: float) -> Callable[[mx.array], mx.array]:
    @mx.custom_function
    def numerator(x: mx.array) -> mx.array:
        return _exp_below_max(x, scale)

    @numerator.vjp
    def numerator_vjp(x, cotangent, output):
        # The shift by the max cancels in every ratio: its gradient term is left out, as the
        # bit-built exp has no derivative of its own.
        return (scale * output * cotangent.astype(mx.float32)).astype(x.dtype)

    return numerator


def gelu(x: mx.array) -> mx.array:
    """Exact GELU, x * Phi(x) (transformers' "gelu")."""
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


def gelu_new(x: mx.array) -> mx.array:
    """Tanh-approximated GELU (transformers' "gelu_new" / "gelu_pytorch_tanh")."""
    return 0.5 * x * (1.0 + tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def gelu_fast(x: mx.array) -> mx.array:
    return 0.5 * x * (1.0 + tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def sigmoid(x: mx.array) -> mx.array:
    return 0.5 * (1.0 + tanh(0.5 * x))


def silu(x: mx.array) -> mx.array:
    return x * sigmoid(x)


def quick_gelu(x: mx.array) -> mx.array:
    return x * sigmoid(1.702 * x)


def relu(x: mx.array) -> mx.array:
    return mx.maximum(x, 0)


def _gelu_grad(x: mx.array) -> mx.array:
    return 0.5 * (1.0 + erf(x * (1.0 / math.sqrt(2.0)))) + x * (
        (1.0 / math.sqrt(2.0 * math.pi)) * exp_nonpositive(-0.5 * x * x)
    )


def _tanh_gelu_grad(c: float, x: mx.array) -> mx.array:
    x2 = x * x
    t = tanh(c * x * (1.0 + 0.044715 * x2))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x2)


# Traces of the compiled activations by name (tests count recompilations with it).
TRACES: collections.Counter = collections.Counter()
# Shapeless kernels: one trace and one kernel for every batch size and length. None: on GPU
# backends only, where each new shape would otherwise JIT new kernels; the CPU backend's kernels
# run ~2x faster with the sizes built in (and are cached on disk once compiled).
SHAPELESS: bool | None = None


def _compiled(name: str, f: Callable, shapeless_ok: bool = True) -> Callable:
    def traced(*args):
        TRACES[name] += 1
        return f(*args)

    shaped = mx.compile(traced)
    if not shapeless_ok:  # e.g. a view (the bit-built exp) cannot infer shapes
        return shaped
    shapeless = mx.compile(traced, shapeless=True)

    def call(*args):
        use = SHAPELESS if SHAPELESS is not None else mx.default_device() != mx.cpu
        return shapeless(*args) if use else shaped(*args)

    return call


def _half_x(x: mx.array, r: mx.array) -> mx.array:
    return (0.5 * x) * (1.0 + r)


_K = math.sqrt(2.0 / math.pi)
_TANH = (TANH_BOUND, _TANH_NUM, _TANH_DEN)
_ERF = (ERF_BOUND, _ERF_NUM, _ERF_DEN)
# The rational activations as outer(x, r(u)): u = clip(inner(x), +-bound), r(u) = u P(u^2) / Q(u^2).
_STAGES = {
    "gelu": (lambda x: x * (1.0 / math.sqrt(2.0)), _ERF, _half_x),
    "gelu_new": (lambda x: x * (_K + (_K * 0.044715) * (x * x)), _TANH, _half_x),
    "gelu_fast": (lambda x: x * (0.7978845608 + (0.7978845608 * 0.044715) * (x * x)), _TANH, _half_x),
    "quick_gelu": (lambda x: (0.5 * 1.702) * x, _TANH, _half_x),  # x sigmoid(1.702 x)
    "silu": (lambda x: 0.5 * x, _TANH, _half_x),
    "sigmoid": (lambda x: 0.5 * x, _TANH, lambda x, r: 0.5 * (1.0 + r)),
    "tanh": (lambda x: x, _TANH, lambda x, r: r),
}


def _staged(name: str) -> Callable[[mx.array], mx.array]:
    """A rational activation as two compiled kernels: clip(inner(x)), then the rational and outer.
    Where MLX cuts a deeper fused graph, the next kernel reads the broadcast constants through its
    strided path, which on the CPU backend made one function 2-2.5x slower than these two stages.
    Computed in float32 whatever x's dtype."""
    inner, (bound, num, den), outer = _STAGES[name]
    first = _compiled(name, lambda x: mx.clip(inner(x.astype(mx.float32)), -bound, bound))

    def rational(x: mx.array, u: mx.array) -> mx.array:
        return outer(x.astype(mx.float32), _rational_odd(u, num, den)).astype(x.dtype)

    second = _compiled(f"{name}.outer", rational)
    return lambda x: second(x, first(x))


def _fused(f: Callable, df: Callable | None = None, shapeless_grad: bool = True) -> Callable:
    """f compiled (the rational forms in two kernels, `_staged`); with df, a VJP that keeps only x
    (autodiff through the rational forms would store every polynomial step: ~30 (B, L,
    intermediate) arrays a layer)."""
    forward = _staged(f.__name__) if f.__name__ in _STAGES else _compiled(f.__name__, f)
    fused = forward
    if df is not None:
        grad = lambda x, g: (g * df(x.astype(mx.float32))).astype(x.dtype)  # noqa: E731
        backward = _compiled(f"{f.__name__}_grad", grad, shapeless_grad)

        @mx.custom_function
        def fused(x):
            return forward(x)

        @fused.vjp
        def fused_vjp(x, cotangent, output):
            return backward(x, cotangent)

    def activation(x: mx.array, plain: bool = False) -> mx.array:
        return f(x) if plain else fused(x)  # plain: ops that mx.export_function can serialise

    activation.__doc__ = f.__doc__
    return activation


_gelu = _fused(gelu, _gelu_grad, shapeless_grad=False)
_gelu_new = _fused(gelu_new, functools.partial(_tanh_gelu_grad, math.sqrt(2.0 / math.pi)))
_gelu_fast = _fused(gelu_fast, functools.partial(_tanh_gelu_grad, 0.7978845608))
_silu = _fused(silu)
# transformers' hidden_act names (and Bumblebee's) -> function.
ACTIVATIONS: dict[str, Callable[..., mx.array]] = {  # (x, plain=False)
    "gelu": _gelu,
    "gelu_new": _gelu_new,
    "gelu_pytorch_tanh": _gelu_new,
    "gelu_approx_tanh": _gelu_new,
    "gelu_fast": _gelu_fast,
    "quick_gelu": _fused(quick_gelu),
    "relu": _fused(relu),
    "silu": _silu,
    "swish": _silu,
    "sigmoid": _fused(sigmoid),
    "tanh": _fused(tanh),
}
