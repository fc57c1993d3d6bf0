"""Pure-PyTorch definition of the spike and the neuron scans, forward and hand-written backward.

This is the CPU path and the oracle of the Triton kernels, so it spells out the equations step by
step (fla style: the naive scan is the definition). Half types are computed in float32 and
float64 stays float64, as in the kernels. Each charge is written exactly as spikingjelly
0.0.0.0.14 writes it, so forward spikes agree bit for bit.

Over t = 0..T-1 from V[-1] = v_init (default v_reset; 0 for soft reset):

    H[t] = charge(V[t-1], X[t])                   one of the CHARGE equations below
    S[t] = heaviside(H[t] - v_threshold)
    V[t] = H[t] * (1 - S[t]) + v_reset * S[t]    (hard reset, v_reset a float)
    V[t] = H[t] - S[t] * v_threshold             (soft reset, v_reset None; the charge uses 0)

Backward is BPTT of these equations with dS/dH = h(H - v_threshold); forward saves only H (and
V[T-1] when it is asked for). PLIF's leak k = sigmoid(w) gets its gradient too.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .surrogate import heaviside, surrogate_grad

# The charge equations H = charge(V, X), in spikingjelly's arithmetic. `leak` is tau for LIF (a
# float, divided by) or k = sigmoid(w) for PLIF (a 0-dim tensor, multiplied by); for SCALED it is
# the factor V is multiplied by, 1 - 1/tau or 1 - k.
IF = 0  #          H = V + X                                      IFNode
DECAY_INPUT = 1  # H = V + (X - (V - v_reset)) / tau   (* k)     LIF/PLIF, decay_input=True
LEAK = 2  #        H = V - (V - v_reset) / tau + X     (* k)     LIF/PLIF, decay_input=False, v_reset != 0
SCALED = 3  #      H = V * leak + X                              LIF/PLIF, decay_input=False, v_reset 0 or None
CHARGES = {"if": IF, "decay_input": DECAY_INPUT, "leak": LEAK, "scaled": SCALED}

Leak = Union[float, torch.Tensor]


def charge_equation(leaky: bool, decay_input: bool, v_reset: float | None) -> int:
    """Which charge spikingjelly (training mode) computes for a neuron of these parameters."""
    if not leaky:
        return IF
    if decay_input:
        return DECAY_INPUT
    return SCALED if v_reset is None or v_reset == 0.0 else LEAK


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the math runs in: float64 stays, everything else goes through float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def spike_forward(x: torch.Tensor) -> torch.Tensor:
    return heaviside(x)


def spike_backward(grad_s: torch.Tensor, x: torch.Tensor, surrogate: str, beta: float) -> torch.Tensor:
    cdt = compute_dtype(x.dtype)
    return (grad_s.to(cdt) * surrogate_grad(x.to(cdt), surrogate, beta)).to(grad_s.dtype)


def by_leak(a: torch.Tensor, leak: Leak) -> torch.Tensor:
    """a / tau (LIF) or a * k (PLIF)."""
    return a / leak if isinstance(leak, float) else a * leak


def charge(v: torch.Tensor, x: torch.Tensor, equation: int, leak: Leak, v_reset: float | None) -> torch.Tensor:
    """H from V[t-1] and X[t]; spikingjelly drops the subtraction of v_reset when it is 0."""
    offset = v if v_reset is None or v_reset == 0.0 else v - v_reset
    if equation == IF:
        return v + x
    if equation == DECAY_INPUT:
        return v + by_leak(x - offset, leak)
    if equation == LEAK:
        return v - by_leak(offset, leak) + x
    return v * leak + x  # SCALED


def charge_backward(grad_h: torch.Tensor, equation: int, leak: Leak) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dX[t], dL/dV[t-1]) from dL/dH[t], as autograd differentiates the charge."""
    if equation == IF:
        return grad_h, grad_h
    if equation == DECAY_INPUT:
        grad_x = by_leak(grad_h, leak)
        return grad_x, grad_h - grad_x
    if equation == LEAK:
        return grad_h, grad_h - by_leak(grad_h, leak)
    return grad_h, grad_h * leak  # SCALED


def charge_leak_derivative(v: torch.Tensor, x: Optional[torch.Tensor], equation: int,
                           v_reset: float | None) -> torch.Tensor:
    """dH/dk for PLIF's multiplied leak k (SCALED: dH/d(1 - k)), given V[t-1] and X[t]."""
    offset = v if v_reset is None else v - v_reset
    if equation == DECAY_INPUT:
        return x - offset
    if equation == LEAK:
        return -offset
    return v  # SCALED


def reset(h: torch.Tensor, spike: torch.Tensor, v_threshold: float, v_reset: float | None) -> torch.Tensor:
    """V = H * (1 - S) + v_reset * S (hard reset), V = H - S * v_threshold (soft reset).

    Arithmetic, as spikingjelly writes it, rather than a select: a bool mask is several times
    slower than float arithmetic on a CPU.
    """
    if v_reset is None:
        return h - spike * v_threshold
    return h * (1.0 - spike) + v_reset * spike


def rest_potential(v_reset: float | None) -> float:
    """V[-1] when no initial potential is given: v_reset, or 0 for the soft reset."""
    return 0.0 if v_reset is None else v_reset


def stored(state: torch.Tensor) -> torch.Tensor:
    """`state` itself (a view of it). Under torch.compile, the view makes inductor store the state
    instead of inlining each step of an unrolled scan into the next: each step reads the previous
    state several times, so the inlined expression grows several-fold per step, and with an input
    expanded over time (nothing else forcing a store) T=8 took minutes to compile. Free in eager mode."""
    return state.as_strided(state.size(), state.stride())


def lif_scan_forward(
    x_seq: torch.Tensor, v_init: Optional[torch.Tensor], equation: int, leak: Leak,
    v_threshold: float, v_reset: float | None, return_v: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_seq [T, ...], v_init [...] or None -> (spikes [T, ...] in x_seq's dtype, H [T, ...] and
    V[T-1] [...] in the compute dtype; V[T-1] is empty unless return_v)."""
    out_dtype = x_seq.dtype
    cdt = compute_dtype(out_dtype)
    x_seq = x_seq.to(cdt)
    if isinstance(leak, torch.Tensor):
        leak = leak.to(cdt)
    v = torch.full_like(x_seq[0], rest_potential(v_reset)) if v_init is None else v_init.to(cdt)
    spikes, hs = [], []
    for x in x_seq:
        h = charge(v, x, equation, leak, v_reset)
        spike = heaviside(h - v_threshold)
        v = stored(reset(h, spike, v_threshold, v_reset))
        spikes.append(spike)
        hs.append(h)
    v_last = v if return_v else x_seq.new_empty(0)
    return torch.stack(spikes).to(out_dtype), torch.stack(hs), v_last


def lif_scan_backward(
    grad_s_seq: torch.Tensor, h_seq: torch.Tensor, grad_v_last: Optional[torch.Tensor],
    x_seq: Optional[torch.Tensor], v_init: Optional[torch.Tensor], equation: int, leak: Leak,
    v_threshold: float, v_reset: float | None, surrogate: str, beta: float, detach_reset: bool,
    grad_v_init: bool, grad_leak: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BPTT: the gradients of the spikes [T, ...] and of V[T-1] (or None), and the saved H [T, ...]
    -> (grad x_seq [T, ...], grad v_init [...], grad leak []); the last two are empty unless asked
    for. x_seq (DECAY_INPUT) and v_init are needed only for the leak's gradient."""
    cdt = h_seq.dtype
    if isinstance(leak, torch.Tensor):
        leak = leak.to(cdt)
    grad_v = None if grad_v_last is None else grad_v_last.to(cdt)  # dL/dV[t], flowing back from t+1
    leak_sum = h_seq.new_zeros(h_seq.shape[1:]) if grad_leak else None
    grad_x = []
    for t in range(h_seq.shape[0] - 1, -1, -1):
        h = h_seq[t]
        u = h - v_threshold
        sg = surrogate_grad(u, surrogate, beta)
        grad_spike = grad_s_seq[t].to(cdt)
        if grad_v is None:
            grad_h = grad_spike * sg
        else:
            # V[t] depends on H[t] directly and, unless detached, through S[t].
            if v_reset is None:
                dv_dh, dv_ds = 1.0, -v_threshold
            else:
                dv_dh, dv_ds = 1.0 - heaviside(u), v_reset - h
            if not detach_reset:
                grad_spike = grad_spike + grad_v * dv_ds
            grad_h = grad_spike * sg + grad_v * dv_dh
        g, grad_v = charge_backward(grad_h, equation, leak)
        if grad_leak:
            if t > 0:
                h_prev = h_seq[t - 1]
                v_prev = reset(h_prev, heaviside(h_prev - v_threshold), v_threshold, v_reset)
            elif v_init is not None:
                v_prev = v_init.to(cdt)
            else:
                v_prev = torch.full_like(h, rest_potential(v_reset))
            x = x_seq[t].to(cdt) if equation == DECAY_INPUT else None
            leak_sum = leak_sum + grad_h * charge_leak_derivative(v_prev, x, equation, v_reset)
        grad_x.append(g)
    grad_x.reverse()
    return (torch.stack(grad_x).to(grad_s_seq.dtype),
            grad_v if grad_v_init else h_seq.new_empty(0),
            leak_sum.sum() if grad_leak else h_seq.new_empty(0))
