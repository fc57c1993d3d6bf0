"""Spikes saved as bits: pack a float tensor of 0s and 1s into uint8 (8 spikes a byte, bit k of
byte b for element 8b + k), checking on the way that every value is 0 or 1; unpack back."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import BLOCK, NUM_WARPS, launchable, load_to_compare

BYTES_PER_PROGRAM = BLOCK // 8  # a program packs BLOCK elements


@triton.jit
def pack_block(x_ptr, bits_ptr, binary_ptr, pid, n_elements, BYTES: tl.constexpr):
    """Program pid's BYTES bytes of the bits of x (contiguous), and its flag: are its values all 0 or 1."""
    byte = pid * BYTES + tl.arange(0, BYTES)
    element = byte[:, None] * 8 + tl.arange(0, 8)[None, :]
    mask = element < n_elements
    x = load_to_compare(x_ptr + element, mask)
    bit = (x != 0).to(tl.int32) << tl.arange(0, 8)[None, :]
    tl.store(bits_ptr + byte, tl.sum(bit, axis=1).to(tl.uint8), mask=byte * 8 < n_elements)
    # one flag per program: are all its values 0 or 1 (the launcher reduces them, no host sync)
    not_binary = tl.where(mask & (x != 0) & (x != 1), 1, 0)
    tl.store(binary_ptr + pid, (tl.max(tl.max(not_binary, axis=1), axis=0) == 0).to(tl.int8))


@triton.jit
def pack_bits_kernel(x_ptr, bits_ptr, binary_ptr, n_elements, BYTES: tl.constexpr):
    pack_block(x_ptr, bits_ptr, binary_ptr, tl.program_id(0).to(tl.int64), n_elements, BYTES)


@triton.jit
def unpack_bits_kernel(bits_ptr, out_ptr, n_elements, BLOCK: tl.constexpr):
    element = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = element < n_elements
    byte = tl.load(bits_ptr + element // 8, mask=mask)
    bit = (byte.to(tl.int32) >> (element % 8).to(tl.int32)) & 1
    # via float32: the interpreter cannot cast an int straight to bfloat16
    tl.store(out_ptr + element, bit.to(tl.float32).to(out_ptr.dtype.element_ty), mask=mask)


def pack_bits(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``reference.pack_bits``: x (contiguous) -> (uint8 bits, 0-dim bool: all values 0 or 1)."""
    n = x.numel()
    grid = (triton.cdiv(n, BLOCK),)
    bits = torch.empty(triton.cdiv(n, 8), dtype=torch.uint8, device=x.device)
    binary = torch.empty(grid[0], dtype=torch.int8, device=x.device)
    launchable(pack_bits_kernel)[grid](x, bits, binary, n, BYTES=BYTES_PER_PROGRAM, num_warps=NUM_WARPS)
    return bits, binary.bool().all()


def unpack_bits(bits: torch.Tensor, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """As ``reference.unpack_bits``: uint8 bits -> [numel] of 0 and 1 in dtype."""
    out = torch.empty(numel, dtype=dtype, device=bits.device)
    launchable(unpack_bits_kernel)[(triton.cdiv(numel, BLOCK),)](bits, out, numel, BLOCK=BLOCK, num_warps=NUM_WARPS)
    return out
