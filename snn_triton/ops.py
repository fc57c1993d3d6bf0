"""The ops: validation, backend dispatch, autograd and torch.compile glue.

Each op is a ``torch.library.triton_op`` whose body runs the Triton launcher or the PyTorch
reference. torch.compile traces through the body: on CUDA it sees the Triton kernels, on a CPU
it sees the reference's plain tensor ops and fuses them into one loop. Autograd is registered
on the forward ops, with the backward as an op of its own.
"""
import hashlib
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor
from torch.library import triton_op

from . import reference
from .checks import LIFParams, check_backend, check_float_tensor, check_lif_params, check_time_major
from .surrogate import resolve_surrogate

try:
    from . import kernels
except ImportError:  # no triton on this platform: the reference runs everywhere
    kernels = None


def source_revision() -> str:
    """A hash of the package's Python sources.

    Every op takes it as its last argument, so that it is part of the graph torch.compile traces.
    Compiled graphs are cached on disk keyed on that graph, which shows each op's name and
    arguments but not the code its body runs (the reference, the launchers): without this, a
    changed snn_triton would be served code compiled from the old one.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


REVISION = source_revision()


def use_triton(backend: str, x: Tensor) -> bool:
    """Whether `backend` runs the Triton kernels for `x` (else the PyTorch reference)."""
    check_backend(backend)
    if backend == "torch" or x.numel() == 0:  # nothing to launch for an empty tensor
        return False
    if backend == "auto":
        return kernels is not None and x.device.type == "cuda"
    if kernels is None:
        raise ValueError("backend='triton' needs the triton package, which is not installed")
    if kernels.INTERPRETED and torch.compiler.is_compiling():
        raise ValueError("backend='triton' under TRITON_INTERPRET=1 runs in eager mode only; "
                         "under torch.compile use backend='auto' or 'torch'")
    if x.device.type == "cuda" or kernels.INTERPRETED:
        return True
    raise ValueError(
        f"backend='triton' needs a CUDA tensor, got one on {x.device}; to run the kernels on a "
        "CPU, set TRITON_INTERPRET=1 before snn_triton is first imported"
    )


# ---- spike ----------------------------------------------------------------------------------

@triton_op("snn_triton::spike_forward", mutates_args=())
def spike_forward(x: Tensor, surrogate: str, beta: float, use_triton: bool, revision: str) -> Tensor:
    """heaviside(x); `surrogate` and `beta` are kept for backward."""
    if use_triton:
        return kernels.spike_forward(x)
    return reference.spike_forward(x)


@triton_op("snn_triton::spike_backward", mutates_args=())
def spike_backward(grad_s: Tensor, x: Tensor, surrogate: str, beta: float, use_triton: bool,
                   revision: str) -> Tensor:
    if use_triton:
        return kernels.spike_backward(grad_s, x, surrogate, beta)
    return reference.spike_backward(grad_s, x, surrogate, beta)


def _spike_setup_context(ctx, inputs, output):
    x, *ctx.args = inputs
    ctx.save_for_backward(x)


def _spike_backward(ctx, grad_s):
    (x,) = ctx.saved_tensors
    return (spike_backward(grad_s, x, *ctx.args),) + (None,) * len(ctx.args)


spike_forward.register_autograd(_spike_backward, setup_context=_spike_setup_context)


def spike(x: Tensor, surrogate: str = "superspike", beta: Optional[float] = None, *,
          backend: str = "auto") -> Tensor:
    """Differentiable spike: heaviside(x) forward (1 where x >= 0), grad * h(x) backward.

    x: any shape, floating point. beta=None takes the surrogate's default (``st.SURROGATES``).
    """
    surrogate, beta = resolve_surrogate(surrogate, beta)
    return spike_checked(x, surrogate, beta, backend)


def spike_checked(x: Tensor, surrogate: str, beta: float, backend: str) -> Tensor:
    """spike for arguments that are already checked (the module checks its own once)."""
    check_float_tensor(x, "x")
    return spike_forward(x, surrogate, beta, use_triton(backend, x), REVISION)


# ---- LIF scan -------------------------------------------------------------------------------

@triton_op("snn_triton::lif_scan_forward", mutates_args=())
def lif_scan_forward(
    x_seq: Tensor, tau: float, v_threshold: float, v_reset: Optional[float],
    surrogate: str, beta: float, detach_reset: bool, use_triton: bool, revision: str,
) -> tuple[Tensor, Tensor]:
    """x_seq [T, ...] -> (spikes [T, ...], H [T, ...] saved for backward)."""
    if use_triton:
        return kernels.lif_scan_forward(x_seq, tau, v_threshold, v_reset)
    return reference.lif_scan_forward(x_seq, tau, v_threshold, v_reset)


@triton_op("snn_triton::lif_scan_backward", mutates_args=())
def lif_scan_backward(
    grad_s_seq: Tensor, h_seq: Tensor, tau: float, v_threshold: float, v_reset: Optional[float],
    surrogate: str, beta: float, detach_reset: bool, use_triton: bool, revision: str,
) -> Tensor:
    if use_triton:
        return kernels.lif_scan_backward(grad_s_seq, h_seq, tau, v_threshold, v_reset, surrogate, beta, detach_reset)
    return reference.lif_scan_backward(grad_s_seq, h_seq, tau, v_threshold, v_reset, surrogate, beta, detach_reset)


def _lif_setup_context(ctx, inputs, output):
    ctx.args = inputs[1:]
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero-filled [T, ...] gradient for H, which backward ignores
    ctx.save_for_backward(output[1])


def _lif_backward(ctx, grad_s_seq, _grad_h_seq):
    if grad_s_seq is None:  # grads are not materialized: no gradient reached the spikes
        return (None,) * (1 + len(ctx.args))
    (h_seq,) = ctx.saved_tensors
    return (lif_scan_backward(grad_s_seq, h_seq, *ctx.args),) + (None,) * len(ctx.args)


lif_scan_forward.register_autograd(_lif_backward, setup_context=_lif_setup_context)


def lif_scan_checked(x_seq: Tensor, params: LIFParams, backend: str) -> Tensor:
    """lif_scan for arguments that are already checked (the modules check theirs once)."""
    check_time_major(x_seq)
    s_seq, _ = lif_scan_forward(x_seq, *params, use_triton(backend, x_seq), REVISION)
    return s_seq


def lif_scan(x_seq: Tensor, *, tau: float = 2.0, v_threshold: float = 1.0, v_reset: Optional[float] = 0.0,
             surrogate: str = "superspike", beta: Optional[float] = None, detach_reset: bool = False,
             backend: str = "auto") -> Tensor:
    """Multi-step LIF neurons (spikingjelly's ``LIFNode(decay_input=True)``), from V = v_reset.

    x_seq: [T, ...] input current, any trailing shape, floating point.
    Returns the spikes [T, ...] in x_seq's dtype. v_reset=None selects the soft reset.
    """
    params = check_lif_params(tau, v_threshold, v_reset, surrogate, beta, detach_reset)
    return lif_scan_checked(x_seq, params, backend)
