"""What is measured: the sizes of each suite on this device, and the inputs.

GPU: neurons 2^16..2^24, T in {4, 8, 16}, float32 and bfloat16, every combination. CPU: a size sweep
at T=8 and a T sweep at one size, small enough for a few minutes on two cores.
The libraries suite: the Open Neuromorphic benchmark's Linear + LIF, batch 16, T in {8, 500} x
neurons in {512, 4096, 16384} on a GPU, each also compiled; on a CPU the three that two cores do in minutes.
SNN_BENCH_TINY=1 (the GPU check's dry run) shrinks everything to seconds.
"""

from __future__ import annotations

import itertools
import os

import torch
from measure import ON_CUDA

TINY = os.environ.get("SNN_BENCH_TINY") == "1"
DEVICE = "cuda" if ON_CUDA else "cpu"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LIF_SURROGATE = "sigmoid"  # the one surrogate every spikingjelly backend also has built in

if TINY:
    LIF_CASES = [(4, 2**8, "float32"), (4, 2**8, "bfloat16")]  # (T, neurons, dtype)
    SPIKE_CASES = [(2**10, "float32")]  # (elements, dtype)
    NEURON_CASES = [(4, 2**8, "float32")]
    COPY_ELEMENTS = 2**16
elif ON_CUDA:
    LIF_CASES = list(itertools.product([4, 8, 16], [2**k for k in range(16, 25, 2)], DTYPES))
    SPIKE_CASES = list(itertools.product([2**k for k in range(16, 25, 2)], DTYPES))
    NEURON_CASES = list(itertools.product([8], [2**22], DTYPES))  # one size: the stage's time limit
    COPY_ELEMENTS = 2**28  # 1 GiB of float32: far past the 60 MB L2
else:
    LIF_CASES = [
        (8, 2**12, "float32"),
        (8, 2**16, "float32"),
        (4, 2**16, "float32"),
        (16, 2**16, "float32"),
        (8, 2**16, "bfloat16"),
    ]
    SPIKE_CASES = [(2**20, "float32"), (2**20, "bfloat16")]
    NEURON_CASES = [(8, 2**16, "float32")]
    COPY_ELEMENTS = 2**24  # 64 MiB: past the last-level cache

# Libraries suite, (T, neurons) at batch 16; every implementation is also compiled (the whole
# model) at LIBRARY_COMPILED, except a peer whose loop over T dynamo unrolls, beyond UNROLLED_T_MAX
# (libraries.py's docstring: which peers, and the compile times measured).
# CPU: not T=500 at 4096 or 16384, nor T=8 at 16384: the Linear's 0.07-4.3 TFLOP per forward (a
# Linear that is all one sees) would take hours on two cores; compiled at (8, 512) only, each
# compile taking tens of seconds on two cores.
LIBRARY_BATCH = 16
UNROLLED_T_MAX = 8
if TINY:
    LIBRARY_CASES = LIBRARY_COMPILED = [(4, 64)]
elif ON_CUDA:
    LIBRARY_CASES = LIBRARY_COMPILED = list(itertools.product([500, 8], [512, 4096, 16384]))  # T=500 first
else:
    LIBRARY_CASES = [(8, 512), (8, 4096), (500, 512)]
    LIBRARY_COMPILED = [(8, 512)]

# End-to-end: the seed experiment's step, and on a GPU a CIFAR-10-sized epoch at each of
# epoch_batches (the seed's 64, and a batch that fills a large GPU better).
E2E = (
    dict(T=2, batch=4, image_size=8, epoch_images=10, epoch_batches=(4,))
    if TINY
    else dict(T=8, batch=64, image_size=32, epoch_images=50_000 if ON_CUDA else 0, epoch_batches=(64, 512))
)


# Zoo suite: a training step of spikingjelly's SEW-ResNet-18, T=4 on 32x32 images, batch 64 on a GPU, 16 on a CPU.
ZOO = dict(T=2, batch=2, image_size=16) if TINY else dict(T=4, batch=64 if ON_CUDA else 16, image_size=32)


def case_id(case) -> str:
    return "-".join(f"2^{v.bit_length() - 1}" if isinstance(v, int) and v > 64 else str(v) for v in case)


def randn(shape, dtype, seed, scale=1.0, shift=0.0):
    """Gaussian input on the benchmark device, the same for every implementation of a case."""
    g = torch.Generator(DEVICE).manual_seed(seed)
    return (torch.randn(shape, generator=g, device=DEVICE) * scale + shift).to(dtype)


def lif_input(T, neurons, dtype):
    """(x_seq [T, neurons] that fires about a fifth of the time, upstream gradient [T, neurons])."""
    x_seq = randn((T, neurons), DTYPES[dtype], seed=0, scale=1.5, shift=0.5).requires_grad_()
    return x_seq, randn((T, neurons), DTYPES[dtype], seed=1)


def spike_input(elements, dtype):
    return randn((elements,), DTYPES[dtype], seed=0).requires_grad_(), randn((elements,), DTYPES[dtype], seed=1)
