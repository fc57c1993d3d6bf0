"""Spikes saved as bits: pack a float tensor of 0s and 1s into uint8 (8 spikes a byte, bit k of
byte b for element 8b + k), checking on the way that every value is 0 or 1; unpack back. Scaled
spikes (every value 0 or one c > 0, as after a Dropout of spikes) pack to the bits and c in one launch,
and unpack to the bits times c."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import BLOCK, NUM_WARPS, launchable, load_to_compare

BYTES_PER_PROGRAM = BLOCK // 8  # a program packs BLOCK elements


@triton.jit
def pack_tile(x_ptr, bits_ptr, pid, n_elements, BYTES: tl.constexpr):
    """Program pid's BYTES bytes of the bits of x (contiguous): bit set where x != 0. Returns its
    [BYTES, 8] values of x (bfloat16 as float32) and their mask."""
    byte = pid * BYTES + tl.arange(0, BYTES)
    element = byte[:, None] * 8 + tl.arange(0, 8)[None, :]
    mask = element < n_elements
    x = load_to_compare(x_ptr + element, mask)
    bit = (x != 0).to(tl.int32) << tl.arange(0, 8)[None, :]
    tl.store(bits_ptr + byte, tl.sum(bit, axis=1).to(tl.uint8), mask=byte * 8 < n_elements)
    return x, mask


@triton.jit
def pack_block(x_ptr, bits_ptr, binary_ptr, pid, n_elements, BYTES: tl.constexpr):
    """Program pid's BYTES bytes of the bits of x (contiguous), and its flag: are its values all 0 or 1."""
    x, mask = pack_tile(x_ptr, bits_ptr, pid, n_elements, BYTES)
    # one flag per program: are all its values 0 or 1 (the launcher reduces them, no host sync)
    not_binary = tl.where(mask & (x != 0) & (x != 1), 1, 0)
    tl.store(binary_ptr + pid, (tl.max(tl.max(not_binary, axis=1), axis=0) == 0).to(tl.int8))


@triton.jit
def pack_bits_kernel(x_ptr, bits_ptr, binary_ptr, n_elements, BYTES: tl.constexpr):
    pack_block(x_ptr, bits_ptr, binary_ptr, tl.program_id(0).to(tl.int64), n_elements, BYTES)


@triton.jit
def pack_scaled_kernel(x_ptr, bits_ptr, high_ptr, low_ptr, finite_ptr, n_elements, BYTES: tl.constexpr):
    """The bits of x (x != 0) and, per program, what the launcher checks x against: the largest and the
    smallest of its values other than 0 (0 and +inf where there are none), and a flag: are they all
    positive and finite (no NaN, no negative value)."""
    pid = tl.program_id(0).to(tl.int64)
    x, mask = pack_tile(x_ptr, bits_ptr, pid, n_elements, BYTES)
    nonzero = mask & (x != 0)
    high = tl.max(tl.max(tl.where(nonzero, x, 0.0), axis=1), axis=0)
    low = tl.min(tl.min(tl.where(nonzero, x, float("inf")), axis=1), axis=0)
    tl.store(high_ptr + pid, high.to(high_ptr.dtype.element_ty))
    tl.store(low_ptr + pid, low.to(low_ptr.dtype.element_ty))
    bad = tl.where(nonzero & ~((x > 0) & (x < float("inf"))), 1, 0)
    tl.store(finite_ptr + pid, (tl.max(tl.max(bad, axis=1), axis=0) == 0).to(tl.int8))


@triton.jit
def unpack_bits_kernel(bits_ptr, out_ptr, scale_ptr, n_elements, SCALED: tl.constexpr, BLOCK: tl.constexpr):
    """The bits as 0 and 1, or (SCALED) as 0 and the one value at scale_ptr."""
    element = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = element < n_elements
    byte = tl.load(bits_ptr + element // 8, mask=mask)
    bit = (byte.to(tl.int32) >> (element % 8).to(tl.int32)) & 1
    # via float32: the interpreter cannot cast an int straight to bfloat16
    value = bit.to(tl.float32)
    if SCALED:  # bit * c, exactly (c is finite): a select
        wide = tl.float64 if out_ptr.dtype.element_ty == tl.float64 else tl.float32
        value = tl.where(bit != 0, tl.load(scale_ptr).to(wide), 0.0)
    tl.store(out_ptr + element, value.to(out_ptr.dtype.element_ty), mask=mask)


def pack_bits(x: torch.Tensor, scaled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``reference.pack_bits``: x (contiguous) -> (uint8 bits, 0-dim bool: all values 0 or 1); with
    `scaled`, ``pack_scaled``."""
    if scaled:
        return pack_scaled(x)
    n = x.numel()
    grid = (triton.cdiv(n, BLOCK),)
    bits = torch.empty(triton.cdiv(n, 8), dtype=torch.uint8, device=x.device)
    binary = torch.empty(grid[0], dtype=torch.int8, device=x.device)
    launchable(pack_bits_kernel)[grid](x, bits, binary, n, BYTES=BYTES_PER_PROGRAM, num_warps=NUM_WARPS)
    return bits, binary.bool().all()


def pack_scaled(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (contiguous, not empty), every value 0 or one c > 0 -> (uint8: the bits of x != 0, then c's bytes
    (1 where x is all 0); 0-dim bool: whether x is 0 or c everywhere, i.e. bits and c hold x exactly).
    The bits, c's candidates and the check in one launch; the launcher reduces the per-program values.
    c is max(x), as ``torch.amax`` gives it."""
    n = x.numel()
    programs, n_bytes = triton.cdiv(n, BLOCK), triton.cdiv(n, 8)
    saved = torch.empty(n_bytes + x.element_size(), dtype=torch.uint8, device=x.device)
    high, low = (torch.empty(programs, dtype=x.dtype, device=x.device) for _ in range(2))
    finite = torch.empty(programs, dtype=torch.int8, device=x.device)
    launchable(pack_scaled_kernel)[(programs,)](
        x, saved, high, low, finite, n, BYTES=BYTES_PER_PROGRAM, num_warps=NUM_WARPS
    )
    largest = high.amax()
    c = torch.where(largest > 0, largest, torch.ones_like(largest))
    saved[n_bytes:].copy_(c.reshape(1).view(torch.uint8))
    # every value other than 0 is positive, finite and equal to the largest: min(low) can only be less
    return saved, finite.bool().all() & (low.amin() >= largest)


def _unpack(bits: torch.Tensor, numel: int, dtype: torch.dtype, scale: torch.Tensor | None) -> torch.Tensor:
    out = torch.empty(numel, dtype=dtype, device=bits.device)
    launchable(unpack_bits_kernel)[(triton.cdiv(numel, BLOCK),)](
        bits, out, bits if scale is None else scale, numel, SCALED=scale is not None, BLOCK=BLOCK, num_warps=NUM_WARPS
    )
    return out


def unpack_bits(bits: torch.Tensor, numel: int, dtype: torch.dtype, scaled: bool = False) -> torch.Tensor:
    """As ``reference.unpack_bits``: uint8 bits -> [numel] of 0 and 1 in dtype; with `scaled`,
    ``unpack_scaled``."""
    return unpack_scaled(bits, numel, dtype) if scaled else _unpack(bits, numel, dtype, None)


def unpack_scaled(saved: torch.Tensor, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """pack_scaled's inverse: its uint8 (the bits, then c) -> [numel] of 0 and c in dtype."""
    c = saved[triton.cdiv(numel, 8) :].clone().view(dtype)  # a copy: the view needs its bytes aligned
    return _unpack(saved, numel, dtype, c)
