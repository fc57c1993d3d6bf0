"""Triton device functions for the surrogate derivatives h(x) (see ``snn_triton.surrogate``).

``SURROGATE`` is a constexpr id from ``SURROGATE_IDS``, so each kernel is specialized per
surrogate and the untaken branches vanish at compile time.
"""
import triton
import triton.language as tl

from ..surrogate import SURROGATE_IDS

# tl.constexpr(...) objects, not annotations: the compiler (unlike the interpreter) rejects
# any other global read inside a kernel.
SUPERSPIKE = tl.constexpr(SURROGATE_IDS["superspike"])
SIGMOID = tl.constexpr(SURROGATE_IDS["sigmoid"])
ESSER = tl.constexpr(SURROGATE_IDS["esser"])


@triton.jit
def surrogate_grad(x, beta, SURROGATE: tl.constexpr):
    """h(x) in x's dtype; beta is already in that dtype."""
    if SURROGATE == SUPERSPIKE:
        d = beta * tl.abs(x) + 1.0
        h = 1.0 / (d * d)
    elif SURROGATE == SIGMOID:
        e = tl.exp(-beta * tl.abs(x))  # s * (1 - s) without cancelling 1 - s
        h = e / ((1.0 + e) * (1.0 + e))
    else:
        tl.static_assert(SURROGATE == ESSER)
        # NaN propagates, as in torch.clamp_min; Triton's default max would return 0 for NaN
        # (and in float64 on sm_90 ptxas compiled that one with an 8-byte stack spill).
        h = tl.maximum(1.0 - beta * tl.abs(x), 0.0, propagate_nan=tl.PropagateNan.ALL)
    return h
