"""Test setup. Without a GPU, the Triton kernels run under Triton's interpreter: it must be
switched on before snn_triton decorates its kernels, i.e. before the first import."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (the README's `-n auto`) each worker is a process of its own: one thread each,
# and for the subprocesses they start, so that the workers do not contend for the same cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)

import snn_triton  # noqa: E402,F401  (decorates the kernels now, in the mode chosen above)
