"""Triton device functions for the surrogate derivatives h(x) (see ``snn_triton.surrogate``).

``SURROGATE`` is a constexpr id from ``BUILTIN_IDS``, so each kernel is specialized per surrogate
and the untaken branches vanish at compile time. A user's surrogate (``st.register_surrogate``)
arrives as ``SURROGATE == USER_KERNEL`` with its own ``triton.jit`` function as ``SURROGATE_FN``.
"""

import triton
import triton.language as tl

from ..surrogate import BUILTIN_IDS
from ..surrogate import USER_KERNEL as _USER_KERNEL

# tl.constexpr(...) objects, not annotations: the compiler (unlike the interpreter) rejects
# any other global read inside a kernel.
SUPERSPIKE = tl.constexpr(BUILTIN_IDS["superspike"])
SIGMOID = tl.constexpr(BUILTIN_IDS["sigmoid"])
ESSER = tl.constexpr(BUILTIN_IDS["esser"])
SPIKINGJELLY_SIGMOID = tl.constexpr(BUILTIN_IDS["spikingjelly_sigmoid"])
ATAN = tl.constexpr(BUILTIN_IDS["atan"])
SOFT_SIGN = tl.constexpr(BUILTIN_IDS["soft_sign"])
PIECEWISE_QUADRATIC = tl.constexpr(BUILTIN_IDS["piecewise_quadratic"])
PIECEWISE_EXP = tl.constexpr(BUILTIN_IDS["piecewise_exp"])
ERF = tl.constexpr(BUILTIN_IDS["erf"])
NONZERO_SIGN_LOG_ABS = tl.constexpr(BUILTIN_IDS["nonzero_sign_log_abs"])
SPIKINGJELLY_SUPERSPIKE = tl.constexpr(BUILTIN_IDS["spikingjelly_superspike"])
USER_KERNEL = tl.constexpr(_USER_KERNEL)
HALF_PI = tl.constexpr(1.5707963267948966)
INV_SQRT_PI = tl.constexpr(0.5641895835477563)


@triton.jit
def sigmoid_derivative(x, beta):
    """s * (1 - s), s = sigmoid(beta * x), as e / (1 + e)^2: 1 - s is never formed, so it keeps
    full relative precision where s rounds to 1."""
    e = tl.exp(-beta * tl.abs(x))
    return e / ((1.0 + e) * (1.0 + e))


@triton.jit
def inverse_square(x, beta):
    """1 / (beta * |x| + 1)^2: SuperSpike's h, and SoftSign's up to a factor."""
    d = beta * tl.abs(x) + 1.0
    return 1.0 / (d * d)


@triton.jit
def triangle(x, beta):
    """max(0, 1 - beta * |x|): Esser et al.'s h, and PiecewiseQuadratic's up to a factor."""
    # A select, not a maximum: NaN propagates (as in torch.clamp_min), and ptxas spilled 8 bytes to the
    # stack in float64 for Triton's NaN-propagating maximum (sm_90 alone, sm_80 times beta).
    a = beta * tl.abs(x)
    return tl.where(a > 1.0, 0.0, 1.0 - a)


@triton.jit
def surrogate_grad(x, beta, SURROGATE: tl.constexpr, SURROGATE_FN: tl.constexpr):
    """h(x) in x's dtype; beta is already in that dtype."""
    if SURROGATE == USER_KERNEL:
        h = SURROGATE_FN(x, beta)
    elif SURROGATE == SUPERSPIKE:
        h = inverse_square(x, beta)
    elif SURROGATE == SIGMOID:
        h = sigmoid_derivative(x, beta)
    elif SURROGATE == SPIKINGJELLY_SIGMOID:
        h = beta * sigmoid_derivative(x, beta)
    elif SURROGATE == ATAN:
        a = HALF_PI * beta * x
        h = (beta * 0.5) / (1.0 + a * a)
    elif SURROGATE == SOFT_SIGN:
        h = (beta * 0.5) * inverse_square(x, beta)
    elif SURROGATE == PIECEWISE_QUADRATIC:
        h = beta * triangle(x, beta)
    elif SURROGATE == PIECEWISE_EXP:
        h = (beta * 0.5) * tl.exp(-beta * tl.abs(x))
    elif SURROGATE == ERF:
        a = beta * x
        h = (beta * INV_SQRT_PI) * tl.exp(-(a * a))
    elif SURROGATE == NONZERO_SIGN_LOG_ABS:
        h = 1.0 / (1.0 / beta + tl.abs(x))
    elif SURROGATE == SPIKINGJELLY_SUPERSPIKE:
        h = beta * inverse_square(x, 1.0)
    else:
        tl.static_assert(SURROGATE == ESSER)
        h = triangle(x, beta)
    return h
