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
USER_KERNEL = tl.constexpr(_USER_KERNEL)
HALF_PI = tl.constexpr(1.5707963267948966)


@triton.jit
def sigmoid_derivative(x, beta):
    """s * (1 - s), s = sigmoid(beta * x), as e / (1 + e)^2: 1 - s is never formed, so it keeps
    full relative precision where s rounds to 1."""
    e = tl.exp(-beta * tl.abs(x))
    return e / ((1.0 + e) * (1.0 + e))


@triton.jit
def surrogate_grad(x, beta, SURROGATE: tl.constexpr, SURROGATE_FN: tl.constexpr):
    """h(x) in x's dtype; beta is already in that dtype."""
    if SURROGATE == USER_KERNEL:
        h = SURROGATE_FN(x, beta)
    elif SURROGATE == SUPERSPIKE:
        d = beta * tl.abs(x) + 1.0
        h = 1.0 / (d * d)
    elif SURROGATE == SIGMOID:
        h = sigmoid_derivative(x, beta)
    elif SURROGATE == SPIKINGJELLY_SIGMOID:
        h = beta * sigmoid_derivative(x, beta)
    elif SURROGATE == ATAN:
        a = HALF_PI * beta * x
        h = (beta * 0.5) / (1.0 + a * a)
    else:
        tl.static_assert(SURROGATE == ESSER)
        # NaN propagates, as in torch.clamp_min; Triton's default max would return 0 for NaN
        # (and in float64 on sm_90 ptxas compiled that one with an 8-byte stack spill).
        h = tl.maximum(1.0 - beta * tl.abs(x), 0.0, propagate_nan=tl.PropagateNan.ALL)
    return h
