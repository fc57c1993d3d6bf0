"""What every launcher shares: dtype mapping, time-major layout, kernel wrapping, block sizes."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton
from triton.runtime.interpreter import InterpretedFunction

from ..compiler import release
from ..reference import compute_dtype

# 1024 elements per program with 4 warps gives each thread 8 contiguous elements: two 16-byte
# loads for float32, enough bytes in flight per SM to stream at full bandwidth.
BLOCK = 1024
NUM_WARPS = 4


def scan_block(dtype: torch.dtype, n_neurons: int) -> int:
    """Neurons per program of a scan: 1024 (8 per thread), halved where 8 per thread would need more
    registers than the bound of tests/test_aot_compile.py: in float64, whose values take two
    registers each, and where the neuron count is not a multiple of 16, so that accesses cannot be
    vectorized and each neuron needs an address of its own (and quartered where both hold). 4 per
    thread is still two 16-byte accesses for float64 data."""
    block = BLOCK // 2 if compute_dtype(dtype) == torch.float64 else BLOCK
    return block // 2 if n_neurons % 16 else block


_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64}


def tl_compute_dtype(dtype: torch.dtype) -> tl.dtype:
    """The Triton dtype the kernels compute in for tensors of `dtype` (half types -> float32)."""
    return _TL_DTYPES[compute_dtype(dtype)]


def check_interpreter_numpy() -> None:
    """Raise where this Triton's interpreter cannot run on the numpy installed: triton 3.6's reads a
    loop bound with int() of a 1-element array, which numpy 2.4 refuses (3.7 and later squeeze it first).

    Raises:
        RuntimeError: under TRITON_INTERPRET=1 with triton < 3.7 and numpy >= 2.4, naming the fix.
    """
    import numpy

    if INTERPRETED and release(triton.__version__) < (3, 7) and release(numpy.__version__) >= (2, 4):
        raise RuntimeError(
            f"Triton {triton.__version__}'s interpreter (TRITON_INTERPRET=1) needs numpy < 2.4, "
            f"found {numpy.__version__}: pip install 'numpy<2.4'"
        )


def launchable(kernel):
    """The kernel in a form torch.compile can trace (interpreted kernels run as they are)."""
    if INTERPRETED:
        check_interpreter_numpy()
        return kernel
    return wrap_triton(kernel)


def time_major(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """`x` [T, ...] as (tensor, stride between steps) with each step contiguous in memory.

    A step stride of 0 (an input expanded over time) is kept, so such input is read in place.
    """
    if x[0].is_contiguous():
        return x, x.stride(0)
    x = x.contiguous()
    return x, x[0].numel()


@triton.jit
def ieee_div(x, y, COMPUTE_DTYPE: tl.constexpr):
    """x / y rounded to nearest, as PyTorch on a CPU divides (Triton's float32 `/` is approximate)."""
    if COMPUTE_DTYPE == tl.float64:
        q = x / y
    else:
        q = tl.div_rn(x, y)
    return q


@triton.jit
def to_compute(value, COMPUTE_DTYPE: tl.constexpr):
    """A float scalar argument (declared float64) rounded once to the compute dtype.

    Written as 0 + value rather than a cast: the interpreter passes the argument as a Python
    float, which a cast would first round to float32 even for a float64 kernel.
    """
    return (tl.zeros([], COMPUTE_DTYPE) + value).to(COMPUTE_DTYPE)


@triton.jit
def load_to_compare(pointers, mask):
    """Values loaded for exact compares (with 0 and 1), 0 where masked: bfloat16 upcast to float32,
    exactly, since Triton 3.9's interpreter makes a mask of the wrong size from a bfloat16 compare;
    other dtypes as they are."""
    x = tl.load(pointers, mask=mask, other=0.0)
    return x.to(tl.float32 if pointers.dtype.element_ty == tl.bfloat16 else pointers.dtype.element_ty)


@triton.jit
def coordinates(e, C, H, W, CHANNELS_LAST: tl.constexpr):
    """(n, c, i, j) of element e of [N, C, H, W] counted in memory order, NCHW or channels-last."""
    if CHANNELS_LAST:  # e = ((n * H + i) * W + j) * C + c
        c = e % C
        r = e // C
        j = r % W
        r = r // W
        i = r % H
        n = r // H
    else:  # e = ((n * C + c) * H + i) * W + j
        j = e % W
        r = e // W
        i = r % H
        r = r // H
        c = r % C
        n = r // C
    return n, c, i, j


# Whether this process decorated its kernels for Triton's CPU interpreter (TRITON_INTERPRET=1).
INTERPRETED: bool = isinstance(ieee_div, InterpretedFunction)

if INTERPRETED:  # numpy rounds each product on its own; the interpreter has no inline PTX

    @triton.jit
    def mul_rn(x, y):
        return x * y
else:

    @triton.jit
    def mul_rn(x, y):
        """x * y rounded on its own, as PyTorch on a CPU rounds it: PTX's mul.rn is never fused with a
        following add into an FMA (which Triton does by default), and, unlike libdevice's mul_rn,
        does not flush subnormal results to zero."""
        if x.dtype == tl.float64:
            product = tl.inline_asm_elementwise(
                "mul.rn.f64 $0, $1, $2;", "=d,d,d", [x, y], dtype=tl.float64, is_pure=True, pack=1
            )
        else:
            product = tl.inline_asm_elementwise(
                "mul.rn.f32 $0, $1, $2;", "=r,r,r", [x, y], dtype=tl.float32, is_pure=True, pack=1
            )
        return product
