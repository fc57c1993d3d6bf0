"""Static model of the bytes each kernel moves through global memory: the benchmarks divide it by
the measured time to report achieved bandwidth against the device's copy bandwidth.

Each input is read once and each output written once (the kernels are single pass; an input
whose step stride is 0 is one step, read T times from cache). ``H`` is saved by the LIF forward in
the compute dtype (float32 for half types), everything else is in the input dtype.
"""
from __future__ import annotations

import torch

from ..reference import compute_dtype


def spike_forward_bytes(n_elements: int, dtype: torch.dtype) -> int:
    """Read x, write S."""
    return 2 * n_elements * dtype.itemsize


def spike_backward_bytes(n_elements: int, dtype: torch.dtype) -> int:
    """Read grad S and x, write grad x."""
    return 3 * n_elements * dtype.itemsize


def lif_scan_forward_bytes(T: int, n_neurons: int, dtype: torch.dtype, x_stride_t_zero: bool = False) -> int:
    """Read X [T, n_neurons] (one step if expanded over time), write S [T, n_neurons] and H."""
    x_steps = 1 if x_stride_t_zero else T
    return n_neurons * (x_steps * dtype.itemsize + T * dtype.itemsize + T * compute_dtype(dtype).itemsize)


def lif_scan_backward_bytes(T: int, n_neurons: int, dtype: torch.dtype, grad_stride_t_zero: bool = False) -> int:
    """Read grad S [T, n_neurons] (one step if expanded over time) and H, write grad X."""
    grad_steps = 1 if grad_stride_t_zero else T
    return n_neurons * (grad_steps * dtype.itemsize + T * compute_dtype(dtype).itemsize + T * dtype.itemsize)
