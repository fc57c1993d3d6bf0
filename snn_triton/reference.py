"""Pure-PyTorch definition of the spike and the LIF scan, forward and hand-written backward.

This is the CPU path and the oracle of the Triton kernels, so it spells out the equations of
DESIGN.md step by step (fla style: the naive scan is the definition). Half types are computed in
float32 and float64 stays float64, as in the kernels. The charge is written exactly as
spikingjelly's ``LIFNode`` writes it, so forward spikes agree bit for bit.

LIF, over t = 0..T-1 with V[-1] = v_reset (0 for soft reset):

    H[t] = V[t-1] + (X[t] - (V[t-1] - v_reset)) / tau
    S[t] = heaviside(H[t] - v_threshold)
    V[t] = H[t] * (1 - S[t]) + v_reset * S[t]    (hard reset, v_reset a float)
    V[t] = H[t] - S[t] * v_threshold             (soft reset, v_reset None)

Backward is BPTT of these equations with dS/dH = h(H - v_threshold); forward saves only H.
"""
from __future__ import annotations

import torch

from .surrogate import heaviside, surrogate_grad


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the math runs in: float64 stays, everything else goes through float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def spike_forward(x: torch.Tensor) -> torch.Tensor:
    return heaviside(x)


def spike_backward(grad_s: torch.Tensor, x: torch.Tensor, surrogate: str, beta: float) -> torch.Tensor:
    cdt = compute_dtype(x.dtype)
    return (grad_s.to(cdt) * surrogate_grad(x.to(cdt), surrogate, beta)).to(grad_s.dtype)


def lif_charge(v: torch.Tensor, x: torch.Tensor, tau: float, v_reset: float | None) -> torch.Tensor:
    """H = V + (X - (V - v_reset)) / tau; spikingjelly drops the subtraction when v_reset is 0."""
    if v_reset is None or v_reset == 0.0:
        return v + (x - v) / tau
    return v + (x - (v - v_reset)) / tau


def lif_reset(h: torch.Tensor, spike: torch.Tensor, v_threshold: float, v_reset: float | None) -> torch.Tensor:
    """V = H * (1 - S) + v_reset * S (hard reset), V = H - S * v_threshold (soft reset).

    Arithmetic, as spikingjelly writes it, rather than a select: a bool mask is several times
    slower than float arithmetic on a CPU.
    """
    if v_reset is None:
        return h - spike * v_threshold
    return h * (1.0 - spike) + v_reset * spike


def stored(state: torch.Tensor) -> torch.Tensor:
    """`state` itself (a view of it). Under torch.compile, the view makes inductor store the state
    instead of inlining each step of an unrolled scan into the next: each step reads the previous
    state several times, so the inlined expression grows several-fold per step, and with an input
    expanded over time (nothing else forcing a store) T=8 took minutes to compile. Free in eager mode."""
    return state.as_strided(state.size(), state.stride())


def lif_scan_forward(
    x_seq: torch.Tensor, tau: float, v_threshold: float, v_reset: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_seq [T, ...] -> (spikes [T, ...] in x_seq's dtype, H [T, ...] in the compute dtype)."""
    out_dtype = x_seq.dtype
    x_seq = x_seq.to(compute_dtype(out_dtype))
    v = torch.full_like(x_seq[0], 0.0 if v_reset is None else v_reset)
    spikes, hs = [], []
    for x in x_seq:
        h = lif_charge(v, x, tau, v_reset)
        spike = heaviside(h - v_threshold)
        v = stored(lif_reset(h, spike, v_threshold, v_reset))
        spikes.append(spike)
        hs.append(h)
    return torch.stack(spikes).to(out_dtype), torch.stack(hs)


def lif_scan_backward(
    grad_s_seq: torch.Tensor,
    h_seq: torch.Tensor,
    tau: float,
    v_threshold: float,
    v_reset: float | None,
    surrogate: str,
    beta: float,
    detach_reset: bool,
) -> torch.Tensor:
    """BPTT: grad of the spikes [T, ...] and the saved H [T, ...] -> grad of x_seq [T, ...]."""
    cdt = h_seq.dtype
    grad_v = None  # dL/dV[t], flowing back from step t+1; V[T-1] is not an output
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
        g = grad_h / tau  # dH/dX = 1/tau
        grad_v = grad_h - g  # dH/dV[t-1] = 1 - 1/tau, as autograd of the charge computes it
        grad_x.append(g)
    grad_x.reverse()
    return torch.stack(grad_x).to(grad_s_seq.dtype)
