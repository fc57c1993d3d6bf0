"""Max pooling of spikes kept as bits: forward pools and packs in one launch; backward reads the bits
and the pooled gradient alone. The same two kernels serve the neuron that makes its pooling itself
(``ops.RecomputedScanFunction``): forward pools without packing, backward reads the recomputed float
spikes in place of the bits.

Backward: one program holds a block of input cells, in the spikes' memory order (NCHW or channels-last), and
gathers: each cell sums, in row-major order of the windows, the gradients of the windows in which
it is the first maximum, so no float input, no indices and no atomics (the sums are those of
max_pool2d's backward, bit for bit, in float32 and float64). A window's first maximum is its first
spike in row-major window order, or, where it has none, its first cell inside the input (padding is
-inf). Any kernel size, stride, padding, dilation and ceil_mode (the pooled gradient's size says which
windows there are). The reference is ``snn_triton.reference.spike_max_pool2d_backward``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .bits import pack_block
from .common import NUM_WARPS, coordinates, launchable, tl_compute_dtype

# One input cell a thread: the bits and the pooled gradient are gathered one value a thread anyway,
# and each warp's store is one coalesced line. More cells a thread took registers past the bound of
# tests/test_aot_compile.py and a change of layout through shared memory for a wider store.
CELLS_PER_PROGRAM = 32 * NUM_WARPS
# The forward packs 8 spikes a thread (a byte each), as pack_bits does.
BYTES_PER_PROGRAM = 32 * NUM_WARPS


@triton.jit
def spike_bit(bits_ptr, index, mask):
    """The spike at element `index` of the bits' memory order (bit index % 8 of byte index // 8)."""
    index = tl.where(mask, index, 0)
    byte = tl.load(bits_ptr + index // 8, mask=mask, other=0)
    return mask & (((byte.to(tl.int32) >> (index % 8).to(tl.int32)) & 1) != 0)


@triton.jit
def spike_at(spikes_ptr, index, mask, BITS: tl.constexpr, COMPUTE_DTYPE: tl.constexpr):
    """The spike at element `index`: of the bits' memory order (BITS), or at offset `index` of a float
    tensor of 0s and 1s (compared in the compute dtype: bfloat16 compares are wrong in the interpreter)."""
    if BITS:
        spike = spike_bit(spikes_ptr, index, mask)
    else:
        value = tl.load(spikes_ptr + tl.where(mask, index, 0), mask=mask, other=0.0).to(COMPUTE_DTYPE)
        spike = mask & (value != 0)
    return spike


@triton.jit
def window_cell(oh, ow, k, H, W, KW, SH, SW, PH, PW, DH, DW):
    """(row, column, inside x) of cell k (row-major) of window (oh, ow)."""
    y = oh * SH - PH + (k // KW) * DH
    col = ow * SW - PW + (k % KW) * DW
    return y, col, (y >= 0) & (y < H) & (col >= 0) & (col < W)


@triton.jit
def spike_max_pool2d_forward_kernel(
    x_ptr,
    out_ptr,
    bits_ptr,
    binary_ptr,
    n_elements,
    n_out,
    C,
    H,
    W,
    OH,
    OW,
    x_stride_n,
    x_stride_c,
    x_stride_h,
    x_stride_w,
    KH,
    KW,
    SH,
    SW,
    PH,
    PW,
    DH,
    DW,
    CHANNELS_LAST: tl.constexpr,
    WIDE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    PACK: tl.constexpr,
    BYTES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """With PACK, bits of x (8 a byte, in x's memory order, as pack_bits_kernel packs them) and a flag per
    program (all 0 or 1); and, in the same program, BLOCK outputs of the max pooling (in the output's
    memory order, NCHW or channels-last), gathered from x's windows: one launch, and no indices written."""
    pid = tl.program_id(0)
    if WIDE:
        pid = pid.to(tl.int64)
    if PACK:
        pack_block(x_ptr, bits_ptr, binary_ptr, pid, n_elements, BYTES)
    o = pid * BLOCK + tl.arange(0, BLOCK)
    mask = o < n_out
    n, c, oh, ow = coordinates(o, C, OH, OW, CHANNELS_LAST)
    x_plane = n * x_stride_n + c * x_stride_c
    top = tl.full([BLOCK], float("-inf"), COMPUTE_DTYPE)  # padding is -inf
    for k in range(KH * KW):
        y, col, inside = window_cell(oh, ow, k, H, W, KW, SH, SW, PH, PW, DH, DW)
        inside = mask & inside
        index = tl.where(inside, x_plane + y * x_stride_h + col * x_stride_w, 0)
        top = tl.maximum(top, tl.load(x_ptr + index, mask=inside, other=float("-inf")).to(COMPUTE_DTYPE))
    tl.store(out_ptr + o, top.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def spike_max_pool2d_backward_kernel(
    grad_out_ptr,
    spikes_ptr,
    grad_x_ptr,
    n_elements,
    C,
    H,
    W,
    OH,
    OW,
    x_stride_n,
    x_stride_c,
    x_stride_h,
    x_stride_w,
    g_stride_n,
    g_stride_c,
    g_stride_h,
    g_stride_w,
    KH,
    KW,
    SH,
    SW,
    PH,
    PW,
    DH,
    DW,
    NH,
    NW,
    CHANNELS_LAST: tl.constexpr,
    WIDE: tl.constexpr,
    COMPUTE_DTYPE: tl.constexpr,
    BITS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """dL/dx of BLOCK cells (in x's memory order) from the pooled gradient and x's spikes: bits in x's
    memory order (BITS), else a float tensor read through its strides."""
    pid = tl.program_id(0)
    if WIDE:  # an index past 2^31 - 1
        pid = pid.to(tl.int64)
    e = pid * BLOCK + tl.arange(0, BLOCK)
    mask = e < n_elements
    n, c, i, j = coordinates(e, C, H, W, CHANNELS_LAST)
    x_plane = n * x_stride_n + c * x_stride_c
    g_plane = n * g_stride_n + c * g_stride_c
    none = KH * KW  # no such cell
    grad = tl.zeros([BLOCK], COMPUTE_DTYPE)
    # The windows holding cell (i, j) are rows oh = (i + PH) // SH - NH + 1 .. (i + PH) // SH (at most
    # NH of them) and columns alike, where cell (i, j) is the window's cell (ki, kj) if ki, kj are whole.
    for uv in range(NH * NW):  # the windows in row-major order: oh, then ow ascending
        oh = (i + PH) // SH - (NH - 1) + uv // NW
        ow = (j + PW) // SW - (NW - 1) + uv % NW
        ki_dilated = i + PH - oh * SH  # >= 0
        kj_dilated = j + PW - ow * SW
        ki = ki_dilated // DH
        kj = kj_dilated // DW
        window = mask & (oh >= 0) & (oh < OH) & (ki_dilated % DH == 0) & (ki < KH)
        window = window & (ow >= 0) & (ow < OW) & (kj_dilated % DW == 0) & (kj < KW)
        first_spike = tl.full([BLOCK], none, tl.int32)
        first_cell = tl.full([BLOCK], none, tl.int32)
        for k in range(KH * KW):  # ascending: the first one found is kept
            y, x, inside = window_cell(oh, ow, k, H, W, KW, SH, SW, PH, PW, DH, DW)
            inside = window & inside
            spike = spike_at(spikes_ptr, x_plane + y * x_stride_h + x * x_stride_w, inside, BITS, COMPUTE_DTYPE)
            first_spike = tl.where(spike & (first_spike == none), k, first_spike)
            first_cell = tl.where(inside & (first_cell == none), k, first_cell)
        first = tl.where(first_spike == none, first_cell, first_spike)
        routed = window & (first == ki * KW + kj)
        g = tl.load(grad_out_ptr + g_plane + oh * g_stride_h + ow * g_stride_w, mask=routed, other=0.0)
        grad += g.to(COMPUTE_DTYPE)
    tl.store(grad_x_ptr + e, grad.to(grad_x_ptr.dtype.element_ty), mask=mask)


def _dense_strides(shape, order) -> list[int]:
    """The element strides, dim by dim, of a dense tensor of `shape` whose dims lie in memory in
    `order` (outermost first)."""
    strides, step = [0] * len(shape), 1
    for d in reversed(order):
        strides[d] = step
        step *= shape[d]
    return strides


def _one_sample_as_batch(shape, order) -> tuple[list[int], list[int], list[int]]:
    """(shape, order, element strides) of x as [N, C, H, W]: [C, H, W] as N = 1."""
    strides = _dense_strides(shape, order)
    if len(shape) == 3:
        return [1, *shape], [0] + [d + 1 for d in order], [0, *strides]
    return list(shape), list(order), strides


def _pooled_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """max_pool2d's output size along one dim (ceil_mode: a last window that starts inside the input
    or its left padding)."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    return out - 1 if ceil_mode and (out - 1) * s >= size + p else out


def window_arguments(kernel_size, stride, padding, dilation) -> tuple[int, ...]:
    """The window as both pooling kernels take it: KH, KW, SH, SW, PH, PW, DH, DW."""
    return (*kernel_size, *stride, *padding, *dilation)


def _forward(x: torch.Tensor, order: list[int], window: tuple, ceil_mode: bool, pack: bool) -> tuple:
    """The forward kernel's launch: (pooled, bits, per-program flags; the last two empty unless `pack`)."""
    batched = x.dim() == 4
    shape, order4, x_strides = _one_sample_as_batch(list(x.shape), order)
    n, c, h, w = shape
    kh, kw, sh, sw, ph, pw, dh, dw = window_arguments(*window)
    oh, ow = _pooled_size(h, kh, sh, ph, dh, ceil_mode), _pooled_size(w, kw, sw, pw, dw, ceil_mode)
    channels_last = order4 == [0, 2, 3, 1]
    out = torch.empty((n, oh, ow, c) if channels_last else (n, c, oh, ow), dtype=x.dtype, device=x.device)
    n_elements, n_out = x.numel(), out.numel()
    programs = triton.cdiv(n_out, CELLS_PER_PROGRAM)
    if pack:
        programs = max(triton.cdiv(n_elements, 8 * BYTES_PER_PROGRAM), programs)
    bits = torch.empty(triton.cdiv(n_elements, 8) if pack else 0, dtype=torch.uint8, device=x.device)
    binary = torch.empty(programs if pack else 0, dtype=torch.int8, device=x.device)
    launchable(spike_max_pool2d_forward_kernel)[(programs,)](
        x,
        out,
        bits,
        binary,
        n_elements,
        n_out,
        c,
        h,
        w,
        oh,
        ow,
        *x_strides,
        *window_arguments(*window),
        CHANNELS_LAST=channels_last,
        WIDE=n_elements >= 2**31,
        COMPUTE_DTYPE=tl_compute_dtype(x.dtype),
        PACK=pack,
        BYTES=BYTES_PER_PROGRAM,
        BLOCK=CELLS_PER_PROGRAM,
        num_warps=NUM_WARPS,
    )
    out = out.permute(0, 3, 1, 2) if channels_last else out
    return out if batched else out[0], bits, binary


def spike_max_pool2d_forward(
    x: torch.Tensor,
    order: list[int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    ceil_mode: bool,
    pack: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """F.max_pool2d of spikes x ([N, C, H, W] or [C, H, W], dense, its dims in memory in `order`) and x's
    bits, in one launch -> (pooled, channels-last where x is, else contiguous; uint8 bits as
    ``pack_bits`` makes them of x.permute(order); 0-dim bool: every value of x is 0 or 1). Without
    `pack`, the pooling alone: the bits empty, the flag True."""
    out, bits, binary = _forward(x, order, (kernel_size, stride, padding, dilation), ceil_mode, pack)
    return out, bits, binary.bool().all()


def _backward(grad_out, spikes, bits: bool, shape, order, x_strides, window) -> torch.Tensor:
    """The backward kernel's launch for x [N, C, H, W] (`shape`) in memory order `order` (NCHW or
    channels-last, dL/dx laid out alike), its spikes read at `x_strides` (of the bits, or of `spikes`)."""
    n, c, h, w = shape
    kh, kw, sh, sw, ph, pw, dh, dw = window_arguments(*window)
    channels_last = order == [0, 2, 3, 1]
    grad_x = torch.empty((n, h, w, c) if channels_last else (n, c, h, w), dtype=grad_out.dtype, device=grad_out.device)
    n_elements = math.prod(shape)
    wide = max(n_elements, spikes.numel() * (8 if bits else 1), grad_out.numel()) >= 2**31
    launchable(spike_max_pool2d_backward_kernel)[(triton.cdiv(n_elements, CELLS_PER_PROGRAM),)](
        grad_out,
        spikes,
        grad_x,
        n_elements,
        c,
        h,
        w,
        grad_out.shape[2],
        grad_out.shape[3],
        *x_strides,
        *grad_out.stride(),
        *window_arguments(*window),
        (kh - 1) * dh // sh + 1,
        (kw - 1) * dw // sw + 1,
        CHANNELS_LAST=channels_last,
        WIDE=wide,
        COMPUTE_DTYPE=tl_compute_dtype(grad_out.dtype),
        BITS=bits,
        BLOCK=CELLS_PER_PROGRAM,
        num_warps=NUM_WARPS,
    )
    return grad_x.permute(0, 3, 1, 2) if channels_last else grad_x


def spike_max_pool2d_backward(
    grad_out: torch.Tensor,
    spikes: torch.Tensor,
    shape: list[int],
    order: list[int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """As ``reference.spike_max_pool2d_backward``: grad_out [N, C, OH, OW] or [C, OH, OW] and the spikes
    x [N, C, H, W] or [C, H, W] (`shape`) -> dL/dx in grad_out's dtype, channels-last where x was (its
    dims in memory in `order`, outermost first), else contiguous. The spikes are x's uint8 bits, packed
    in memory order `order`; or x itself (a float tensor of 0s and 1s, read through its strides), as the
    neuron that makes its pooling passes its recomputed spikes: a pack first would add the bits' write
    and read to the spikes' one read."""
    batched = len(shape) == 4
    bits = spikes.dtype == torch.uint8
    shape, order, x_strides = _one_sample_as_batch(shape, order)
    if not bits:
        x_strides = list(spikes.stride()) if batched else [0, *spikes.stride()]
    grad_out = grad_out if batched else grad_out[None]
    grad_x = _backward(grad_out, spikes, bits, shape, order, x_strides, (kernel_size, stride, padding, dilation))
    return grad_x if batched else grad_x[0]
