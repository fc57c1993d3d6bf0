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


def lif_scan_forward_bytes(
    T: int,
    n_neurons: int,
    dtype: torch.dtype,
    x_stride_t_zero: bool = False,
    *,
    v_init: bool = False,
    return_v: bool = False,
    plif: bool = False,
) -> int:
    """Read X [T, n_neurons] (one step if expanded over time), write S [T, n_neurons] and H. With
    state: read V0 and write V[T-1] (compute dtype); PLIF: read the leak k (one value). A stateless
    LIF moves nothing more."""
    cdt = compute_dtype(dtype).itemsize
    x_steps = 1 if x_stride_t_zero else T
    sequences = n_neurons * (x_steps * dtype.itemsize + T * dtype.itemsize + T * cdt)
    return sequences + n_neurons * cdt * (v_init + return_v) + cdt * plif


def lif_scan_backward_bytes(
    T: int,
    n_neurons: int,
    dtype: torch.dtype,
    grad_stride_t_zero: bool = False,
    *,
    grad_v_last: bool = False,
    grad_v_init: bool = False,
    plif: bool = False,
    plif_reads_x: bool = False,
    plif_v_init: bool = False,
    programs: int = 0,
) -> int:
    """Read grad S [T, n_neurons] (one step if expanded over time) and H, write grad X. With state:
    read dL/dV[T-1], write dL/dV0 (compute dtype). PLIF: read k, and for dL/dk X (its decay_input
    form) and V0 (if given), write one partial sum per program (`programs`)."""
    cdt = compute_dtype(dtype).itemsize
    grad_steps = 1 if grad_stride_t_zero else T
    sequences = n_neurons * (grad_steps * dtype.itemsize + T * cdt + T * dtype.itemsize)
    state = n_neurons * cdt * (grad_v_last + grad_v_init)
    leak = (cdt * (1 + programs) + n_neurons * (T * dtype.itemsize * plif_reads_x + cdt * plif_v_init)) if plif else 0
    return sequences + state + leak


def lif_static_forward_bytes(T: int, n_neurons: int, dtype: torch.dtype, pooled: bool = False) -> int:
    """Read x [n_neurons] once, write the spikes [T, n_neurons] (a quarter of them, pooled); no H."""
    outputs = n_neurons // 4 if pooled else n_neurons
    return (n_neurons + T * outputs) * dtype.itemsize


def lif_static_backward_bytes(T: int, n_neurons: int, dtype: torch.dtype, pooled: bool = False) -> int:
    """Read the spikes' gradient [T, n_neurons] (pooled: a quarter) and x once, write dL/dx once."""
    outputs = n_neurons // 4 if pooled else n_neurons
    return (T * outputs + 2 * n_neurons) * dtype.itemsize


def lif_pool_forward_bytes(T: int, n_neurons: int, dtype: torch.dtype) -> int:
    """Read X [T, n_neurons] (the neurons of the 2x2 windows), write the pooled spikes (a quarter) and H."""
    return T * (
        n_neurons * dtype.itemsize + n_neurons // 4 * dtype.itemsize + n_neurons * compute_dtype(dtype).itemsize
    )


def lif_pool_backward_bytes(T: int, n_neurons: int, dtype: torch.dtype) -> int:
    """Read the pooled gradient [T, n_neurons / 4] and H, write dL/dX [T, n_neurons]."""
    return T * (
        n_neurons // 4 * dtype.itemsize + n_neurons * compute_dtype(dtype).itemsize + n_neurons * dtype.itemsize
    )


def pack_bits_bytes(n_elements: int, dtype: torch.dtype, programs: int) -> int:
    """Read the spikes, write a byte per 8 and a flag per program."""
    return n_elements * dtype.itemsize + -(-n_elements // 8) + programs


def unpack_bits_bytes(n_elements: int, dtype: torch.dtype) -> int:
    """Read a byte per 8 spikes, write the spikes."""
    return -(-n_elements // 8) + n_elements * dtype.itemsize


def pack_scaled_bytes(n_elements: int, dtype: torch.dtype, programs: int) -> int:
    """The "scaled" store's save: read x, write a byte per 8 values and, per program, its largest and
    smallest value other than 0 (x's dtype) and a flag. c's bytes after the bits come from the
    launcher's reduction of those, not from the kernel."""
    return n_elements * dtype.itemsize + -(-n_elements // 8) + programs * (2 * dtype.itemsize + 1)


def unpack_scaled_bytes(n_elements: int, dtype: torch.dtype) -> int:
    """The "scaled" store's load: read a byte per 8 values and c, write the values (0 or c)."""
    return -(-n_elements // 8) + dtype.itemsize + n_elements * dtype.itemsize


def spike_max_pool2d_forward_bytes(
    n_elements: int, n_pooled: int, dtype: torch.dtype, programs: int, pack: bool = True
) -> int:
    """The pooling of spikes, packed in the same launch: read x [n_elements] once (its windows' reads
    counted as from cache), write the pooled spikes [n_pooled], a byte per 8 spikes and a flag per program.
    Without `pack` (the neuron that makes its pooling), x and the pooled spikes only."""
    packed = -(-n_elements // 8) + programs if pack else 0
    return (n_elements + n_pooled) * dtype.itemsize + packed


def spike_max_pool2d_backward_bytes(n_elements: int, n_pooled: int, dtype: torch.dtype, bits: bool = True) -> int:
    """The pool backward: read the pooled gradient [n_pooled] and the input's spikes [n_elements], a byte
    per 8 from bits (else, the neuron's recomputed float spikes, in dtype), write dL/dx [n_elements].
    A byte or spike that several windows read comes from cache."""
    spikes = -(-n_elements // 8) if bits else n_elements * dtype.itemsize
    return n_pooled * dtype.itemsize + spikes + n_elements * dtype.itemsize
