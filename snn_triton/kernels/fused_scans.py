"""Scans that keep less for backward (IF and LIF neurons): a static input, and 2x2 max pooling fused in.

One program holds a block of output positions; with pooling each reads the 2x2 window of neurons it
pools, as a [BLOCK, 4] tile (the window in max_pool2d's order: (0,0), (0,1), (1,0), (1,1)), without
it one neuron ([BLOCK, 1]). The pooled spike is the window's max, an OR of four; backward routes each
window's gradient to its first maximum, as max_pool2d does (the first spike, or the first neuron).

- Static input (the same x at every step): forward keeps nothing but x. Backward is forward-mode:
  dV[t]/dx is one number per neuron, carried beside V (its charge is the charge's linear part at
  dV, dX = 1), and dL/dx = sum_t dL/dS[t] * dS[t]/dx accumulates as the steps go: H recomputed in
  registers, the gradient's sum over time written once.
- A sequence, pooled: forward writes the pooled spikes and H; backward walks t back as the plain
  scan does, the routed gradient standing in for dL/dS.

A step is [N, C, H, W], dense in NCHW or channels-last order (outputs get the input's order); a
floor of H/2 or W/2 leaves a row or column out of every window: it is not computed, and its
gradient is 0. The equations are ``kernels.neuron``'s, the reference is ``snn_triton.reference``'s.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..reference import Neuron, compute_dtype, rest_potential
from ..surrogate import REGISTRY
from .common import BLOCK as NEURONS_PER_PROGRAM
from .common import NUM_WARPS, coordinates, launchable, tl_compute_dtype, to_compute
from .neuron import backward_step, charge, reset, reset_derivatives
from .surrogate import surrogate_grad


@triton.jit
def window_offsets(o, C, H, W, POOL: tl.constexpr, CHANNELS_LAST: tl.constexpr):
    """[BLOCK, 4] offsets, in one input step, of the 2x2 windows that output positions o pool
    (o counts in the output's memory order); [BLOCK, 1] of the neurons themselves without pooling."""
    if POOL:
        H2 = H // 2
        W2 = W // 2
        n, c, i, j = coordinates(o, C, H2, W2, CHANNELS_LAST)
        if CHANNELS_LAST:
            base = ((n * H + 2 * i) * W + 2 * j) * C + c
            dx = C
            dy = W * C
        else:
            base = ((n * C + c) * H + 2 * i) * W + 2 * j
            dx = 1
            dy = W
        k = tl.arange(0, 4)
        offsets = base[:, None] + ((k % 2) * dx + (k // 2) * dy)[None, :]
    else:
        offsets = o[:, None]
    return offsets


@triton.jit
def route(grad_pooled, fired, WINDOW: tl.constexpr, COMPUTE_DTYPE: tl.constexpr):
    """dL/dS [BLOCK, WINDOW] of each window's neurons: the pooled gradient to the window's first
    maximum, 0 to the others. Spikes are 0 or 1, so that is the first neuron that fired, or, where
    none did (a tie of zeros), the first of the window."""
    if WINDOW == 1:
        grad_spike = grad_pooled[:, None]
    else:
        k = tl.arange(0, WINDOW)[None, :]
        first_fired = tl.min(tl.where(fired, k, WINDOW), axis=1)
        first_max = tl.where(first_fired == WINDOW, 0, first_fired)
        grad_spike = tl.where(k == first_max[:, None], grad_pooled[:, None], 0.0)
    return grad_spike


# T is not specialized, so one compiled kernel serves every sequence length.
@triton.jit(do_not_specialize=["T"])
def lif_pool_forward_kernel(
    x_ptr,
    s_ptr,
    h_ptr,
    T,
    n_out,
    x_stride_t,
    step_in,
    C,
    H,
    W,
    leak: tl.float64,
    v_threshold: tl.float64,
    v_reset: tl.float64,
    CHARGE_FORM: tl.constexpr,
    HARD_RESET: tl.constexpr,
    STATIC: tl.constexpr,
    POOL: tl.constexpr,
    WINDOW: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = o < n_out
    offsets = window_offsets(o, C, H, W, POOL, CHANNELS_LAST)
    window_mask = mask[:, None]  # broadcast over the window
    leak = to_compute(leak, COMPUTE_DTYPE)
    v_threshold = to_compute(v_threshold, COMPUTE_DTYPE)
    v_reset = to_compute(v_reset, COMPUTE_DTYPE)
    v = tl.zeros([BLOCK, WINDOW], COMPUTE_DTYPE) + v_reset
    if STATIC:  # read once; nothing is kept for backward
        x = tl.load(x_ptr + offsets, mask=window_mask).to(COMPUTE_DTYPE)
    for _ in range(T):
        if not STATIC:
            x = tl.load(x_ptr + offsets, mask=window_mask).to(COMPUTE_DTYPE)
            x_ptr += x_stride_t
        h = charge(v, x, leak, v_reset, CHARGE_FORM, False, COMPUTE_DTYPE)
        fired = (h - v_threshold) >= 0
        v = reset(h, fired, v_threshold, v_reset, HARD_RESET, COMPUTE_DTYPE)
        pooled = tl.max(fired.to(COMPUTE_DTYPE), axis=1)  # the OR of the window's spikes
        tl.store(s_ptr + o, pooled.to(s_ptr.dtype.element_ty), mask=mask)
        s_ptr += n_out
        if not STATIC:
            tl.store(h_ptr + offsets, h, mask=window_mask)
            h_ptr += step_in


@triton.jit(do_not_specialize=["T"])
def lif_static_backward_kernel(
    grad_s_ptr,
    x_ptr,
    grad_x_ptr,
    T,
    n_out,
    grad_stride_t,
    C,
    H,
    W,
    leak: tl.float64,
    v_threshold: tl.float64,
    v_reset: tl.float64,
    beta: tl.float64,
    CHARGE_FORM: tl.constexpr,
    HARD_RESET: tl.constexpr,
    DETACH_RESET: tl.constexpr,
    SURROGATE: tl.constexpr,
    SURROGATE_FN: tl.constexpr,
    POOL: tl.constexpr,
    WINDOW: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = o < n_out
    offsets = window_offsets(o, C, H, W, POOL, CHANNELS_LAST)
    window_mask = mask[:, None]
    leak = to_compute(leak, COMPUTE_DTYPE)
    v_threshold = to_compute(v_threshold, COMPUTE_DTYPE)
    v_reset = to_compute(v_reset, COMPUTE_DTYPE)
    beta = to_compute(beta, COMPUTE_DTYPE)
    x = tl.load(x_ptr + offsets, mask=window_mask).to(COMPUTE_DTYPE)
    v = tl.zeros([BLOCK, WINDOW], COMPUTE_DTYPE) + v_reset
    dv = tl.zeros([BLOCK, WINDOW], COMPUTE_DTYPE)  # dV[t-1]/dx
    grad_x = tl.zeros([BLOCK, WINDOW], COMPUTE_DTYPE)
    for _ in range(T):
        h = charge(v, x, leak, v_reset, CHARGE_FORM, False, COMPUTE_DTYPE)
        u = h - v_threshold
        fired = u >= 0
        dh = charge(dv, 1.0, leak, 0.0, CHARGE_FORM, False, COMPUTE_DTYPE)  # dH[t]/dx: the charge's linear part
        ds = surrogate_grad(u, beta, SURROGATE, SURROGATE_FN) * dh
        grad_pooled = tl.load(grad_s_ptr + o, mask=mask).to(COMPUTE_DTYPE)
        grad_x += route(grad_pooled, fired, WINDOW, COMPUTE_DTYPE) * ds
        dv_dh, dv_ds = reset_derivatives(h, u, v_threshold, v_reset, HARD_RESET, COMPUTE_DTYPE)
        if DETACH_RESET:
            dv = dv_dh * dh
        else:
            dv = dv_dh * dh + dv_ds * ds
        v = reset(h, fired, v_threshold, v_reset, HARD_RESET, COMPUTE_DTYPE)
        grad_s_ptr += grad_stride_t
    tl.store(grad_x_ptr + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=window_mask)


@triton.jit(do_not_specialize=["T"])
def lif_pool_backward_kernel(
    grad_s_ptr,
    h_ptr,
    grad_x_ptr,
    T,
    n_out,
    grad_stride_t,
    step_in,
    C,
    H,
    W,
    leak: tl.float64,
    v_threshold: tl.float64,
    v_reset: tl.float64,
    beta: tl.float64,
    CHARGE_FORM: tl.constexpr,
    HARD_RESET: tl.constexpr,
    DETACH_RESET: tl.constexpr,
    SURROGATE: tl.constexpr,
    SURROGATE_FN: tl.constexpr,
    WINDOW: tl.constexpr,
    CHANNELS_LAST: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = o < n_out
    offsets = window_offsets(o, C, H, W, True, CHANNELS_LAST)
    window_mask = mask[:, None]
    leak = to_compute(leak, COMPUTE_DTYPE)
    v_threshold = to_compute(v_threshold, COMPUTE_DTYPE)
    v_reset = to_compute(v_reset, COMPUTE_DTYPE)
    beta = to_compute(beta, COMPUTE_DTYPE)
    # tl.cast, not .to: torch.compile passes T == 1 as a constexpr Python int despite do_not_specialize.
    last = tl.cast(T, tl.int64) - 1
    grad_s_ptr += last * grad_stride_t
    h_ptr += last * step_in
    grad_x_ptr += last * step_in
    grad_v = tl.zeros([BLOCK, WINDOW], COMPUTE_DTYPE)  # dL/dV[t]
    for _ in range(T):
        h = tl.load(h_ptr + offsets, mask=window_mask)
        u = h - v_threshold
        grad_pooled = tl.load(grad_s_ptr + o, mask=mask).to(COMPUTE_DTYPE)
        grad_spike = route(grad_pooled, u >= 0, WINDOW, COMPUTE_DTYPE)
        sg = surrogate_grad(u, beta, SURROGATE, SURROGATE_FN)
        _, grad_x, grad_v = backward_step(
            grad_v,
            grad_spike,
            h,
            sg,
            leak,
            v_threshold,
            v_reset,
            CHARGE_FORM,
            False,
            HARD_RESET,
            DETACH_RESET,
            COMPUTE_DTYPE,
        )
        tl.store(grad_x_ptr + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=window_mask)
        grad_s_ptr -= grad_stride_t
        h_ptr -= step_in
        grad_x_ptr -= step_in


# ---- launchers ----------------------------------------------------------------------------------


def _dense_step(step: torch.Tensor) -> tuple[bool, bool]:
    """(dense, channels_last) for one step [N, C, H, W]: is it laid out as NCHW or channels-last?"""
    if step.is_contiguous():
        return True, False
    if step.is_contiguous(memory_format=torch.channels_last):
        return True, True
    return False, False


def _like_step(shape, channels_last: bool, dtype, device, leading=(), zeros=False) -> torch.Tensor:
    """A tensor [*leading, N, C, H, W], each step dense in NCHW or channels-last order."""
    n, c, h, w = shape
    make = torch.zeros if zeros else torch.empty
    if channels_last:
        return make((*leading, n, h, w, c), dtype=dtype, device=device).movedim(-1, -3)
    return make((*leading, n, c, h, w), dtype=dtype, device=device)


def _geometry(step_shape, max_pool: bool):
    """(C, H, W, n_out, window) of the kernels' indexing for one step of this shape."""
    if not max_pool:
        n = 1
        for size in step_shape:
            n *= size
        return 1, 1, 1, n, 1
    n, c, h, w = step_shape
    return c, h, w, n * c * (h // 2) * (w // 2), 4


def _launch_args(neuron: Neuron, dtype: torch.dtype, backward: bool = False):
    """The kernels' neuron arguments (the scalar leak: these scans take IF and LIF only)."""
    args = dict(
        leak=neuron.leak,
        v_threshold=neuron.v_threshold,
        v_reset=rest_potential(neuron.v_reset),
        CHARGE_FORM=neuron.charge_form,
        HARD_RESET=neuron.v_reset is not None,
        COMPUTE_DTYPE=tl_compute_dtype(dtype),
    )
    if backward:
        entry = REGISTRY[neuron.surrogate]
        args.update(
            beta=neuron.beta,
            DETACH_RESET=neuron.detach_reset,
            SURROGATE=entry.kernel_id,
            SURROGATE_FN=entry.kernel_fn,
        )
    return args


def _grid_and_block(n_out: int, window: int, dtype: torch.dtype, backward: bool) -> tuple[tuple[int], int]:
    """Output positions per program, so that registers stay under the bound of tests/test_aot_compile.py:
    without pooling, 1024 neurons (8 per thread) forward as the plain scan, 512 backward (which keeps
    the tangent, its sum and their factors besides V); pooled, windows of 512 neurons (128 outputs);
    half that in float64, whose values take two registers each, and where the outputs are not a
    multiple of 16, so that accesses cannot be vectorized and each neuron needs an address of its own."""
    neurons = NEURONS_PER_PROGRAM if window == 1 and not backward else NEURONS_PER_PROGRAM // 2
    if compute_dtype(dtype) == torch.float64:
        neurons //= 2
    if n_out % 16:
        neurons //= 2
    block = neurons // window
    return (triton.cdiv(n_out, block),), block


def _in_layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """t [T, N, C, H, W] with each step dense in the given order and the steps back to back, as the
    kernels index it: t itself where it already is (the usual case), else a copy."""
    if (
        t[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        and t.stride(0) == t[0].numel()
    ):
        return t
    out = _like_step(t.shape[1:], channels_last, t.dtype, t.device, t.shape[:1])
    return out.copy_(t)


def _step_layout(x: torch.Tensor, max_pool: bool) -> tuple[torch.Tensor, bool]:
    """x (one step [N, ...]) dense for the kernels, and whether it is channels-last."""
    if not max_pool:
        return x.contiguous(), False
    dense, channels_last = _dense_step(x)
    return (x, channels_last) if dense else (x.contiguous(), False)


def lif_static_forward(x: torch.Tensor, steps: int, neuron: Neuron, max_pool: bool) -> torch.Tensor:
    """As ``reference.lif_static_forward``: x [...] (with max_pool [N, C, H, W]) -> spikes [steps, ...]."""
    x, channels_last = _step_layout(x, max_pool)
    C, H, W, n_out, window = _geometry(x.shape, max_pool)
    if max_pool:
        s_seq = _like_step((x.shape[0], C, H // 2, W // 2), channels_last, x.dtype, x.device, (steps,))
    else:
        s_seq = torch.empty((steps, *x.shape), dtype=x.dtype, device=x.device)
    grid, block = _grid_and_block(n_out, window, x.dtype, backward=False)
    launchable(lif_pool_forward_kernel)[grid](
        x,
        s_seq,
        s_seq,
        steps,
        n_out,
        0,
        0,
        C,
        H,
        W,
        **_launch_args(neuron, x.dtype),
        STATIC=True,
        POOL=max_pool,
        WINDOW=window,
        CHANNELS_LAST=channels_last,
        BLOCK=block,
        num_warps=NUM_WARPS,
    )
    return s_seq


def lif_static_backward(grad_s_seq: torch.Tensor, x: torch.Tensor, neuron: Neuron, max_pool: bool) -> torch.Tensor:
    """As ``reference.lif_static_backward``: -> dL/dx, x's shape (and layout, with max_pool)."""
    x, channels_last = _step_layout(x, max_pool)
    C, H, W, n_out, window = _geometry(x.shape, max_pool)
    grad = _in_layout(grad_s_seq, channels_last) if max_pool else grad_s_seq.contiguous()
    if max_pool:  # a row or column outside every window gets no gradient
        grad_x = _like_step(x.shape, channels_last, grad_s_seq.dtype, x.device, zeros=bool(H % 2 or W % 2))
    else:
        grad_x = torch.empty(x.shape, dtype=grad_s_seq.dtype, device=x.device)
    grid, block = _grid_and_block(n_out, window, x.dtype, backward=True)
    launchable(lif_static_backward_kernel)[grid](
        grad,
        x,
        grad_x,
        grad.shape[0],
        n_out,
        n_out,
        C,
        H,
        W,
        **_launch_args(neuron, x.dtype, backward=True),
        POOL=max_pool,
        WINDOW=window,
        CHANNELS_LAST=channels_last,
        BLOCK=block,
        num_warps=NUM_WARPS,
    )
    return grad_x


def _sequence_layout(x_seq: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
    """x_seq [T, N, C, H, W] with each step dense (NCHW or channels-last), its step stride (0 for an
    input expanded over time, read in place), and whether it is channels-last."""
    dense, channels_last = _dense_step(x_seq[0])
    if not dense:
        x_seq = x_seq.contiguous()
        return x_seq, x_seq[0].numel(), False
    return x_seq, x_seq.stride(0), channels_last


def lif_pool_forward(x_seq: torch.Tensor, neuron: Neuron) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``reference.lif_pool_forward``: x_seq [T, N, C, H, W] -> (pooled spikes, H)."""
    x_seq, x_stride_t, channels_last = _sequence_layout(x_seq)
    T, step_shape = x_seq.shape[0], x_seq.shape[1:]
    C, H, W, n_out, window = _geometry(step_shape, True)
    n, c, h, w = step_shape
    s_seq = _like_step((n, c, h // 2, w // 2), channels_last, x_seq.dtype, x_seq.device, (T,))
    h_seq = _like_step(step_shape, channels_last, compute_dtype(x_seq.dtype), x_seq.device, (T,))
    grid, block = _grid_and_block(n_out, window, x_seq.dtype, backward=False)
    launchable(lif_pool_forward_kernel)[grid](
        x_seq,
        s_seq,
        h_seq,
        T,
        n_out,
        x_stride_t,
        h_seq[0].numel(),
        C,
        H,
        W,
        **_launch_args(neuron, x_seq.dtype),
        STATIC=False,
        POOL=True,
        WINDOW=window,
        CHANNELS_LAST=channels_last,
        BLOCK=block,
        num_warps=NUM_WARPS,
    )
    return s_seq, h_seq


def lif_pool_backward(grad_pooled_seq: torch.Tensor, h_seq: torch.Tensor, neuron: Neuron) -> torch.Tensor:
    """As ``reference.lif_pool_backward``: -> dL/dx_seq [T, N, C, H, W], laid out like H."""
    T, step_shape = h_seq.shape[0], h_seq.shape[1:]
    _, channels_last = _dense_step(h_seq[0])
    C, H, W, n_out, window = _geometry(step_shape, True)
    grad = _in_layout(grad_pooled_seq, channels_last)
    grad_x = _like_step(
        step_shape, channels_last, grad_pooled_seq.dtype, h_seq.device, (T,), zeros=bool(H % 2 or W % 2)
    )
    grid, block = _grid_and_block(n_out, window, h_seq.dtype, backward=True)
    launchable(lif_pool_backward_kernel)[grid](
        grad,
        h_seq,
        grad_x,
        T,
        n_out,
        n_out,
        h_seq[0].numel(),
        C,
        H,
        W,
        **_launch_args(neuron, grad_pooled_seq.dtype, backward=True),
        WINDOW=window,
        CHANNELS_LAST=channels_last,
        BLOCK=block,
        num_warps=NUM_WARPS,
    )
    return grad_x
