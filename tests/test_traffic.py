"""The static traffic model (snn_triton.kernels.traffic) counts exactly the bytes the launchers hand
their kernels to read (distinct memory of the inputs) and allocate for them to write."""
import math

import pytest
import torch
from aot import DTYPES
from helpers import DEVICE

from snn_triton import kernels
from snn_triton.kernels import traffic

T, NEURONS = 3, (4, 5)
N = math.prod(NEURONS)


def memory_bytes(*tensors: torch.Tensor) -> int:
    """Bytes of memory behind the tensors: an input expanded over time counts once."""
    return sum(t.untyped_storage().nbytes() for t in tensors)


def sequence(dtype: torch.dtype, expanded: bool) -> torch.Tensor:
    """[T, *NEURONS] on the kernels' device; one step expanded over T (stride 0) if `expanded`."""
    x = torch.randn(1 if expanded else T, *NEURONS, dtype=torch.float64).to(DEVICE["triton"], dtype)
    return x.expand(T, *NEURONS) if expanded else x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spike_traffic_is_what_the_launchers_read_and_write(dtype):
    x, grad_s = sequence(dtype, False), sequence(dtype, False)
    s = kernels.spike_forward(x)
    assert traffic.spike_forward_bytes(x.numel(), dtype) == memory_bytes(x, s)
    grad_x = kernels.spike_backward(grad_s, x, "sigmoid", 4.0)
    assert traffic.spike_backward_bytes(x.numel(), dtype) == memory_bytes(grad_s, x, grad_x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("expanded", [False, True], ids=["dense", "stride0"])
def test_lif_scan_traffic_is_what_the_launchers_read_and_write(dtype, expanded):
    x_seq, grad_s_seq = sequence(dtype, expanded), sequence(dtype, expanded)
    s_seq, h_seq = kernels.lif_scan_forward(x_seq, 2.0, 1.0, 0.0)
    assert traffic.lif_scan_forward_bytes(T, N, dtype, x_stride_t_zero=expanded) == memory_bytes(x_seq, s_seq, h_seq)
    grad_x_seq = kernels.lif_scan_backward(grad_s_seq, h_seq, 2.0, 1.0, 0.0, "superspike", 10.0, False)
    assert (traffic.lif_scan_backward_bytes(T, N, dtype, grad_stride_t_zero=expanded)
            == memory_bytes(grad_s_seq, h_seq, grad_x_seq))
