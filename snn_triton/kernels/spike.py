"""Elementwise spike: forward S = heaviside(x), backward grad_x = grad_s * h(x)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..surrogate import REGISTRY
from .common import BLOCK, NUM_WARPS, launchable, load_to_compare, tl_compute_dtype, to_compute
from .surrogate import surrogate_grad


@triton.jit
def spike_forward_kernel(x_ptr, s_ptr, n_elements, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    # x >= 0 is exact in every float dtype. The bool goes through float32 because the interpreter
    # cannot cast a bool straight to bfloat16.
    x = load_to_compare(x_ptr + offsets, mask)
    tl.store(s_ptr + offsets, (x >= 0).to(tl.float32).to(s_ptr.dtype.element_ty), mask=mask)


@triton.jit
def spike_backward_kernel(
    grad_s_ptr,
    x_ptr,
    grad_x_ptr,
    n_elements,
    beta: tl.float64,
    SURROGATE: tl.constexpr,
    SURROGATE_FN: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n_elements
    x = tl.load(x_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    grad_s = tl.load(grad_s_ptr + offsets, mask=mask).to(COMPUTE_DTYPE)
    grad_x = grad_s * surrogate_grad(x, to_compute(beta, COMPUTE_DTYPE), SURROGATE, SURROGATE_FN)
    tl.store(grad_x_ptr + offsets, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)


def _grid(n_elements: int) -> tuple[int]:
    return (triton.cdiv(n_elements, BLOCK),)


def spike_forward(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    s = torch.empty_like(x)
    n = x.numel()
    launchable(spike_forward_kernel)[_grid(n)](x, s, n, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return s


def spike_backward(grad_s: torch.Tensor, x: torch.Tensor, surrogate: str, beta: float) -> torch.Tensor:
    """grad_s * h(x); `surrogate` has a kernel (a built-in or a user's triton.jit function)."""
    grad_s, x = grad_s.contiguous(), x.contiguous()
    entry = REGISTRY[surrogate]
    grad_x = torch.empty_like(grad_s)
    n = x.numel()
    launchable(spike_backward_kernel)[_grid(n)](
        grad_s,
        x,
        grad_x,
        n,
        beta,
        SURROGATE=entry.kernel_id,
        SURROGATE_FN=entry.kernel_fn,
        COMPUTE_DTYPE=tl_compute_dtype(x.dtype),
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )
    return grad_x
