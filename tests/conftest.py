"""Test setup. Without a GPU, the Triton kernels run under Triton's interpreter: it must be
switched on before snn_triton decorates its kernels, i.e. before the first import."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import snn_triton  # noqa: E402,F401  (decorates the kernels now, in the mode chosen above)
