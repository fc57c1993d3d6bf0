"""The neuron equations as Triton device functions, the twins of ``snn_triton.reference``'s:
charge (IF, LIF and PLIF in either decay form), fire, reset, and their derivatives. Every scan
kernel calls these; ``CHARGE_FORM`` is a constexpr id from ``reference.CHARGE_FORMS`` and ``LEAK_FROM_PTR``
tells a PLIF leak k (multiplied by) from a LIF tau (divided by), so the untaken forms vanish at
compile time.
"""

import triton
import triton.language as tl

from .. import reference
from .common import ieee_div, mul_rn

IF = tl.constexpr(reference.IF)
DECAY_INPUT = tl.constexpr(reference.DECAY_INPUT)
DECAY_POTENTIAL = tl.constexpr(reference.DECAY_POTENTIAL)
SCALED = tl.constexpr(reference.SCALED)


@triton.jit
def by_leak(a, leak, LEAK_FROM_PTR: tl.constexpr, COMPUTE_DTYPE: tl.constexpr):
    """a / tau (LIF, IEEE division as PyTorch on a CPU) or a * k (PLIF)."""
    if LEAK_FROM_PTR:
        q = mul_rn(a, leak)
    else:
        q = ieee_div(a, leak, COMPUTE_DTYPE)
    return q


@triton.jit
def charge(v, x, leak, v_reset, CHARGE_FORM: tl.constexpr, LEAK_FROM_PTR: tl.constexpr, COMPUTE_DTYPE: tl.constexpr):
    """H from V[t-1] and X[t], in spikingjelly's order of operations (v_reset is 0 for soft reset;
    v - 0 is v exactly, so spikingjelly's dropped subtraction needs no form of its own)."""
    if CHARGE_FORM == IF:
        h = v + x
    elif CHARGE_FORM == DECAY_INPUT:
        h = v + by_leak(x - (v - v_reset), leak, LEAK_FROM_PTR, COMPUTE_DTYPE)
    elif CHARGE_FORM == DECAY_POTENTIAL:
        h = v - by_leak(v - v_reset, leak, LEAK_FROM_PTR, COMPUTE_DTYPE) + x
    else:
        tl.static_assert(CHARGE_FORM == SCALED)
        h = mul_rn(v, leak) + x
    return h


@triton.jit
def reset(h, fired, v_threshold, v_reset, HARD_RESET: tl.constexpr, COMPUTE_DTYPE: tl.constexpr):
    """V[t] from H[t] and the bool spike: v_reset where fired (hard), H - v_threshold (soft)."""
    if HARD_RESET:
        v = tl.where(fired, v_reset, h)
    else:
        v = h - fired.to(COMPUTE_DTYPE) * v_threshold
    return v


@triton.jit
def reset_derivatives(h, u, v_threshold, v_reset, HARD_RESET: tl.constexpr, COMPUTE_DTYPE: tl.constexpr):
    """(dV/dH, dV/dS) of the reset at H[t], u = H[t] - v_threshold."""
    if HARD_RESET:
        dv_dh = 1.0 - (u >= 0).to(COMPUTE_DTYPE)
        dv_ds = v_reset - h
    else:
        dv_dh = tl.full(u.shape, 1.0, COMPUTE_DTYPE)
        dv_ds = tl.full(u.shape, 0.0, COMPUTE_DTYPE) - v_threshold
    return dv_dh, dv_ds


@triton.jit
def backward_step(
    grad_v,
    grad_spike,
    h,
    sg,
    leak,
    v_threshold,
    v_reset,
    CHARGE_FORM: tl.constexpr,
    LEAK_FROM_PTR: tl.constexpr,
    HARD_RESET: tl.constexpr,
    DETACH_RESET: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
):
    """One step back: dL/dV[t], dL/dS[t], H[t] and h(H[t] - v_threshold) -> (dL/dH[t], dL/dX[t], dL/dV[t-1])."""
    dv_dh, dv_ds = reset_derivatives(h, h - v_threshold, v_threshold, v_reset, HARD_RESET, COMPUTE_DTYPE)
    if not DETACH_RESET:  # V[t] depends on H[t] directly and, unless detached, through S[t]
        grad_spike = grad_spike + grad_v * dv_ds
    grad_h = grad_spike * sg + grad_v * dv_dh
    grad_x, grad_v = charge_backward(grad_h, leak, CHARGE_FORM, LEAK_FROM_PTR, COMPUTE_DTYPE)
    return grad_h, grad_x, grad_v


@triton.jit
def charge_backward(grad_h, leak, CHARGE_FORM: tl.constexpr, LEAK_FROM_PTR: tl.constexpr, COMPUTE_DTYPE: tl.constexpr):
    """(dL/dX[t], dL/dV[t-1]) from dL/dH[t], as autograd differentiates the charge."""
    if CHARGE_FORM == IF:
        grad_x = grad_h
        grad_v = grad_h
    elif CHARGE_FORM == DECAY_INPUT:
        grad_x = by_leak(grad_h, leak, LEAK_FROM_PTR, COMPUTE_DTYPE)
        grad_v = grad_h - grad_x
    elif CHARGE_FORM == DECAY_POTENTIAL:
        grad_x = grad_h
        grad_v = grad_h - by_leak(grad_h, leak, LEAK_FROM_PTR, COMPUTE_DTYPE)
    else:
        grad_x = grad_h
        grad_v = grad_h * leak
    return grad_x, grad_v


@triton.jit
def charge_leak_derivative(v, x, v_reset, CHARGE_FORM: tl.constexpr):
    """dH/dk for PLIF's leak k (SCALED: dH/d(1 - k)), given V[t-1] and X[t]."""
    if CHARGE_FORM == DECAY_INPUT:
        d = x - (v - v_reset)
    elif CHARGE_FORM == DECAY_POTENTIAL:
        d = -(v - v_reset)
    else:
        d = v
    return d
