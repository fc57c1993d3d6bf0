"""The neuron scan over time (IF, LIF, PLIF): one program per block of neurons walks T in registers.

Forward reads X[t] once and writes S[t] and H[t] (H is all that backward needs), starting from
V0 if one is given and writing V[T-1] if it is asked for. Backward is its mirror image, walking t
from T-1 down to 0 with dL/dV carried in registers, the surrogate fused, writing grad X[t] once,
and at the end dL/dV0 and PLIF's dL/dk (one partial sum per program) where asked for. The
equations are those of ``snn_triton.reference`` (``kernels.neuron``). Every option is a constexpr:
a stateless LIF loads, stores and takes nothing it does not use.

Neurons are the flattened trailing dims; each time step is contiguous, and the step stride of
the inputs is a parameter, so an input expanded over time (stride 0) is read in place.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import reference
from ..reference import Leak, Neuron, compute_dtype
from ..surrogate import PRECOMPUTED as _PRECOMPUTED
from ..surrogate import REGISTRY
from ..surrogate import surrogate_grad as torch_surrogate_grad
from .common import NUM_WARPS, launchable, scan_block, time_major, tl_compute_dtype, to_compute
from .neuron import DECAY_INPUT, backward_step, charge, charge_leak_derivative, reset
from .surrogate import surrogate_grad

PRECOMPUTED = tl.constexpr(_PRECOMPUTED)


@triton.jit
def leak_value(leak_ptr, leak, LEAK_FROM_PTR: tl.constexpr, COMPUTE_DTYPE: tl.constexpr):
    """PLIF's k (or 1 - k) from memory, computed by autograd-tracked PyTorch; LIF's scalar otherwise."""
    if LEAK_FROM_PTR:
        value = tl.load(leak_ptr).to(COMPUTE_DTYPE)
    else:
        value = to_compute(leak, COMPUTE_DTYPE)
    return value


# T is not specialized, so one compiled kernel serves every sequence length.
@triton.jit(do_not_specialize=["T"])
def lif_scan_forward_kernel(
    x_ptr,
    v_init_ptr,
    leak_ptr,
    s_ptr,
    h_ptr,
    v_last_ptr,
    T,
    n_neurons,
    x_stride_t,
    leak: tl.float64,
    v_threshold: tl.float64,
    v_reset: tl.float64,
    CHARGE_FORM: tl.constexpr,
    LEAK_FROM_PTR: tl.constexpr,
    HARD_RESET: tl.constexpr,
    HAS_V_INIT: tl.constexpr,
    RETURN_V: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    neurons = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = neurons < n_neurons
    # Scalars arrive as float64 and are rounded once to the compute dtype, as PyTorch does.
    leak = leak_value(leak_ptr, leak, LEAK_FROM_PTR, COMPUTE_DTYPE)
    v_threshold = to_compute(v_threshold, COMPUTE_DTYPE)
    v_reset = to_compute(v_reset, COMPUTE_DTYPE)  # 0 for soft reset
    if HAS_V_INIT:
        v = tl.load(v_init_ptr + neurons, mask=mask).to(COMPUTE_DTYPE)
    else:
        v = tl.zeros([BLOCK], COMPUTE_DTYPE) + v_reset
    # The pointers walk time as scalars (x_ptr += stride), not as tensors of per-neuron pointers:
    # that keeps one register pair per tensor, not one per element (tests/test_aot_compile.py).
    for _ in range(T):
        x = tl.load(x_ptr + neurons, mask=mask).to(COMPUTE_DTYPE)
        h = charge(v, x, leak, v_reset, CHARGE_FORM, LEAK_FROM_PTR, COMPUTE_DTYPE)
        fired = (h - v_threshold) >= 0
        v = reset(h, fired, v_threshold, v_reset, HARD_RESET, COMPUTE_DTYPE)
        # via the compute dtype: the interpreter cannot cast a bool straight to bfloat16
        tl.store(s_ptr + neurons, fired.to(COMPUTE_DTYPE).to(s_ptr.dtype.element_ty), mask=mask)
        tl.store(h_ptr + neurons, h, mask=mask)
        x_ptr += x_stride_t
        s_ptr += n_neurons
        h_ptr += n_neurons
    if RETURN_V:
        tl.store(v_last_ptr + neurons, v, mask=mask)


@triton.jit(do_not_specialize=["T"])
def lif_scan_backward_kernel(
    grad_s_ptr,
    h_ptr,
    grad_v_last_ptr,
    x_ptr,
    v_init_ptr,
    leak_ptr,
    sg_ptr,
    grad_x_ptr,
    grad_v_init_ptr,
    grad_leak_ptr,
    T,
    n_neurons,
    grad_s_stride_t,
    x_stride_t,
    leak: tl.float64,
    v_threshold: tl.float64,
    v_reset: tl.float64,
    beta: tl.float64,
    CHARGE_FORM: tl.constexpr,
    LEAK_FROM_PTR: tl.constexpr,
    HARD_RESET: tl.constexpr,
    DETACH_RESET: tl.constexpr,
    SURROGATE: tl.constexpr,
    SURROGATE_FN: tl.constexpr,
    HAS_GRAD_V_LAST: tl.constexpr,
    GRAD_V_INIT: tl.constexpr,
    GRAD_LEAK: tl.constexpr,
    HAS_V_INIT: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    neurons = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = neurons < n_neurons
    leak = leak_value(leak_ptr, leak, LEAK_FROM_PTR, COMPUTE_DTYPE)
    v_threshold = to_compute(v_threshold, COMPUTE_DTYPE)
    v_reset = to_compute(v_reset, COMPUTE_DTYPE)
    beta = to_compute(beta, COMPUTE_DTYPE)
    # tl.cast, not .to: torch.compile passes T == 1 as a constexpr Python int despite do_not_specialize.
    last = tl.cast(T, tl.int64) - 1
    grad_s_ptr += last * grad_s_stride_t
    h_ptr += last * n_neurons
    grad_x_ptr += last * n_neurons
    if SURROGATE == PRECOMPUTED:
        sg_ptr += last * n_neurons
    if GRAD_LEAK:
        if CHARGE_FORM == DECAY_INPUT:
            x_ptr += last * x_stride_t
        if HAS_V_INIT:  # V[-1], the potential before step 0, for dH[0]/dk
            v_first = tl.load(v_init_ptr + neurons, mask=mask).to(COMPUTE_DTYPE)
        else:
            v_first = tl.zeros([BLOCK], COMPUTE_DTYPE) + v_reset
        leak_sum = tl.zeros([BLOCK], COMPUTE_DTYPE)
    if HAS_GRAD_V_LAST:  # dL/dV[t]; V[T-1] is an output only when the state is returned
        grad_v = tl.load(grad_v_last_ptr + neurons, mask=mask).to(COMPUTE_DTYPE)
    else:
        grad_v = tl.zeros([BLOCK], COMPUTE_DTYPE)
    h = tl.load(h_ptr + neurons, mask=mask)
    for i in range(T):
        # H[t-1], loaded a step ahead: the next step's H, and PLIF's V[t-1] now (V0 at t = 0)
        has_prev = i < last
        # a block-shaped mask: triton 3.9's interpreter refuses a block mask `&` a scalar condition
        h_prev = tl.load(h_ptr - n_neurons + neurons, mask=tl.where(has_prev, mask, False), other=0.0)
        if SURROGATE == PRECOMPUTED:  # h(u) computed by the surrogate's PyTorch formula
            sg = tl.load(sg_ptr + neurons, mask=mask).to(COMPUTE_DTYPE)
            sg_ptr -= n_neurons
        else:
            sg = surrogate_grad(h - v_threshold, beta, SURROGATE, SURROGATE_FN)
        grad_spike = tl.load(grad_s_ptr + neurons, mask=mask).to(COMPUTE_DTYPE)
        grad_h, grad_x, grad_v = backward_step(
            grad_v,
            grad_spike,
            h,
            sg,
            leak,
            v_threshold,
            v_reset,
            CHARGE_FORM,
            LEAK_FROM_PTR,
            HARD_RESET,
            DETACH_RESET,
            COMPUTE_DTYPE,
        )
        if GRAD_LEAK:
            v_prev = tl.where(
                has_prev,
                reset(h_prev, (h_prev - v_threshold) >= 0, v_threshold, v_reset, HARD_RESET, COMPUTE_DTYPE),
                v_first,
            )
            if CHARGE_FORM == DECAY_INPUT:
                x = tl.load(x_ptr + neurons, mask=mask).to(COMPUTE_DTYPE)
                x_ptr -= x_stride_t
            else:
                x = v_prev  # unused by the other forms
            leak_sum += tl.where(mask, grad_h * charge_leak_derivative(v_prev, x, v_reset, CHARGE_FORM), 0.0)
        tl.store(grad_x_ptr + neurons, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)
        grad_s_ptr -= grad_s_stride_t
        h_ptr -= n_neurons
        grad_x_ptr -= n_neurons
        h = h_prev
    if GRAD_V_INIT:
        tl.store(grad_v_init_ptr + neurons, grad_v.to(grad_v_init_ptr.dtype.element_ty), mask=mask)
    if GRAD_LEAK:  # one partial sum per program, added up by the launcher: deterministic
        tl.store(grad_leak_ptr + pid, tl.sum(leak_sum, axis=0))


def _grid(n_neurons: int, block: int) -> tuple[int]:
    return (triton.cdiv(n_neurons, block),)


def _leak_args(leak: Leak) -> tuple[Optional[torch.Tensor], float]:
    """(the leak tensor or None, the scalar leak): PLIF's k lives in memory, LIF's tau is a scalar."""
    return (leak, 1.0) if isinstance(leak, torch.Tensor) else (None, leak)


def _step(t: torch.Tensor) -> torch.Tensor:
    """One step's tensor [...] laid out contiguously, in the scan's neuron order."""
    return t.contiguous()


def lif_scan_forward(
    x_seq: torch.Tensor,
    v_init: Optional[torch.Tensor],
    neuron: Neuron,
    return_v: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_seq [T, ...], v_init [...] or None -> (spikes [T, ...] in x_seq's dtype, H [T, ...] and
    V[T-1] [...] in the compute dtype; V[T-1] is empty unless return_v)."""
    x_seq, x_stride_t = time_major(x_seq)
    T, n_neurons = x_seq.shape[0], x_seq[0].numel()
    cdt = compute_dtype(x_seq.dtype)
    s_seq = torch.empty(x_seq.shape, dtype=x_seq.dtype, device=x_seq.device)
    h_seq = torch.empty(x_seq.shape, dtype=cdt, device=x_seq.device)
    v_last = torch.empty(x_seq.shape[1:] if return_v else 0, dtype=cdt, device=x_seq.device)
    leak_tensor, leak_scalar = _leak_args(neuron.leak)
    block = scan_block(x_seq.dtype, n_neurons)
    launchable(lif_scan_forward_kernel)[_grid(n_neurons, block)](
        x_seq,
        x_seq if v_init is None else _step(v_init),
        x_seq if leak_tensor is None else leak_tensor,
        s_seq,
        h_seq,
        v_last,
        T,
        n_neurons,
        x_stride_t,
        leak_scalar,
        neuron.v_threshold,
        reference.rest_potential(neuron.v_reset),
        CHARGE_FORM=neuron.charge_form,
        LEAK_FROM_PTR=leak_tensor is not None,
        HARD_RESET=neuron.v_reset is not None,
        HAS_V_INIT=v_init is not None,
        RETURN_V=return_v,
        COMPUTE_DTYPE=tl_compute_dtype(x_seq.dtype),
        BLOCK=block,
        num_warps=NUM_WARPS,
    )
    return s_seq, h_seq, v_last


def lif_scan_backward(
    grad_s_seq: torch.Tensor,
    h_seq: torch.Tensor,
    grad_v_last: Optional[torch.Tensor],
    x_seq: Optional[torch.Tensor],
    v_init: Optional[torch.Tensor],
    neuron: Neuron,
    grad_v_init: bool,
    grad_leak: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BPTT, as ``reference.lif_scan_backward``: -> (grad x_seq [T, ...], grad v_init [...],
    grad leak []); the last two are empty unless asked for."""
    grad_s_seq, grad_s_stride_t = time_major(grad_s_seq)
    T, n_neurons = h_seq.shape[0], h_seq[0].numel()
    device, cdt = h_seq.device, h_seq.dtype
    block = scan_block(cdt, n_neurons)
    grid = _grid(n_neurons, block)
    grad_x_seq = torch.empty(h_seq.shape, dtype=grad_s_seq.dtype, device=device)
    grad_v0 = torch.empty(h_seq.shape[1:] if grad_v_init else 0, dtype=cdt, device=device)
    leak_partials = torch.empty(grid[0] if grad_leak else 0, dtype=cdt, device=device)
    entry = REGISTRY[neuron.surrogate]
    sg_seq = None
    if entry.kernel_id == _PRECOMPUTED:  # a surrogate with only a PyTorch formula
        sg_seq = torch_surrogate_grad(h_seq - neuron.v_threshold, neuron.surrogate, neuron.beta).to(cdt).contiguous()
    x_stride_t = 0
    if grad_leak and neuron.charge_form == reference.DECAY_INPUT:
        x_seq, x_stride_t = time_major(x_seq)
    else:
        x_seq = None
    leak_tensor, leak_scalar = _leak_args(neuron.leak)
    if not (grad_leak and v_init is not None):
        v_init = None
    launchable(lif_scan_backward_kernel)[grid](
        grad_s_seq,
        h_seq,
        h_seq if grad_v_last is None else _step(grad_v_last),
        h_seq if x_seq is None else x_seq,
        h_seq if v_init is None else _step(v_init),
        h_seq if leak_tensor is None else leak_tensor,
        h_seq if sg_seq is None else sg_seq,
        grad_x_seq,
        grad_v0,
        leak_partials,
        T,
        n_neurons,
        grad_s_stride_t,
        x_stride_t,
        leak_scalar,
        neuron.v_threshold,
        reference.rest_potential(neuron.v_reset),
        neuron.beta,
        CHARGE_FORM=neuron.charge_form,
        LEAK_FROM_PTR=leak_tensor is not None,
        HARD_RESET=neuron.v_reset is not None,
        DETACH_RESET=neuron.detach_reset,
        SURROGATE=entry.kernel_id,
        SURROGATE_FN=entry.kernel_fn,
        HAS_GRAD_V_LAST=grad_v_last is not None,
        GRAD_V_INIT=grad_v_init,
        GRAD_LEAK=grad_leak,
        HAS_V_INIT=v_init is not None,
        COMPUTE_DTYPE=tl_compute_dtype(grad_s_seq.dtype),
        BLOCK=block,
        num_warps=NUM_WARPS,
    )
    return grad_x_seq, grad_v0, leak_partials.sum() if grad_leak else leak_partials
