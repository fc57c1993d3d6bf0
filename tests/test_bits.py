"""Spikes saved as bits: pack then unpack gives back x exactly, for every dtype, odd element counts
and both memory layouts; the bytes are numpy's little-endian packbits of x != 0 (bit k of byte b is
element 8b + k); the all-0-or-1 flag is false for anything else."""

import numpy as np
import pytest
import torch
from helpers import DEVICE

from snn_triton import kernels, ops, reference

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
PACKERS = {
    "reference": (reference.pack_bits, reference.unpack_bits, "torch"),
    "kernels": (kernels.pack_bits, kernels.unpack_bits, "triton"),
}


def spikes(numel, dtype, seed=0):
    return (torch.rand(numel, generator=torch.Generator().manual_seed(seed)) < 0.4).to(dtype)


@pytest.mark.parametrize("packer", PACKERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("numel", [1, 7, 8, 9, 1029], ids=lambda n: f"n{n}")  # 1029: past one program, odd
def test_unpack_of_pack_is_the_input(packer, dtype, numel):
    pack, unpack, backend = PACKERS[packer]
    x = spikes(numel, dtype, seed=numel).to(DEVICE[backend])
    bits, binary = pack(x)
    assert bits.dtype == torch.uint8 and bits.shape == (-(-numel // 8),)
    expected_bits = np.packbits(x.cpu().float().numpy() != 0, bitorder="little")
    assert np.array_equal(bits.cpu().numpy(), expected_bits), "bit k of byte b must be element 8b + k"
    assert bool(binary)
    out = unpack(bits, numel, dtype)
    assert out.dtype == dtype and out.shape == (numel,)
    assert torch.equal(out, x)


@pytest.mark.parametrize("packer", PACKERS)
@pytest.mark.parametrize("bad", [0.5, -1.0, 2.0, float("nan")])
def test_pack_flags_values_other_than_0_and_1(packer, bad):
    pack, _, backend = PACKERS[packer]
    x = spikes(1029, torch.float32)
    x[1028] = bad  # the last element, alone in the last byte and in the last program
    bits, binary = pack(x.to(DEVICE[backend]))
    assert not bool(binary)


@pytest.mark.parametrize("packer", PACKERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_pack_flags_the_values_nearest_0_and_1(packer, dtype):
    """The closest calls: the smallest subnormal, the float just below 1 and infinity, in every dtype
    (the reference's check, x - x*x == 0, must not round any of them to 0); -0.0 counts as 0."""
    pack, _, backend = PACKERS[packer]
    zero, one = torch.zeros((), dtype=dtype), torch.ones((), dtype=dtype)
    bads = [torch.nextafter(zero, one), torch.nextafter(one, zero), torch.tensor(float("inf"), dtype=dtype)]
    if packer == "kernels" and dtype == torch.bfloat16:
        bads = bads[1:]  # Triton's interpreter reads a bfloat16 subnormal as 0 (the kernel's compare is x != 0)
    for bad in bads:
        x = spikes(9, dtype)
        x[4] = bad
        assert not bool(pack(x.to(DEVICE[backend]))[1]), f"{bad.item()!r} passed as a spike"
    x = spikes(9, dtype)
    x[x == 0] = -0.0
    bits, binary = pack(x.to(DEVICE[backend]))
    assert bool(binary) and torch.equal(bits.cpu(), pack(x.abs().to(DEVICE[backend]))[0].cpu())


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "not_dense"])
def test_saved_spikes_load_back_with_the_same_values_and_strides(backend, dtype, layout):
    """save_spikes / load_spikes, the layers' round trip: [N, C, H, W] = [3, 5, 3, 3] (135 elements, odd)
    contiguous, channels_last (packed in memory order), or a slice with gaps (packed contiguous)."""
    x = spikes(3 * 5 * 3 * 6, dtype, seed=1).view(3, 5, 3, 6)
    x = {
        "contiguous": lambda: x[..., :3].contiguous(),
        "channels_last": lambda: x[..., :3].contiguous(memory_format=torch.channels_last),
        "not_dense": lambda: x[..., ::2],
    }[layout]().to(DEVICE[backend])
    bits, saved = ops.save_spikes(x, backend)
    assert bits.numel() == -(-x.numel() // 8)
    out = ops.load_spikes(bits, saved, backend)
    assert torch.equal(out, x) and out.dtype == dtype
    if layout != "not_dense":
        assert out.stride() == x.stride()
