"""The static traffic model (snn_triton.kernels.traffic) counts exactly the bytes the launchers hand
their kernels to read (distinct memory of the inputs) and allocate for them to write."""

import math

import pytest
import torch
from aot import DTYPES
from helpers import DEVICE

from snn_triton import kernels, reference
from snn_triton.kernels import traffic
from snn_triton.kernels.common import scan_block

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
    """The stateless LIF (the seed's): X, S, H forward; grad S, H, grad X backward; nothing else."""
    x_seq, grad_s_seq = sequence(dtype, expanded), sequence(dtype, expanded)
    lif = reference.Neuron(reference.DECAY_INPUT, 2.0, 1.0, 0.0, "superspike", 10.0, False)
    s_seq, h_seq, v_last = kernels.lif_scan_forward(x_seq, None, lif, False)
    assert v_last.numel() == 0
    assert traffic.lif_scan_forward_bytes(T, N, dtype, x_stride_t_zero=expanded) == memory_bytes(x_seq, s_seq, h_seq)
    grad_x_seq, grad_v0, grad_leak = kernels.lif_scan_backward(grad_s_seq, h_seq, None, None, None, lif, False, False)
    assert grad_v0.numel() == 0 and grad_leak.numel() == 0
    assert traffic.lif_scan_backward_bytes(T, N, dtype, grad_stride_t_zero=expanded) == memory_bytes(
        grad_s_seq, h_seq, grad_x_seq
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("charge_form", [reference.DECAY_INPUT, reference.SCALED], ids=["decay_input", "scaled"])
def test_plif_with_state_traffic_is_what_the_launchers_read_and_write(dtype, charge_form):
    """PLIF with state: V0, V[T-1], k forward; dL/dV[T-1], dL/dV0, k, X (decay_input), V0 and the
    dL/dk partial sums backward."""
    cdt = reference.compute_dtype(dtype)
    x_seq, grad_s_seq = sequence(dtype, False), sequence(dtype, False)
    v0, grad_v = (torch.randn(NEURONS, dtype=cdt).to(DEVICE["triton"]) for _ in range(2))
    k = torch.tensor(0.4, dtype=cdt).to(DEVICE["triton"])
    plif = reference.Neuron(charge_form, k, 1.0, 0.0, "atan", 2.0, False)
    s_seq, h_seq, v_last = kernels.lif_scan_forward(x_seq, v0, plif, True)
    assert traffic.lif_scan_forward_bytes(T, N, dtype, v_init=True, return_v=True, plif=True) == memory_bytes(
        x_seq, v0, k, s_seq, h_seq, v_last
    )
    decay_input = charge_form == reference.DECAY_INPUT
    grad_x_seq, grad_v0, grad_k = kernels.lif_scan_backward(grad_s_seq, h_seq, grad_v, x_seq, v0, plif, True, True)
    programs = math.ceil(N / scan_block(dtype, N))
    read_x = (x_seq,) if decay_input else ()
    assert (
        traffic.lif_scan_backward_bytes(
            T,
            N,
            dtype,
            grad_v_last=True,
            grad_v_init=True,
            plif=True,
            plif_reads_x=decay_input,
            plif_v_init=True,
            programs=programs,
        )
        == memory_bytes(grad_s_seq, h_seq, grad_v, *read_x, v0, k, grad_x_seq, grad_v0) + programs * cdt.itemsize
    )


LIF_ATAN = reference.Neuron(reference.DECAY_INPUT, 2.0, 1.0, 0.0, "atan", 2.0, False)


def pooled_sequence(dtype, steps, channels_last=True):
    """[steps, 2, 3, 4, 6] on the kernels' device, each step channels-last (the models' layout)."""
    x = torch.randn(steps, 2, 4, 6, 3, dtype=torch.float64).to(DEVICE["triton"], dtype).movedim(-1, -3)
    return x if channels_last else x.contiguous()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pooled", [False, True], ids=["static", "static-pooled"])
def test_static_scan_traffic_is_what_the_launchers_read_and_write(dtype, pooled):
    x = pooled_sequence(dtype, 1)[0]
    n = x.numel()
    s_seq = kernels.lif_static_forward(x, T, LIF_ATAN, pooled)
    assert traffic.lif_static_forward_bytes(T, n, dtype, pooled) == memory_bytes(x, s_seq)
    grad_s_seq = torch.randn(s_seq.shape, dtype=torch.float64).to(s_seq).as_strided(s_seq.shape, s_seq.stride())
    grad_x = kernels.lif_static_backward(grad_s_seq, x, LIF_ATAN, pooled)
    assert traffic.lif_static_backward_bytes(T, n, dtype, pooled) == memory_bytes(grad_s_seq, x, grad_x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pooled_scan_traffic_is_what_the_launchers_read_and_write(dtype):
    x_seq = pooled_sequence(dtype, T)
    n = x_seq[0].numel()
    s_seq, h_seq = kernels.lif_pool_forward(x_seq, LIF_ATAN)
    assert traffic.lif_pool_forward_bytes(T, n, dtype) == memory_bytes(x_seq, s_seq, h_seq)
    grad = torch.randn(s_seq.shape, dtype=torch.float64).to(s_seq).movedim(-3, -1).contiguous().movedim(-1, -3)
    grad_x = kernels.lif_pool_backward(grad, h_seq, LIF_ATAN)
    assert traffic.lif_pool_backward_bytes(T, n, dtype) == memory_bytes(grad, h_seq, grad_x)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bit_packing_traffic_is_what_the_launchers_read_and_write(dtype):
    x = (torch.rand(1000) > 0.5).to(DEVICE["triton"], dtype)
    bits, _ = kernels.pack_bits(x)
    assert traffic.pack_bits_bytes(x.numel(), dtype, programs=1) == memory_bytes(x, bits) + 1
    out = kernels.unpack_bits(bits, x.numel(), dtype)
    assert traffic.unpack_bits_bytes(x.numel(), dtype) == memory_bytes(bits, out)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_scaled_store_traffic_is_what_the_launchers_read_and_write(dtype):
    """The save's kernel writes the bits (c's bytes after them are the launcher's) and per program two
    values and a flag; the load reads the bits and c."""
    n = 2000  # two programs
    x = ((torch.rand(n) > 0.5).to(dtype) * 2).to(DEVICE["triton"])
    saved, _ = kernels.pack_bits(x, scaled=True)
    bits = -(-n // 8)
    assert traffic.pack_scaled_bytes(n, dtype, programs=2) == memory_bytes(x) + bits + 2 * (2 * dtype.itemsize + 1)
    assert saved.numel() == bits + dtype.itemsize
    out = kernels.unpack_bits(saved, n, dtype, scaled=True)
    assert traffic.unpack_scaled_bytes(n, dtype) == memory_bytes(saved, out)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("window", [(2, 2, 0), (3, 2, 1)], ids=["k2s2", "k3s2p1"])
def test_spike_pool_traffic_is_what_the_launchers_read_and_write(dtype, window):
    x = (pooled_sequence(dtype, 1)[0] > 0).to(dtype)  # [2, 3, 4, 6] channels-last
    order = [0, 2, 3, 1]
    k, s, p = window
    out, bits, _ = kernels.spike_max_pool2d_forward(x, order, (k, k), (s, s), (p, p), (1, 1), False)
    assert traffic.spike_max_pool2d_forward_bytes(x.numel(), out.numel(), dtype, programs=1) == (
        memory_bytes(x, out, bits) + 1
    )
    grad = torch.randn(torch.nn.functional.max_pool2d(x.double(), k, s, p).shape, dtype=torch.float64).to(
        bits.device, dtype
    )
    grad_x = kernels.spike_max_pool2d_backward(grad, bits, list(x.shape), order, (k, k), (s, s), (p, p), (1, 1))
    assert traffic.spike_max_pool2d_backward_bytes(x.numel(), grad.numel(), dtype) == memory_bytes(grad, bits, grad_x)
    # the neuron that makes its pooling: nothing packed forward, backward from its float spikes
    pooled, none, _ = kernels.spike_max_pool2d_forward(x, order, (k, k), (s, s), (p, p), (1, 1), False, False)
    assert traffic.spike_max_pool2d_forward_bytes(x.numel(), pooled.numel(), dtype, 1, pack=False) == (
        memory_bytes(x, pooled, none)
    )
    grad_x = kernels.spike_max_pool2d_backward(grad, x, list(x.shape), order, (k, k), (s, s), (p, p), (1, 1))
    assert traffic.spike_max_pool2d_backward_bytes(x.numel(), grad.numel(), dtype, bits=False) == (
        memory_bytes(grad, x, grad_x)
    )
