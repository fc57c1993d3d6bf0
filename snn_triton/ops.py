"""The ops: dispatch, autograd and torch.compile glue for the spike and the neuron scans.

Each op is a ``torch.library.triton_op`` whose body runs the Triton launchers (``kernels``) or the
PyTorch reference (``reference``), chosen once per call by ``runs_triton``. torch.compile traces
through the body: on CUDA it sees the Triton kernels, on a CPU the reference's plain tensor ops,
which it fuses into one loop. ``Op`` registers an op and appends the source revision it takes;
``register_backward`` gives a forward op its backward op as autograd.
"""

import functools
import hashlib
import inspect
import math
from pathlib import Path
from typing import Callable, Optional, get_type_hints

import torch
from torch import Tensor
from torch.library import triton_op

from . import reference
from .checks import (
    NeuronParams,
    check_backend,
    check_bool,
    check_float_tensor,
    check_neuron_params,
    check_plif_weight,
    check_state,
    check_steps,
    check_time_major,
)
from .compiler import being_compiled
from .cpu_blocks import in_cache_blocks, inverse_order, memory_order
from .surrogate import PRECOMPUTED, REGISTRY, resolve_surrogate

try:
    from . import kernels
except ImportError:  # no triton on this platform: the reference runs everywhere
    kernels = None


def source_revision() -> str:
    """A hash of the package's Python sources, every op's last argument (``Op`` adds it).

    Compiled graphs are cached on disk keyed on the graph torch.compile traces, which shows each op's
    name and arguments but not the code its body runs (the reference, the launchers): with the hash in
    the graph, a changed snn_triton misses the cache instead of being served code compiled from the
    old one. (``torch.compiler.config.cache_key_tag`` would do it too, but it is one process-wide
    setting that a user's own tag replaces.)
    """
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


REVISION = source_revision()


# ---- one choice of implementation, one registration helper ---------------------------------------


def runs_triton(backend: str, x: Tensor, surrogate: Optional[str] = None) -> bool:
    """Whether `backend` runs the Triton kernels for `x` (else the PyTorch reference): decided once per
    call, at the entry, and passed to the ops as their `use_triton`.

    A surrogate with only a PyTorch formula (``st.register_surrogate`` without a kernel) has no
    kernel in the spike's backward and the fused scans: there the reference runs, on the GPU too.
    """
    check_backend(backend)
    if backend == "torch" or x.numel() == 0:  # nothing to launch for an empty tensor
        return False
    if backend == "auto":
        chosen = kernels is not None and x.device.type == "cuda"
    elif kernels is None:
        raise ValueError("backend='triton' needs the triton package, which is not installed")
    elif kernels.INTERPRETED and being_compiled():
        raise ValueError(
            "backend='triton' under TRITON_INTERPRET=1 runs in eager mode only; "
            "under torch.compile use backend='auto' or 'torch'"
        )
    elif x.device.type == "cuda" or kernels.INTERPRETED:
        chosen = True
    else:
        raise ValueError(
            f"backend='triton' needs a CUDA tensor, got one on {x.device}; to run the kernels on a "
            "CPU, set TRITON_INTERPRET=1 before snn_triton is first imported"
        )
    return chosen and (surrogate is None or REGISTRY[surrogate].kernel_id != PRECOMPUTED)


def implementation(use_triton: bool):
    """The module an op's body runs: the Triton launchers or the PyTorch reference (same functions)."""
    return kernels if use_triton else reference


def neuron_settings_expanded(body: Callable) -> Callable:
    """`body`, whose parameter ``neuron`` is a ``reference.Neuron``, as a function taking that
    neuron's settings one by one in its place (a schema takes no tuple): the order of
    ``NeuronParams.op_settings()``, the leak a float (PLIF's leak tensor is an argument of its own)."""
    signature = inspect.signature(body)
    parameters = list(signature.parameters.values())
    at = [p.name for p in parameters].index("neuron")
    hints = get_type_hints(reference.Neuron)
    settings = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=float if name == "leak" else hint)
        for name, hint in hints.items()
    ]
    end = at + len(settings)

    @functools.wraps(body)
    def expanded(*args):
        return body(*args[:at], reference.Neuron(*args[at:end]), *args[end:])

    expanded.__signature__ = signature.replace(parameters=parameters[:at] + settings + parameters[at + 1 :])
    return expanded


def own_tensor(t: Tensor) -> Tensor:
    """A tensor of its own over t's memory, shape and strides: t, no longer a view of what made it."""
    return t.new_empty(0).set_(t.untyped_storage(), t.storage_offset(), t.shape, t.stride())


def with_outputs_of_their_own(body: Callable) -> Callable:
    """`body`, its tensor outputs that are views of a tensor it made itself (a stack's reshaped cat, say)
    made tensors of their own over the same memory (no copy): autograd forbids changing in place a
    view that a custom op returns, which the user of a layer's output may do (``spikes[..., :2] += 1``).
    Views of an input, and outputs sharing memory with another, stay as they are; compiled, nothing changes."""

    @functools.wraps(body)
    def own_outputs(*args):
        result = body(*args)
        outputs = result if isinstance(result, tuple) else (result,)
        tensors = [t for t in outputs if isinstance(t, Tensor)]
        # plain tensors only: not a FakeTensor (fake propagation, export) nor another subclass, nor meta
        plain = all(type(t) is Tensor and t.device.type != "meta" for t in tensors)
        if being_compiled() or not plain or not any(t._is_view() for t in tensors):
            return result
        inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, Tensor)}
        storages = [t.untyped_storage().data_ptr() if isinstance(t, Tensor) and t.numel() else None for t in outputs]
        fixed = tuple(
            own_tensor(t)
            if isinstance(t, Tensor) and t._is_view() and ptr not in inputs and storages.count(ptr) == 1
            else t
            for t, ptr in zip(outputs, storages)
        )
        return fixed if isinstance(result, tuple) else fixed[0]

    return own_outputs


class Op:
    """The op ``snn_triton::<body's name>`` (a ``triton_op``), called without its last argument, the
    source revision, which this adds. A body's parameter ``neuron`` (a ``reference.Neuron``) is the
    op's seven neuron settings, passed one by one (``NeuronParams.op_settings()``) and gathered into
    one ``reference.Neuron`` for the body.

    Args:
        body: the op's Python body, annotated (its schema is inferred from it), its last parameter
            ``revision: str``.

    Example:
        >>> import torch
        >>> from snn_triton import ops
        >>> ops.spike_forward(torch.tensor([-1.0, 1.0]), "superspike", 10.0, False)  # x, surrogate, beta, use_triton
        tensor([0., 1.])
        >>> ops.spike_forward.op._qualname  # the registered op
        'snn_triton::spike_forward'
    """

    def __init__(self, body: Callable, op=None):
        if op is None:
            if "neuron" in inspect.signature(body).parameters:
                body = neuron_settings_expanded(body)
            op = triton_op(f"snn_triton::{body.__name__}", with_outputs_of_their_own(body), mutates_args=())
        self.op = op

    @classmethod
    def opaque(cls, fake: Callable) -> Callable[[Callable], "Op"]:
        """A decorator: the op as a ``torch.library.custom_op``, which torch.compile does not trace into
        (`fake` gives its outputs' shapes and dtypes), for a reference that inductor must not fuse."""

        def make(body: Callable) -> Op:
            op = torch.library.custom_op(f"snn_triton::{body.__name__}", body, mutates_args=())
            op.register_fake(fake)
            return cls(body, op)

        return make

    def __call__(self, *args):
        return self.op(*args, REVISION)


def first_order(backward: Callable) -> Callable:
    """An autograd backward that refuses to build a graph of its own (``create_graph=True``: a gradient
    penalty, a Hessian, meta-learning): it computes through ops without derivatives (the kernels, the
    saved bits, H kept as a constant), whose second-order gradients would be wrong, or missing, silently.

    Raises:
        RuntimeError: the backward runs with grad mode on, in eager code.
    """

    @functools.wraps(backward)
    def run(ctx, *grads):
        if torch.is_grad_enabled() and not being_compiled():
            raise RuntimeError(
                "snn_triton: a backward with create_graph=True (double backward: a gradient penalty, a "
                "Hessian) is not supported through its neurons and lean layers; their backward is first-order"
            )
        return backward(ctx, *grads)

    return run


def register_backward(forward: Op, backward: Op, *, saved: Callable, settings_from: int) -> None:
    """Autograd for `forward`, whose first output is differentiable in its first input: backward is
    ``backward(grad, *saved tensors, *settings)``, the settings being forward's arguments from
    `settings_from` on (the revision excluded: ``Op`` adds backward's own). Further outputs are kept
    for backward only: non-differentiable, and their gradients not materialized.

    Args:
        forward: the forward op.
        backward: its backward op, returning the gradient of forward's first input.
        saved: ``(inputs, output) -> tensors`` to keep for backward.
        settings_from: the index of the first of forward's arguments that backward takes too.

    Example:
        >>> import torch
        >>> from snn_triton import ops
        >>> x = torch.tensor([-0.5, 0.5], requires_grad=True)
        >>> ops.spike_forward(x, "esser", 1.0, False).sum().backward(); x.grad  # registered below
        tensor([0.5000, 0.5000])
    """

    def setup_context(ctx, inputs, output):
        inputs = inputs[:-1]  # without the revision
        ctx.settings, ctx.n_inputs = inputs[settings_from:], len(inputs) + 1
        if isinstance(output, tuple):
            ctx.mark_non_differentiable(*output[1:])
            ctx.set_materialize_grads(False)  # no zero-filled gradients of what backward ignores
        ctx.save_for_backward(*saved(inputs, output))

    @first_order
    def backward_fn(ctx, grad, *_kept_for_backward):
        grad_input = None if grad is None else backward(grad, *ctx.saved_tensors, *ctx.settings)
        return (grad_input,) + (None,) * (ctx.n_inputs - 1)

    forward.op.register_autograd(backward_fn, setup_context=setup_context)


# ---- spike ----------------------------------------------------------------------------------


@Op
def spike_forward(x: Tensor, surrogate: str, beta: float, use_triton: bool, revision: str) -> Tensor:
    """heaviside(x); `surrogate` and `beta` are kept for backward."""
    return implementation(use_triton).spike_forward(x)


@Op
def spike_backward(grad_s: Tensor, x: Tensor, surrogate: str, beta: float, use_triton: bool, revision: str) -> Tensor:
    return implementation(use_triton).spike_backward(grad_s, x, surrogate, beta)


register_backward(spike_forward, spike_backward, saved=lambda inputs, output: inputs[:1], settings_from=1)


def spike(x: Tensor, surrogate: str = "superspike", beta: Optional[float] = None, *, backend: str = "auto") -> Tensor:
    """Differentiable spike: heaviside(x) forward (1 where x >= 0), grad * h(x) backward.

    Args:
        x: the input, any shape, floating point.
        surrogate: a registered surrogate name (``st.SURROGATES``), whose derivative h stands in for
            the step's in backward.
        beta: the surrogate's sharpness; None takes its default.
        backend: "auto" (Triton kernels on CUDA tensors, the PyTorch reference on CPU tensors),
            "triton" or "torch".

    Returns:
        The spikes, 0 or 1, in x's shape and dtype.

    Raises:
        TypeError: x is not a floating-point tensor, or beta is not a number.
        ValueError: an unknown surrogate or backend, beta not finite and > 0, or backend="triton"
            where the kernels cannot run.

    Examples:
        >>> import torch, snn_triton as st
        >>> x = torch.tensor([-0.5, 0.0, 0.5], requires_grad=True)
        >>> s = st.spike(x, "esser", beta=1.0)
        >>> s.detach()
        tensor([0., 1., 1.])
        >>> s.sum().backward(); x.grad
        tensor([0.5000, 1.0000, 0.5000])
    """
    surrogate, beta = resolve_surrogate(surrogate, beta)
    return spike_checked(x, surrogate, beta, backend)


def spike_checked(x: Tensor, surrogate: str, beta: float, backend: str) -> Tensor:
    """spike for arguments that are already checked (the module checks its own once)."""
    check_float_tensor(x, "x")
    return spike_forward(x, surrogate, beta, runs_triton(backend, x, surrogate))


# ---- neuron scan (IF, LIF, PLIF) ---------------------------------------------------------------


@Op
def lif_scan_forward(
    x_seq: Tensor,
    v_init: Optional[Tensor],
    leak_tensor: Optional[Tensor],
    neuron: reference.Neuron,
    return_v: bool,
    use_triton: bool,
    revision: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """x_seq [T, ...] -> (spikes [T, ...], H [T, ...] saved for backward, V[T-1] [...] or empty).

    The leak operand is `leak_tensor` (PLIF's) when given, else the neuron's scalar leak (LIF's)."""
    return implementation(use_triton).lif_scan_forward(x_seq, v_init, neuron.with_leak_tensor(leak_tensor), return_v)


@Op
def lif_scan_backward(
    grad_s_seq: Tensor,
    h_seq: Tensor,
    grad_v_last: Optional[Tensor],
    x_seq: Optional[Tensor],
    v_init: Optional[Tensor],
    leak_tensor: Optional[Tensor],
    neuron: reference.Neuron,
    grad_v_init: bool,
    grad_leak: bool,
    use_triton: bool,
    revision: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad x_seq, grad v_init or empty, grad of the leak tensor or empty)."""
    neuron = neuron.with_leak_tensor(leak_tensor)
    return implementation(use_triton).lif_scan_backward(
        grad_s_seq, h_seq, grad_v_last, x_seq, v_init, neuron, grad_v_init, grad_leak
    )


class ScanBackward:
    """What the scan's backward needs beside H, decided in forward: which gradients autograd asks for
    and the tensors those take. PLIF's dL/dk needs V[-1], and X where the charge form multiplies it by
    k; nothing else keeps X or V[-1]. Shared by the scan's autograd and ``RecomputedScanFunction``.

    Args:
        x_seq, v_init, leak_tensor: the scan's tensor inputs.
        settings: ``NeuronParams.op_settings()`` (charge_form first), then use_triton.
        needs_grad: autograd's (x_seq, v_init, leak_tensor) flags.
    """

    def __init__(self, x_seq: Tensor, v_init, leak_tensor, settings: tuple, needs_grad: tuple):
        self.settings, self.x_dtype = settings, x_seq.dtype
        self.grad_v_init = v_init is not None and needs_grad[1]
        self.grad_leak = leak_tensor is not None and needs_grad[2]
        self.keeps_x = self.grad_leak and settings[0] == reference.DECAY_INPUT
        self.keeps_v_init = self.grad_leak

    def saved(self, x_seq: Tensor, v_init, leak_tensor) -> tuple:
        """The inputs backward needs: X, V[-1] (None where not needed) and the leak tensor."""
        return (x_seq if self.keeps_x else None, v_init if self.keeps_v_init else None, leak_tensor)

    def raw(self, grad_s_seq, grad_v_last, h_seq, x_seq, v_init, leak_tensor) -> tuple:
        """The backward op's results: (dL/dx_seq, dL/dv_init or empty, dL/dleak_tensor or empty)."""
        if grad_s_seq is None:  # only the final potential is used
            grad_s_seq = torch.zeros(h_seq.shape, dtype=self.x_dtype, device=h_seq.device)
        *neuron, use_triton = self.settings
        return lif_scan_backward(
            grad_s_seq,
            h_seq,
            grad_v_last,
            x_seq,
            v_init,
            leak_tensor,
            *neuron,
            self.grad_v_init,
            self.grad_leak,
            use_triton,
        )

    def finish(self, grads: tuple, leak_tensor) -> tuple:
        """raw's results as autograd takes them: None for what was not asked, the leak's in its dtype."""
        grad_x, grad_v_init, grad_leak = grads
        return (
            grad_x,
            grad_v_init if self.grad_v_init else None,
            grad_leak.to(leak_tensor.dtype) if self.grad_leak else None,
        )

    def __call__(self, grad_s_seq, grad_v_last, h_seq, x_seq, v_init, leak_tensor) -> tuple:
        """-> (dL/dx_seq, dL/dv_init or None, dL/dleak_tensor or None)."""
        return self.finish(self.raw(grad_s_seq, grad_v_last, h_seq, x_seq, v_init, leak_tensor), leak_tensor)


def _scan_setup_context(ctx, inputs, output):
    x_seq, v_init, leak_tensor, *settings, return_v, use_triton, _revision = inputs
    ctx.scan = ScanBackward(x_seq, v_init, leak_tensor, (*settings, use_triton), ctx.needs_input_grad)
    ctx.n_inputs = len(inputs)
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)  # no zero-filled [T, ...] gradient for H, which backward ignores
    ctx.save_for_backward(output[1], *ctx.scan.saved(x_seq, v_init, leak_tensor))


@first_order
def _scan_backward(ctx, grad_s_seq, _grad_h_seq, grad_v_last):
    nones = (None,) * (ctx.n_inputs - 3)
    if grad_s_seq is None and grad_v_last is None:  # grads are not materialized: none reached the outputs
        return (None, None, None) + nones
    return ctx.scan(grad_s_seq, grad_v_last, *ctx.saved_tensors) + nones


lif_scan_forward.op.register_autograd(_scan_backward, setup_context=_scan_setup_context)


# ---- static input and fused 2x2 max pooling (IF and LIF): less kept for backward ----------------


@Op
def lif_static_forward(
    x: Tensor,
    steps: int,
    neuron: reference.Neuron,
    max_pool: bool,
    use_triton: bool,
    revision: str,
) -> Tensor:
    """x [...] fed at every step -> spikes [steps, ...] (2x2 max-pooled if max_pool); keeps only x."""
    return implementation(use_triton).lif_static_forward(x, steps, neuron, max_pool)


@Op
def lif_static_backward(
    grad_s_seq: Tensor,
    x: Tensor,
    neuron: reference.Neuron,
    max_pool: bool,
    use_triton: bool,
    revision: str,
) -> Tensor:
    """-> dL/dx [...], the sum over time formed directly (forward-mode, H recomputed)."""
    return implementation(use_triton).lif_static_backward(grad_s_seq, x, neuron, max_pool)


register_backward(lif_static_forward, lif_static_backward, saved=lambda inputs, output: inputs[:1], settings_from=2)


@Op
def lif_pool_forward(
    x_seq: Tensor,
    neuron: reference.Neuron,
    use_triton: bool,
    revision: str,
) -> tuple[Tensor, Tensor]:
    """x_seq [T, N, C, H, W] -> (2x2 max-pooled spikes [T, N, C, H//2, W//2], H kept for backward)."""
    return implementation(use_triton).lif_pool_forward(x_seq, neuron)


@Op
def lif_pool_backward(
    grad_pooled_seq: Tensor,
    h_seq: Tensor,
    neuron: reference.Neuron,
    use_triton: bool,
    revision: str,
) -> Tensor:
    """-> dL/dx_seq, routed to each window's first maximum as max_pool2d routes it."""
    return implementation(use_triton).lif_pool_backward(grad_pooled_seq, h_seq, neuron)


register_backward(lif_pool_forward, lif_pool_backward, saved=lambda inputs, output: output[1:], settings_from=1)


def fused_scan(x: Tensor, params: NeuronParams, steps: Optional[int], max_pool: bool, backend: str) -> Tensor:
    """The static-input and the pooled scans of IF and LIF (checked arguments): see ``lif_scan``'s steps
    and max_pool."""
    if steps is not None:
        check_float_tensor(
            x,
            "x",
            min_dim=4 if max_pool else 1,
            what=" ([N, C, H, W] with max_pool)" if max_pool else " (one step, [N, ...], with steps)",
        )
    else:
        check_time_major(x)
        if x.dim() != 5:
            raise ValueError(f"x_seq must be [T, N, C, H, W] with max_pool, got shape {tuple(x.shape)}")
    if max_pool and (x.dim() != (4 if steps is not None else 5) or min(x.shape[-2:]) < 2):
        raise ValueError(f"max_pool takes [..., N, C, H, W] with H, W >= 2 (2x2 windows), got shape {tuple(x.shape)}")
    use_triton = runs_triton(backend, x, params.surrogate)
    if not use_triton and being_compiled() and not x.is_contiguous():
        # inductor's code for these scans (and the pooling in them) runs slower on channels-last
        # input than on a contiguous copy of it, the copy included
        x = x.contiguous()
    if steps is not None:
        return lif_static_forward(x, steps, *params.op_settings(), max_pool, use_triton)
    return lif_pool_forward(x, *params.op_settings(), use_triton)[0]


def leak_tensor_of(params: NeuronParams, w: Optional[Tensor], x_seq: Tensor) -> Optional[Tensor]:
    """PLIF's leak operand, from its checked weight w (None for IF and LIF, whose leak is a float)."""
    if params.neuron != "plif":
        return None
    k = check_plif_weight(w, x_seq).reshape(()).sigmoid()  # in w's dtype, as spikingjelly rounds it
    return reference.plif_leak(k, params.charge_form)


def neuron_scan(
    x_seq: Tensor,
    params: NeuronParams,
    *,
    w: Optional[Tensor] = None,
    v_init: Optional[Tensor] = None,
    return_v: bool = False,
    backend: str = "auto",
    steps: Optional[int] = None,
    max_pool: bool = False,
):
    """The scan of any neuron for checked settings (the modules check theirs once; the public functions
    check theirs and call this): checks the tensors, chooses the implementation, runs the op. Returns
    the spikes [T, ...], and with return_v the final membrane potential [...] as well (compute dtype)."""
    if steps is not None or max_pool:
        if v_init is not None or return_v:
            raise ValueError("v_init and return_v cannot be combined with steps or max_pool")
        return fused_scan(x_seq, params, steps, max_pool, backend)
    check_time_major(x_seq)
    v_init = check_state(v_init, x_seq)
    leak_tensor = leak_tensor_of(params, w, x_seq)
    s_seq, _, v_last = lif_scan_forward(
        x_seq, v_init, leak_tensor, *params.op_settings(), return_v, runs_triton(backend, x_seq)
    )
    return (s_seq, v_last) if return_v else s_seq


def lif_scan(
    x_seq: Tensor,
    *,
    tau: float = 2.0,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    surrogate: str = "superspike",
    beta: Optional[float] = None,
    detach_reset: bool = False,
    v_init: Optional[Tensor] = None,
    return_v: bool = False,
    steps: Optional[int] = None,
    max_pool: bool = False,
    backend: str = "auto",
):
    """Multi-step LIF neurons, spikingjelly's ``LIFNode``, over a whole sequence.

    The charge is ``H = V + (X - (V - v_reset)) / tau`` (decay_input=True) or
    ``H = V - (V - v_reset) / tau + X`` (decay_input=False); then ``S = H >= v_threshold`` and the
    reset ``V = v_reset`` where S (hard) or ``V = H - S * v_threshold`` (soft, v_reset=None).
    Backward is BPTT with the surrogate's h standing in for dS/dH.

    Args:
        x_seq: the input current `[T, N, ...]`, floating point; with ``steps``, one step `[N, ...]`.
        tau: the membrane time constant, > 0.
        decay_input: whether the input is divided by tau too.
        v_threshold: the firing threshold.
        v_reset: the potential after a spike; None selects the soft reset.
        surrogate: a registered surrogate name (``st.SURROGATES``).
        beta: the surrogate's sharpness; None takes its default.
        detach_reset: detach S in the reset (no gradient through it).
        v_init: the potential before step 0 `[N, ...]` (None: v_reset, or 0 for the soft reset).
        return_v: also return the final potential `V[T-1]`.
        steps: x_seq is one step's input `[N, ...]` fed at each of ``steps`` steps; only it is kept
            for backward, which recomputes H and sums the gradient over time as it goes.
        max_pool: 2x2 max-pool the spikes of `[T, N, C, H, W]` (or, with steps, of `[N, C, H, W]`);
            backward routes each window's gradient to its first maximum, as ``F.max_pool2d`` does.
        backend: "auto" (Triton kernels on CUDA tensors, the PyTorch reference on CPU tensors),
            "triton" or "torch".

    Returns:
        The spikes `[T, N, ...]` (`[T, N, C, H//2, W//2]` with max_pool) in x_seq's dtype; with
            return_v, a tuple (spikes, `V[T-1]` `[N, ...]` in the compute dtype, float32 for half inputs).
            Both are differentiable.

    Raises:
        TypeError: an argument of the wrong type (x_seq not a floating-point tensor, a flag not a bool).
        ValueError: a bad value or shape (tau <= 0, an unknown surrogate, v_init of another shape,
            steps or max_pool with v_init or return_v, max_pool on anything but `[T, N, C, H, W]`).

    Examples:
        >>> import torch, snn_triton as st
        >>> x_seq = torch.full((4, 2), 1.2)  # H: 0.6, 0.9, 1.05 (fires, V = 0), 0.6
        >>> st.lif_scan(x_seq, tau=2.0)
        tensor([[0., 0.],
                [0., 0.],
                [1., 1.],
                [0., 0.]])
        >>> spikes, v = st.lif_scan(x_seq, tau=2.0, return_v=True); v
        tensor([0.6000, 0.6000])
    """
    params = check_neuron_params(
        "lif",
        tau=tau,
        decay_input=decay_input,
        v_threshold=v_threshold,
        v_reset=v_reset,
        surrogate=surrogate,
        beta=beta,
        detach_reset=detach_reset,
    )
    return neuron_scan(
        x_seq,
        params,
        v_init=v_init,
        return_v=check_bool(return_v, "return_v"),
        backend=backend,
        steps=check_steps(steps),
        max_pool=check_bool(max_pool, "max_pool"),
    )


def if_scan(
    x_seq: Tensor,
    *,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    surrogate: str = "superspike",
    beta: Optional[float] = None,
    detach_reset: bool = False,
    v_init: Optional[Tensor] = None,
    return_v: bool = False,
    steps: Optional[int] = None,
    max_pool: bool = False,
    backend: str = "auto",
):
    """Multi-step integrate-and-fire neurons, spikingjelly's ``IFNode``: ``H = V + X``, no leak.

    Fire, reset and backward are ``lif_scan``'s.

    Args:
        x_seq: the input current `[T, N, ...]`, floating point; with ``steps``, one step `[N, ...]`.
        v_threshold: the firing threshold.
        v_reset: the potential after a spike; None selects the soft reset.
        surrogate: a registered surrogate name (``st.SURROGATES``).
        beta: the surrogate's sharpness; None takes its default.
        detach_reset: detach S in the reset (no gradient through it).
        v_init: the potential before step 0 `[N, ...]` (None: v_reset, or 0 for the soft reset).
        return_v: also return the final potential `V[T-1]`.
        steps: x_seq is one step's input `[N, ...]` fed at each of ``steps`` steps (see ``lif_scan``).
        max_pool: 2x2 max-pool the spikes (see ``lif_scan``).
        backend: "auto", "triton" or "torch" (see ``lif_scan``).

    Returns:
        The spikes `[T, N, ...]` in x_seq's dtype; with return_v, (spikes, `V[T-1]` `[N, ...]`).

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad value or shape, as for ``lif_scan``.

    Examples:
        >>> import torch, snn_triton as st
        >>> st.if_scan(torch.full((3, 1), 0.6))
        tensor([[0.],
                [1.],
                [0.]])
    """
    params = check_neuron_params(
        "if", v_threshold=v_threshold, v_reset=v_reset, surrogate=surrogate, beta=beta, detach_reset=detach_reset
    )
    return neuron_scan(
        x_seq,
        params,
        v_init=v_init,
        return_v=check_bool(return_v, "return_v"),
        backend=backend,
        steps=check_steps(steps),
        max_pool=check_bool(max_pool, "max_pool"),
    )


def plif_scan(
    x_seq: Tensor,
    w: Tensor,
    *,
    decay_input: bool = True,
    v_threshold: float = 1.0,
    v_reset: Optional[float] = 0.0,
    surrogate: str = "superspike",
    beta: Optional[float] = None,
    detach_reset: bool = False,
    v_init: Optional[Tensor] = None,
    return_v: bool = False,
    backend: str = "auto",
):
    """Multi-step parametric LIF neurons (Fang et al. 2021), spikingjelly's ``ParametricLIFNode``.

    The LIF charge with ``1/tau = k = sigmoid(w)`` multiplied, w learned; dL/dw comes back through
    autograd. Fire, reset and backward are ``lif_scan``'s.

    Args:
        x_seq: the input current `[T, N, ...]`, floating point.
        w: the leak's parameter, a one-element floating-point tensor on x_seq's device.
        decay_input: whether the input is multiplied by k too.
        v_threshold: the firing threshold.
        v_reset: the potential after a spike; None selects the soft reset.
        surrogate: a registered surrogate name (``st.SURROGATES``).
        beta: the surrogate's sharpness; None takes its default.
        detach_reset: detach S in the reset (no gradient through it).
        v_init: the potential before step 0 `[N, ...]` (None: v_reset, or 0 for the soft reset).
        return_v: also return the final potential `V[T-1]`.
        backend: "auto", "triton" or "torch" (see ``lif_scan``).

    Returns:
        The spikes `[T, N, ...]` in x_seq's dtype; with return_v, (spikes, `V[T-1]` `[N, ...]`).

    Raises:
        TypeError: an argument of the wrong type (w not a tensor, say).
        ValueError: a bad value or shape (w with more than one element, on another device, ...).

    Examples:
        >>> import torch, snn_triton as st
        >>> w = torch.zeros((), requires_grad=True)  # k = 1/2: tau = 2
        >>> spikes = st.plif_scan(torch.full((3, 2), 1.5), w)
        >>> spikes.sum().backward(); w.grad is not None
        True
    """
    params = check_neuron_params(
        "plif",
        decay_input=decay_input,
        v_threshold=v_threshold,
        v_reset=v_reset,
        surrogate=surrogate,
        beta=beta,
        detach_reset=detach_reset,
    )
    return neuron_scan(x_seq, params, w=w, v_init=v_init, return_v=check_bool(return_v, "return_v"), backend=backend)


# ---- spikes saved as bits by the layers they feed -----------------------------------------------


@Op
def pack_spikes_triton(x: Tensor, scaled: bool, revision: str) -> tuple[Tensor, Tensor]:
    """x (contiguous) -> (uint8 bits, 8 a byte; 0-dim bool: whether every value is 0 or 1). `scaled`:
    every value 0 or c = max(x), c's bytes after the bits, the bool whether x is 0 or c everywhere."""
    return kernels.pack_bits(x, scaled)


@Op
def unpack_spikes_triton(bits: Tensor, numel: int, dtype: torch.dtype, scaled: bool, revision: str) -> Tensor:
    return kernels.unpack_bits(bits, numel, dtype, scaled)


# The reference's packing is opaque to torch.compile (a custom op, not traced into): inductor fused
# the packing, and its all-0-or-1 check, into the scan that made the spikes, and the fused CPU
# kernel took several times what the scan and the packing take apart.
@Op.opaque(
    fake=lambda x, revision: (x.new_empty(-(-x.numel() // 8), dtype=torch.uint8), x.new_empty((), dtype=torch.bool))
)
def pack_spikes_reference(x: Tensor, revision: str) -> tuple[Tensor, Tensor]:
    return reference.pack_bits(x)


@Op.opaque(fake=lambda bits, numel, dtype, revision: bits.new_empty(numel, dtype=dtype))
def unpack_spikes_reference(bits: Tensor, numel: int, dtype: torch.dtype, revision: str) -> Tensor:
    return reference.unpack_bits(bits, numel, dtype)


def pack_spikes(x: Tensor, use_triton: bool) -> tuple[Tensor, Tensor]:
    if use_triton:
        return pack_spikes_triton(x, False)
    # eager, the reference itself: the custom op is for torch.compile (not to trace into), and its dispatch costs
    return pack_spikes_reference(x) if being_compiled() else reference.pack_bits(x)


def unpack_spikes(bits: Tensor, numel: int, dtype: torch.dtype, use_triton: bool) -> Tensor:
    if use_triton:
        return unpack_spikes_triton(bits, numel, dtype, False)
    if being_compiled():
        return unpack_spikes_reference(bits, numel, dtype)
    return reference.unpack_bits(bits, numel, dtype)


NOT_SPIKES = (
    "a Spike layer's input must be spikes, every value 0 or 1: it keeps its input for "
    "backward as bits, which hold nothing else (use the plain torch.nn layer for other input)"
)


def dense_order(x: Tensor) -> Optional[list[int]]:
    """The order of x's dims in memory (outermost first) where x is dense (no gaps, no overlaps):
    x.permute(order) is contiguous, so its memory is read as it lies; None where x is not dense."""
    order = memory_order(x)
    return order if x.permute(order).is_contiguous() else None


def in_memory_order(x: Tensor) -> tuple[Tensor, tuple]:
    """x as it lies in memory (a contiguous permutation of it, or a contiguous copy where x is not
    dense) and the layout that rebuilds x from it: (shape in memory, order of x's dims or None, dtype)."""
    order = None if x.is_contiguous() else dense_order(x)  # None: contiguous as it is, no sort or permute
    dense = x.permute(order) if order is not None else x.contiguous()
    return dense, (dense.shape, order, x.dtype)


def in_layout(flat: Tensor, layout: tuple) -> Tensor:
    """in_memory_order's inverse: the values of `flat`, in memory order, as x's shape and strides."""
    shape, order, _ = layout
    dense = flat.view(shape)
    return dense.permute(inverse_order(order)) if order is not None else dense


def save_spikes(x: Tensor, backend: str, not_spikes: str = NOT_SPIKES) -> tuple[Tensor, tuple]:
    """x (0s and 1s) as bits, in its memory order, and what rebuilding it takes. Asserts on the device
    that x holds nothing else (no host sync; on a CPU, at once), with the message `not_spikes`."""
    dense, layout = in_memory_order(x)
    bits, binary = pack_spikes(dense, runs_triton(backend, x))
    torch._assert_async(binary, not_spikes)
    return bits, layout


def load_spikes(bits: Tensor, layout: tuple, backend: str) -> Tensor:
    """save_spikes' inverse: the same values, shape and strides."""
    shape, _, dtype = layout
    return in_layout(unpack_spikes(bits, math.prod(shape), dtype, runs_triton(backend, bits)), layout)


# How a layer fed spikes keeps its input for backward: "bits" (every value 0 or 1, 8 a byte),
# "uint8" (small non-negative integers, such as sums of spikes, one a byte) or "scaled" (every value
# 0 or one factor c, such as spikes after a Dropout, 1/(1-p): bits and c).
STORES = ("bits", "uint8", "scaled")
NOT_SMALL_INTS = (
    "a lean layer's input must be integers in [0, 255] (sums of spikes): it keeps its input "
    "for backward as uint8, which holds nothing else"
)
NOT_SCALED_SPIKES = (
    "a lean layer's input must be spikes times one factor (0 or c, as after a Dropout of spikes): it "
    "keeps its input for backward as bits and c, which hold nothing else"
)


def save_input(x: Tensor, store: str, backend: str) -> tuple[Tensor, tuple]:
    """x kept as `store` says (one of STORES), and what rebuilding it takes; asserts on the device that
    the store holds x exactly."""
    if store == "bits":
        return save_spikes(x, backend)
    if store == "scaled" and runs_triton(backend, x):  # the max, the bits and the check in one launch
        dense, layout = in_memory_order(x)
        saved, exact = pack_spikes_triton(dense, True)
        torch._assert_async(exact, NOT_SCALED_SPIKES)
        return saved, (layout, x.element_size())
    if store == "scaled":
        # Every value is 0 or c = max(x) (finite; 1 where x has no value above 0), compared as it is:
        # x / c would round a value far below c to 0. The bits are x != 0; c is kept after them, as bytes.
        c = torch.amax(x) if x.numel() else x.new_ones(())
        c = torch.where(c > 0, c, torch.ones_like(c))
        torch._assert_async(((x == 0) | (x == c)).all() & torch.isfinite(c), NOT_SCALED_SPIKES)
        bits, layout = save_spikes((x != 0).to(x.dtype), backend)
        return torch.cat([bits, c.reshape(1).view(torch.uint8)]), (layout, c.element_size())
    small = x.to(torch.uint8)  # keeps x's strides
    torch._assert_async(torch.eq(small.to(x.dtype), x).all(), NOT_SMALL_INTS)
    return small, (x.dtype,)


def kept_scale(saved: Tensor, size: int, dtype: torch.dtype) -> Tensor:
    """The "scaled" store's c [1] in dtype, from its `size` bytes at the end of `saved`: a copy, as the
    view needs its bytes aligned."""
    return saved[-size:].clone().view(dtype)


# Compiled, kept_scale is a custom op: inductor takes a copy followed by a view to another dtype for a
# view of the slice itself, whose offset (the count of bits' bytes) the view then rejects.
@Op.opaque(fake=lambda saved, size, dtype, revision: saved.new_empty(1, dtype=dtype))
def kept_scale_reference(saved: Tensor, size: int, dtype: torch.dtype, revision: str) -> Tensor:
    return kept_scale(saved, size, dtype)


def load_input(saved: Tensor, layout: tuple, store: str, backend: str) -> Tensor:
    """save_input's inverse: the same values, shape and strides."""
    if store == "bits":
        return load_spikes(saved, layout, backend)
    if store == "scaled" and runs_triton(backend, saved):  # the bits' unpack times c, one launch
        spikes_layout, _ = layout
        return in_layout(
            unpack_spikes_triton(saved, math.prod(spikes_layout[0]), spikes_layout[2], True), spikes_layout
        )
    if store == "scaled":
        spikes_layout, size = layout
        scale = kept_scale_reference if being_compiled() else kept_scale
        return load_spikes(saved[:-size], spikes_layout, backend) * scale(saved, size, spikes_layout[2])
    return saved.to(layout[0])


# F.conv1d, conv2d and conv3d, by the count of spatial dims (the weight's dims less 2)
CONVOLUTIONS = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}


class SpikeConvFunction(torch.autograd.Function):
    """conv1d / conv2d / conv3d whose input (spikes) is kept for the weight gradient as bits."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, backend, store="bits"):
        ctx.conv = (stride, padding, dilation, groups, None if bias is None else bias.shape, backend, store)
        bits, ctx.layout = save_input(x, store, backend)  # the input matters only for the weight's gradient
        ctx.save_for_backward(bits, weight)
        return CONVOLUTIONS[weight.dim() - 2](x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        bits, weight = ctx.saved_tensors
        stride, padding, dilation, groups, bias_shape, backend, store = ctx.conv
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x = load_input(bits, ctx.layout, store, backend)  # also gives grad_x its shape and strides
        grad_x, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out,
            x,
            weight,
            list(bias_shape) if bias_shape is not None else None,
            list(stride),
            list(padding),
            list(dilation),
            False,
            [0] * len(stride),
            groups,
            [need_x, need_w, need_b],
        )
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


class SpikeLinearFunction(torch.autograd.Function):
    """linear whose input (spikes) is kept for the weight gradient as bits."""

    @staticmethod
    def forward(ctx, x, weight, bias, backend, store="bits"):
        ctx.backend, ctx.store = backend, store
        bits, ctx.layout = save_input(x, store, backend)  # the input matters only for the weight's gradient
        ctx.save_for_backward(bits, weight)
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        bits, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_rows = grad_out.reshape(-1, grad_out.shape[-1])
        grad_x = grad_out @ weight if need_x else None
        grad_w = None
        if need_w:
            x = load_input(bits, ctx.layout, ctx.store, ctx.backend)
            grad_w = grad_rows.t() @ x.reshape(-1, x.shape[-1])
        grad_b = grad_rows.sum(0) if need_b else None
        return grad_x, grad_w, grad_b, None, None


def autocast_inputs(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> tuple:
    """What autocast would hand conv2d/linear: float32 (and half) inputs in its dtype. Done before a
    Function, since backward runs outside autocast and must see the dtypes forward used."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device)
    cast = lambda t: t.to(dtype) if t is not None and t.dtype != torch.float64 else t  # noqa: E731
    return cast(x), cast(weight), cast(bias)


def spike_conv(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride,
    padding,
    dilation,
    groups,
    backend: str = "auto",
    store: str = "bits",
) -> Tensor:
    """F.conv1d / conv2d / conv3d (by the weight's dims) of spikes (every value 0 or 1), the input kept for
    backward as bits (1/32 of float32); store="uint8" takes small integers (sums of spikes) and keeps
    them one a byte. stride, padding and dilation are tuples of one int per spatial dim."""
    check_float_tensor(x, "x")
    if not (torch.is_grad_enabled() and weight.requires_grad):  # the input is not kept: the plain conv
        return CONVOLUTIONS[weight.dim() - 2](x, weight, bias, stride, padding, dilation, groups)
    if x.dim() == weight.dim() - 1:  # unbatched [C, ...], as torch's convs take it: backward needs the batch dim
        return spike_conv(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups, backend, store).squeeze(0)
    x, weight, bias = autocast_inputs(x, weight, bias)
    return SpikeConvFunction.apply(x, weight, bias, stride, padding, dilation, groups, backend, store)


def spike_linear(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], backend: str = "auto", store: str = "bits"
) -> Tensor:
    """F.linear of spikes (every value 0 or 1), the input kept for backward as bits (store as spike_conv's)."""
    check_float_tensor(x, "x")
    if not (torch.is_grad_enabled() and weight.requires_grad):
        return torch.nn.functional.linear(x, weight, bias)
    x, weight, bias = autocast_inputs(x, weight, bias)
    return SpikeLinearFunction.apply(x, weight, bias, backend, store)


@Op
def spike_max_pool2d_forward(
    x: Tensor,
    order: list[int],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    ceil_mode: bool,
    pack: bool,
    revision: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """The Triton kernel's max_pool2d of spikes x (dense, its dims in memory in `order`) and x's bits in
    one launch: (pooled, bits, 0-dim bool: every value is 0 or 1); without `pack` the pooling alone."""
    return kernels.spike_max_pool2d_forward(x, order, kernel_size, stride, padding, dilation, ceil_mode, pack)


@Op
def spike_max_pool2d_backward_triton(
    grad_out: Tensor,
    bits: Tensor,
    shape: list[int],
    order: list[int],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    revision: str,
) -> Tensor:
    """dL/dx of max_pool2d from the pooled gradient and the bits of x (its dims `shape` in memory order
    `order`), or x's float spikes themselves: each window's gradient to its first maximum, as max_pool2d
    routes it."""
    return kernels.spike_max_pool2d_backward(grad_out, bits, shape, order, kernel_size, stride, padding, dilation)


def pool_grad_like(shape: list[int], order: list[int], dtype: torch.dtype, device) -> Tensor:
    """An empty dL/dx as the pool backward lays it out: channels-last ([C, H, W]: H, W, C in memory)
    where x was, else contiguous."""
    if order in ([0, 2, 3, 1], [1, 2, 0]):
        return torch.empty([shape[d] for d in order], dtype=dtype, device=device).permute(inverse_order(order))
    return torch.empty(shape, dtype=dtype, device=device)


# The reference is opaque to torch.compile (not traced into): inductor's code for its routing ran
# slower than the eager reference on a CPU.
@Op.opaque(
    fake=lambda grad_out, bits, shape, order, kernel_size, stride, padding, dilation, revision: pool_grad_like(
        shape, order, grad_out.dtype, grad_out.device
    )
)
def spike_max_pool2d_backward_reference(
    grad_out: Tensor,
    bits: Tensor,
    shape: list[int],
    order: list[int],
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    revision: str,
) -> Tensor:
    dense = reference.unpack_bits(bits, math.prod(shape), torch.int8).view([shape[d] for d in order])
    x = dense.permute(inverse_order(order))
    batched = x.dim() == 4
    grad_x = reference.spike_max_pool2d_backward(
        grad_out if batched else grad_out[None], x if batched else x[None], kernel_size, stride, padding, dilation
    )
    grad_x = grad_x if batched else grad_x[0]
    like = pool_grad_like(shape, order, grad_out.dtype, "meta")
    return (
        grad_x
        if grad_x.stride() == like.stride()
        else pool_grad_like(shape, order, grad_x.dtype, grad_x.device).copy_(grad_x)
    )


def spike_max_pool2d_backward(grad_out: Tensor, bits: Tensor, shape, order, sizes, use_triton: bool) -> Tensor:
    """The pool backward from bits: the Triton kernel, or the reference."""
    op = spike_max_pool2d_backward_triton if use_triton else spike_max_pool2d_backward_reference
    return op(grad_out, bits, shape, order, *sizes)


class SpikeMaxPool2dFunction(torch.autograd.Function):
    """max_pool2d of spikes, the input kept for backward as bits and no indices. With the kernels, forward
    pools and packs in one launch; backward reads the bits and the pooled gradient alone
    (``spike_max_pool2d_backward``: the Triton kernel, or the reference)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode, backend):
        ctx.pool = (kernel_size, stride, padding, dilation, backend)
        order = dense_order(x)
        if runs_triton(backend, x) and order is not None:  # pooled and packed in one launch
            sizes = map(list, (kernel_size, stride, padding, dilation))
            out, bits, binary = spike_max_pool2d_forward(x, order, *sizes, ceil_mode, True)
            torch._assert_async(binary, NOT_SPIKES)
            ctx.layout = (x.permute(order).shape, order, x.dtype)
        else:
            bits, ctx.layout = save_spikes(x, backend)
            out = torch.nn.functional.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(bits)
        return out

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        (bits,) = ctx.saved_tensors
        kernel_size, stride, padding, dilation, backend = ctx.pool
        dense_shape, order, _ = ctx.layout
        order = list(range(len(dense_shape))) if order is None else order
        shape = [0] * len(order)
        for size, d in zip(dense_shape, order):
            shape[d] = size
        # ceil_mode is in grad_out's size: which windows there are
        sizes = [list(v) for v in (kernel_size, stride, padding, dilation)]
        grad_x = spike_max_pool2d_backward(grad_out, bits, shape, order, sizes, runs_triton(backend, bits))
        return grad_x, None, None, None, None, None, None


def _pool_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """A max_pool2d size (an int, or a pair of ints) as a pair, each at least `minimum`."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return pair


def window_span(kernel: int, dilation: int) -> int:
    """How many input cells one max pooling window spans along a dim: (kernel - 1) * dilation + 1."""
    return (kernel - 1) * dilation + 1


def spike_max_pool2d(
    x: Tensor, kernel_size, stride, padding, dilation, ceil_mode: bool, backend: str = "auto"
) -> Tensor:
    """F.max_pool2d of spikes (every value 0 or 1), bits kept for backward: 1/32 of the float32 input
    and no indices; the gradient goes to each window's first maximum, as max_pool2d sends it.

    Args:
        x: spikes [N, C, H, W] or [C, H, W], floating point, any memory format.
        kernel_size, stride, padding, dilation: as F.max_pool2d takes them (an int or a pair; stride
            None or empty takes kernel_size); padding at most half the kernel size.
        ceil_mode: as F.max_pool2d's.
        backend: "auto" (the Triton kernel on CUDA tensors, the reference on CPU tensors), "triton"
            or "torch".

    Returns:
        The pooled spikes [N, C, OH, OW] (or [C, OH, OW]), as F.max_pool2d gives them.

    Raises:
        TypeError: x is not a floating-point tensor, or a size is not an int or a pair of ints.
        ValueError: x is not 3-D or 4-D, a size out of range, a window larger than the padded input,
            or an unknown backend. A RuntimeError (on the device, without a host sync) where x holds
            values other than 0 and 1.

    Examples:
        >>> import torch
        >>> from snn_triton.ops import spike_max_pool2d
        >>> x = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]], requires_grad=True)
        >>> spike_max_pool2d(x, 2, None, 0, 1, False).sum().backward(); x.grad
        tensor([[[0., 1.],
                 [0., 0.]]])
    """
    check_float_tensor(x, "x")
    check_backend(backend)
    if x.dim() not in (3, 4):
        raise ValueError(f"x must be [N, C, H, W] or [C, H, W], got shape {tuple(x.shape)}")
    kernel_size = _pool_pair(kernel_size, "kernel_size", 1)
    stride = _pool_pair(stride, "stride", 1) if stride else kernel_size
    padding = _pool_pair(padding, "padding", 0)
    dilation = _pool_pair(dilation, "dilation", 1)
    if any(p > k // 2 for p, k in zip(padding, kernel_size)):
        raise ValueError(f"padding must be at most half of kernel_size, got {padding} for {kernel_size}")
    for size, k, p, d, name in zip(x.shape[-2:], kernel_size, padding, dilation, ("height", "width")):
        if size + 2 * p < window_span(k, d):
            raise ValueError(f"x's {name} {size} (padded: {size + 2 * p}) is less than one window, {window_span(k, d)}")
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.nn.functional.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)
    return SpikeMaxPool2dFunction.apply(x, kernel_size, stride, padding, dilation, bool(ceil_mode), backend)


# ---- a max pooling that recomputes its input from what the layer before it keeps -----------------


class RecomputedMaxPoolFunction(torch.autograd.Function):
    """F.max_pool2d of y = recompute(source) (a BatchNorm's output, say), keeping only `source` (which
    that layer keeps anyway) instead of y and the int64 indices: backward rebuilds y bit for bit, finds
    each window's maximum again (the same cells) and routes the gradient as max_pool2d's backward does."""

    @staticmethod
    def forward(ctx, y, source, recompute, pool):
        ctx.recompute, ctx.pool, ctx.shape = recompute, pool, y.shape
        ctx.save_for_backward(source)
        return torch.nn.functional.max_pool2d(y, *pool)

    @staticmethod
    @first_order
    def backward(ctx, grad_out):
        (source,) = ctx.saved_tensors
        y = ctx.recompute(source).view(ctx.shape)
        _, indices = torch.nn.functional.max_pool2d(y, *ctx.pool, return_indices=True)
        grad_y = torch.ops.aten.max_pool2d_with_indices_backward(
            grad_out, y, *map(list, ctx.pool[:4]), ctx.pool[4], indices
        )
        return grad_y, None, None, None


def recomputed_max_pool2d(y: Tensor, source: Tensor, recompute, pool: tuple) -> Tensor:
    """F.max_pool2d(y, *pool) where y is recompute(source) bit for bit: nothing but `source` is kept for
    backward. `pool`: (kernel_size, stride, padding, dilation) as pairs, and ceil_mode."""
    if not (torch.is_grad_enabled() and y.requires_grad):
        return torch.nn.functional.max_pool2d(y, *pool)
    return RecomputedMaxPoolFunction.apply(y, source, recompute, pool)


# ---- a neuron that recomputes its input from what the layer before it keeps --------------------


class RecomputedScanFunction(torch.autograd.Function):
    """The neuron scan of y_seq = recompute(source), keeping only `source` (which the layer that made
    y_seq keeps anyway, e.g. a BatchNorm's input) instead of H: backward rebuilds y_seq and H, bit for
    bit, then runs the scan's backward (``ScanBackward``, as the scan's own autograd does). With `pool`
    (F.max_pool2d's arguments) the spikes' max pooling [T, N, C, H', W'] is made too, and backward
    routes its gradient to each window's first spike (as max_pool2d routes it) from the recomputed
    spikes: the pooling layer keeps nothing either."""

    @staticmethod
    def forward(ctx, y_seq, leak_tensor, v_init, source, recompute, settings, return_v, pool):
        *neuron, use_triton = settings
        if use_triton or being_compiled():
            s_seq, _, v_last = lif_scan_forward(y_seq, v_init, leak_tensor, *neuron, return_v, use_triton)
        else:  # eager, H is not kept: the reference need not stack it
            equations = reference.Neuron(*neuron).with_leak_tensor(leak_tensor)
            s_seq, _, v_last = reference.lif_scan_forward(y_seq, v_init, equations, return_v, keep_h=False)
        pooled = max_pool_spikes(s_seq, pool, use_triton) if pool is not None else s_seq.new_empty(0)
        ctx.recompute, ctx.return_v, ctx.pool, ctx.shape = recompute, return_v, pool, y_seq.shape
        needs = ctx.needs_input_grad  # (y_seq, leak_tensor, v_init, ...), ScanBackward's order differs
        ctx.scan = ScanBackward(y_seq, v_init, leak_tensor, settings, (needs[0], needs[2], needs[1]))
        ctx.set_materialize_grads(False)  # no zero-filled gradient of an output that is not used
        ctx.save_for_backward(source, v_init, leak_tensor)
        return s_seq, pooled, v_last

    @staticmethod
    @first_order
    def backward(ctx, grad_s_seq, grad_pooled, grad_v_last):
        nones = (None,) * 5
        if ctx.pool is None:  # the empty placeholder's gradient (compiled autograd hands one in)
            grad_pooled = None
        if grad_v_last is not None and not ctx.return_v:
            grad_v_last = None
        if grad_pooled is None and grad_s_seq is None and grad_v_last is None:
            return (None, None, None) + nones
        source, v_init, leak_tensor = ctx.saved_tensors
        y_seq = ctx.recompute(source).view(ctx.shape)
        use_triton = ctx.scan.settings[-1]
        # blocks split dim 1 of [T, ...]: only where that is not a pooled map's height (at least [T, C, H, W])
        blocked = not use_triton and (ctx.pool is None or y_seq.dim() >= 4)
        backward = recomputed_scan_backward_reference if blocked else recomputed_scan_backward
        grads = backward(y_seq, grad_s_seq, grad_pooled, grad_v_last, v_init, leak_tensor, ctx.pool, ctx.scan)
        grad_y, grad_v_init, grad_leak = ctx.scan.finish(grads, leak_tensor)
        return (grad_y, grad_leak, grad_v_init) + nones


def recomputed_scan_backward(
    y_seq, grad_s_seq, grad_pooled, grad_v_last, v_init, leak_tensor, pool, scan: ScanBackward
) -> tuple:
    """RecomputedScanFunction's backward from the rebuilt input y_seq [T, ...]: the scan again for H and
    the spikes, the pooling's gradient routed to the spikes, then the scan's backward (raw results)."""
    *neuron, use_triton = scan.settings
    spikes, h_seq, _ = lif_scan_forward(y_seq, v_init, leak_tensor, *neuron, False, use_triton)
    if grad_pooled is not None:
        routed = route_to_max(grad_pooled, spikes, pool, use_triton)
        grad_s_seq = routed if grad_s_seq is None else grad_s_seq + routed
    return scan.raw(grad_s_seq, grad_v_last, h_seq, *scan.saved(y_seq, v_init, leak_tensor))


@in_cache_blocks(first_is_sequence=True)
def recomputed_scan_backward_reference(
    y_seq, grad_s_seq, grad_pooled, grad_v_last, v_init, leak_tensor, pool, scan: ScanBackward
) -> tuple:
    """recomputed_scan_backward on a CPU, eager, one cache block at a time: the reference's recorded
    scan and its backward, each step's H, spikes, 1 - S and leak operand handed from one to the other,
    never stacked into whole-layer tensors (pooling windows lie within a block's samples). Compiled,
    recomputed_scan_backward (inductor fuses the ops' steps)."""
    if being_compiled():
        return recomputed_scan_backward(y_seq, grad_s_seq, grad_pooled, grad_v_last, v_init, leak_tensor, pool, scan)
    *neuron, _ = scan.settings
    equations = reference.Neuron(*neuron).with_leak_tensor(leak_tensor)
    records = reference.recorded_scan(y_seq, v_init, equations)
    if grad_pooled is not None:
        routed = reference.route_to_max(grad_pooled, torch.stack([record.spike for record in records]), pool)
        grad_s_seq = routed if grad_s_seq is None else grad_s_seq + routed
    elif grad_s_seq is None:  # only the final potential is used
        grad_s_seq = torch.zeros(y_seq.shape, dtype=scan.x_dtype, device=y_seq.device)
    return reference.recorded_scan_backward(
        grad_s_seq, records, grad_v_last, equations, scan.grad_v_init, scan.grad_leak
    )


def pooled_maps(spike_seq: Tensor) -> Tensor:
    """spike_seq [..., C, H, W] as [N, C, H, W] maps, NCHW or channels-last (a copy otherwise), for the kernels."""
    maps = spike_seq.reshape(-1, *spike_seq.shape[-3:])
    if maps.is_contiguous() or maps.is_contiguous(memory_format=torch.channels_last):
        return maps
    return maps.contiguous()


def max_pool_spikes(spike_seq: Tensor, pool: tuple, use_triton: bool) -> Tensor:
    """``reference.max_pool_spikes``, or with use_triton the pooling kernel (one launch, nothing packed)."""
    if not use_triton:
        return reference.max_pool_spikes(spike_seq, pool)
    maps = pooled_maps(spike_seq)
    *sizes, ceil_mode = pool
    pooled, _, _ = spike_max_pool2d_forward(maps, dense_order(maps), *map(list, sizes), ceil_mode, False)
    return pooled.reshape(*spike_seq.shape[:-3], *pooled.shape[-3:])


def route_to_max(grad_pooled: Tensor, spikes: Tensor, pool: tuple, use_triton: bool) -> Tensor:
    """``reference.route_to_max``, or with use_triton the pooling's backward kernel reading the float
    spikes: a pack to bits first would add a write and a read of the bits to the spikes' one read."""
    if not use_triton:
        return reference.route_to_max(grad_pooled, spikes, pool)
    grads, maps = grad_pooled.reshape(-1, *grad_pooled.shape[-3:]), pooled_maps(spikes)
    routed = spike_max_pool2d_backward_triton(grads, maps, list(maps.shape), dense_order(maps), *map(list, pool[:4]))
    return routed.reshape(spikes.shape)


def recomputed_neuron_scan(
    x_seq: Tensor,
    source: Tensor,
    recompute,
    params: NeuronParams,
    *,
    w: Optional[Tensor] = None,
    v_init: Optional[Tensor] = None,
    return_v: bool = False,
    backend: str = "auto",
    pool: Optional[tuple] = None,
):
    """neuron_scan of x_seq, where x_seq is recompute(source) (bit for bit, in any shape of as many
    elements): nothing but `source` is kept for backward. Results as neuron_scan's; with `pool`
    (kernel_size, stride, padding, dilation as pairs, ceil_mode: F.max_pool2d's), the spikes' max
    pooling [T, N, C, H', W'] after the spikes."""
    check_time_major(x_seq)
    v_init = check_state(v_init, x_seq)
    leak_tensor = leak_tensor_of(params, w, x_seq)
    settings = (*params.op_settings(), runs_triton(backend, x_seq))
    s_seq, pooled, v_last = RecomputedScanFunction.apply(
        x_seq, leak_tensor, v_init, source, recompute, settings, return_v, pool
    )
    if pool is None:
        return (s_seq, v_last) if return_v else s_seq
    return (s_seq, pooled, v_last) if return_v else (s_seq, pooled)
