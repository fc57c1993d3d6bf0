"""LIF scan over time: one program per block of neurons walks T in registers.

Forward reads X[t] once and writes S[t] and H[t] (H is all that backward needs); backward is
its mirror image, walking t from T-1 down to 0 with dL/dV carried in registers, the surrogate
fused, writing grad X[t] once. The equations are those of ``snn_triton.reference``.
Neurons are the flattened trailing dims; each time step is contiguous, and the step stride of
the inputs is a parameter, so an input expanded over time (stride 0) is read in place.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..reference import compute_dtype
from .common import BLOCK, NUM_WARPS, ieee_div, launchable, time_major, tl_compute_dtype, to_compute
from ..surrogate import SURROGATE_IDS
from .surrogate import surrogate_grad


# T is not specialized, so one compiled kernel serves every sequence length.
@triton.jit(do_not_specialize=["T"])
def lif_scan_forward_kernel(
    x_ptr, s_ptr, h_ptr, T, n_neurons, x_stride_t,
    tau: tl.float64, v_threshold: tl.float64, v_reset: tl.float64,
    HARD_RESET: tl.constexpr, COMPUTE_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):
    neurons = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = neurons < n_neurons
    # Scalars arrive as float64 and are rounded once to the compute dtype, as PyTorch does.
    tau = to_compute(tau, COMPUTE_DTYPE)
    v_threshold = to_compute(v_threshold, COMPUTE_DTYPE)
    v_reset = to_compute(v_reset, COMPUTE_DTYPE)  # 0 for soft reset
    v = tl.zeros([BLOCK], COMPUTE_DTYPE) + v_reset
    # The pointers walk time as scalars (x_ptr += stride), not as tensors of per-neuron pointers:
    # that keeps one register pair per tensor, not one per element (tests/test_aot_compile.py).
    for _ in range(T):
        x = tl.load(x_ptr + neurons, mask=mask).to(COMPUTE_DTYPE)
        h = v + ieee_div(x - (v - v_reset), tau, COMPUTE_DTYPE)
        fired = (h - v_threshold) >= 0
        if HARD_RESET:
            v = tl.where(fired, v_reset, h)
        else:
            v = h - fired.to(COMPUTE_DTYPE) * v_threshold
        # via the compute dtype: the interpreter cannot cast a bool straight to bfloat16
        tl.store(s_ptr + neurons, fired.to(COMPUTE_DTYPE).to(s_ptr.dtype.element_ty), mask=mask)
        tl.store(h_ptr + neurons, h, mask=mask)
        x_ptr += x_stride_t
        s_ptr += n_neurons
        h_ptr += n_neurons


@triton.jit(do_not_specialize=["T"])
def lif_scan_backward_kernel(
    grad_s_ptr, h_ptr, grad_x_ptr, T, n_neurons, grad_s_stride_t,
    tau: tl.float64, v_threshold: tl.float64, v_reset: tl.float64, beta: tl.float64,
    SURROGATE: tl.constexpr, HARD_RESET: tl.constexpr, DETACH_RESET: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr, BLOCK: tl.constexpr,
):
    neurons = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = neurons < n_neurons
    tau = to_compute(tau, COMPUTE_DTYPE)
    v_threshold = to_compute(v_threshold, COMPUTE_DTYPE)
    v_reset = to_compute(v_reset, COMPUTE_DTYPE)
    beta = to_compute(beta, COMPUTE_DTYPE)
    # tl.cast, not .to: torch.compile passes T == 1 as a constexpr Python int despite do_not_specialize.
    last = tl.cast(T, tl.int64) - 1
    grad_s_ptr += last * grad_s_stride_t
    h_ptr += last * n_neurons
    grad_x_ptr += last * n_neurons
    grad_v = tl.zeros([BLOCK], COMPUTE_DTYPE)  # dL/dV[t]; V[T-1] is not an output
    for _ in range(T):
        h = tl.load(h_ptr + neurons, mask=mask)
        grad_spike = tl.load(grad_s_ptr + neurons, mask=mask).to(COMPUTE_DTYPE)
        sg = surrogate_grad(h - v_threshold, beta, SURROGATE)
        # V[t] depends on H[t] directly and, unless detached, through S[t].
        if HARD_RESET:
            dv_dh = 1.0 - ((h - v_threshold) >= 0).to(COMPUTE_DTYPE)
            dv_ds = v_reset - h
        else:
            dv_dh = 1.0
            dv_ds = -v_threshold
        if not DETACH_RESET:
            grad_spike = grad_spike + grad_v * dv_ds
        grad_h = grad_spike * sg + grad_v * dv_dh
        grad_x = ieee_div(grad_h, tau, COMPUTE_DTYPE)  # dH/dX = 1/tau
        grad_v = grad_h - grad_x  # dH/dV[t-1] = 1 - 1/tau
        tl.store(grad_x_ptr + neurons, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)
        grad_s_ptr -= grad_s_stride_t
        h_ptr -= n_neurons
        grad_x_ptr -= n_neurons


def _grid(n_neurons: int) -> tuple[int]:
    return (triton.cdiv(n_neurons, BLOCK),)


def lif_scan_forward(
    x_seq: torch.Tensor, tau: float, v_threshold: float, v_reset: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x_seq [T, ...] -> (spikes [T, ...] in x_seq's dtype, H [T, ...] in the compute dtype)."""
    x_seq, x_stride_t = time_major(x_seq)
    T, n_neurons = x_seq.shape[0], x_seq[0].numel()
    s_seq = torch.empty(x_seq.shape, dtype=x_seq.dtype, device=x_seq.device)
    h_seq = torch.empty(x_seq.shape, dtype=compute_dtype(x_seq.dtype), device=x_seq.device)
    launchable(lif_scan_forward_kernel)[_grid(n_neurons)](
        x_seq, s_seq, h_seq, T, n_neurons, x_stride_t,
        tau, v_threshold, 0.0 if v_reset is None else v_reset,
        HARD_RESET=v_reset is not None, COMPUTE_DTYPE=tl_compute_dtype(x_seq.dtype),
        BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return s_seq, h_seq


def lif_scan_backward(
    grad_s_seq: torch.Tensor, h_seq: torch.Tensor, tau: float, v_threshold: float,
    v_reset: float | None, surrogate: str, beta: float, detach_reset: bool,
) -> torch.Tensor:
    """BPTT: grad of the spikes [T, ...] and the saved H [T, ...] -> grad of x_seq [T, ...]."""
    grad_s_seq, grad_s_stride_t = time_major(grad_s_seq)
    T, n_neurons = h_seq.shape[0], h_seq[0].numel()
    grad_x_seq = torch.empty(h_seq.shape, dtype=grad_s_seq.dtype, device=h_seq.device)
    launchable(lif_scan_backward_kernel)[_grid(n_neurons)](
        grad_s_seq, h_seq, grad_x_seq, T, n_neurons, grad_s_stride_t,
        tau, v_threshold, 0.0 if v_reset is None else v_reset, beta,
        SURROGATE=SURROGATE_IDS[surrogate], HARD_RESET=v_reset is not None, DETACH_RESET=detach_reset,
        COMPUTE_DTYPE=tl_compute_dtype(grad_s_seq.dtype), BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return grad_x_seq
