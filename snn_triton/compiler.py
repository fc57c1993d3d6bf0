"""How the reference's scans meet torch.compile: detecting a trace, forcing stores, and loops.

The reference (``snn_triton.reference``) is plain math; these helpers are what it calls where a
compiled graph needs something eager code does not:

- ``being_compiled()``: whether the code runs under a trace (dynamo, AOTAutograd, torch.export),
  also inside a ``triton_op`` body, where ``torch.compiler.is_compiling()`` is False on PyTorch 2.11;
- ``force_store(state)``: a step's state marked to be stored, so inductor does not inline each step of an
  unrolled scan into the next;
- ``as_loop(T)`` / ``loop(...)``: past ``UNROLLED_STEPS`` a compiled scan is PyTorch's ``scan``, a loop
  over one compiled step, so compile time does not grow with T;
- the one inductor workaround, installed only on the PyTorch versions that need it
  (``CARRY_COPY_NEEDED``; ``tests/test_compile.py`` reproduces the miscompile on each tested stack).
"""

from __future__ import annotations

import functools
import inspect
import warnings

import torch
from torch.utils._pytree import tree_map

try:  # PyTorch's scan (a prototype higher-order op): a loop that torch.compile keeps as a loop
    from torch._higher_order_ops.scan import scan
except ImportError:  # a PyTorch without it: long scans are unrolled (``as_loop``)
    scan = None


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '2.15.0+cu132'."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


TORCH_VERSION = release(torch.__version__)

# Under torch.compile, scans of up to this many steps are unrolled (inductor fuses the steps); longer
# ones are a loop. 16 unrolled steps compile in about as long as the loop.
UNROLLED_STEPS = 16

# PyTorch versions whose inductor merges equal initial carries of different loops into one buffer
# that the first loop then updates in place (``_loops_copy_their_carry``): the reproducer in
# tests/test_compile.py computes wrong gradients on 2.11 and 2.14 and right ones on 2.15.
CARRY_COPY_NEEDED = TORCH_VERSION < (2, 15)


def being_compiled() -> bool:
    """Whether the caller runs under a torch.compile / torch.export trace.

    Returns:
        True under dynamo and inside the ops' bodies while AOTAutograd traces them (a tracing
        context is active there on every supported PyTorch; ``torch.compiler.is_compiling()``
        alone is False inside a ``triton_op`` body on 2.11), False in eager code.
    """
    if torch.compiler.is_compiling():
        return True
    return torch._guards.TracingContext.try_get() is not None


def force_store(state: torch.Tensor) -> torch.Tensor:
    """`state`; under torch.compile, marked to be stored with the strides it was traced with. The
    store keeps inductor from inlining each step of an unrolled scan into the next: each step reads
    the previous state several times, so the inlined expression would grow several-fold per step.
    Not an as_strided view, which forces the store too but keeps the traced strides over a buffer
    inductor may lay out otherwise (channels-last after a conv)."""
    force_stride_order = getattr(torch.ops.prims, "inductor_force_stride_order", None)
    if force_stride_order is None or not being_compiled():
        return state
    return force_stride_order(state, state.stride())


def as_loop(T: int) -> bool:
    """Whether a scan of T steps runs as a loop of one compiled step (only while compiling, and only
    where PyTorch's scan is there and its loops compile right: ``loops_supported``)."""
    return T > UNROLLED_STEPS and being_compiled() and loops_supported()


@functools.cache
def loops_supported() -> bool:
    """Whether compiled scans may run as loops on this PyTorch: it has ``scan``, and where its inductor
    needs the carry workaround, the workaround can be installed. Otherwise long scans are unrolled
    (the same results, compile time growing with T), and a warning says so once."""
    if scan is None:
        warnings.warn(
            f"PyTorch {torch.__version__} has no torch._higher_order_ops.scan: compiled scans longer "
            f"than {UNROLLED_STEPS} steps are unrolled, so their compile time grows with T",
            stacklevel=3,
        )
        return False
    if CARRY_COPY_NEEDED and not _loops_copy_their_carry():
        warnings.warn(
            f"PyTorch {torch.__version__}'s inductor needs its loops to copy their initial carries, and "
            "the hook for that (torch._inductor.ir.WhileLoop._clone_aliased_inputs) is missing or "
            f"changed: compiled scans longer than {UNROLLED_STEPS} steps are unrolled instead",
            stacklevel=3,
        )
        return False
    return True


def _copy_written_carried_inputs(carried_inputs):
    """The carried inputs of the loop being lowered, each copied where the loop writes it: not those
    its body passes through unchanged (the scanned sequences, only read) nor the output buffers that
    lowering allocated for this loop alone (an empty_strided each), which need no copy."""
    from torch._inductor.ir import ExternKernel
    from torch._inductor.virtualized import V

    node = V.graph.current_node
    body = getattr(V.graph.module, node.args[1].target)
    body_inputs = [n for n in body.graph.nodes if n.op == "placeholder"]
    body_outputs = body.graph.output_node().args[0]
    fresh = torch.ops.aten.empty_strided.default
    return [
        x
        if body_outputs[i] is body_inputs[i] or getattr(node.args[2][i], "target", None) is fresh
        else ExternKernel.copy_input(x)
        for i, x in enumerate(carried_inputs)
    ]


@functools.cache
def _loops_copy_their_carry() -> bool:
    """Work around a miscompile of inductor (``CARRY_COPY_NEEDED``): a compiled loop updates its carried
    inputs in place and copies them only where they alias each other, but CSE merges equal initial
    carries (zeros of one shape, say) of *different* loops into one buffer, so the first loop clobbers
    the second's start (wrong gradients of a LIF scan followed by a PLIF). Every loop copies the carried
    inputs it writes instead. Installed process-wide, once, when the first loop is traced.

    Returns:
        Whether the workaround is installed (False where inductor's hook is missing or changed).
    """
    from torch._inductor.ir import WhileLoop

    hook = getattr(WhileLoop, "_clone_aliased_inputs", None)
    if hook is None or list(inspect.signature(hook).parameters) != ["carried_inputs"]:
        return False
    global UPSTREAM_CLONE_ALIASED_INPUTS
    UPSTREAM_CLONE_ALIASED_INPUTS = hook
    WhileLoop._clone_aliased_inputs = staticmethod(_copy_written_carried_inputs)
    return True


UPSTREAM_CLONE_ALIASED_INPUTS = None  # inductor's own hook, once replaced (the reproducer test restores it)


def loop(step, init, xs, reverse: bool = False):
    """PyTorch's scan of `step` over the sequences `xs` (backwards with `reverse`), from the carry `init`,
    with two settings it needs from the graph being compiled:

    - dynamo's automatic dynamic shapes off while the scan traces its step: each scan traces the same
      wrapper of the step, so the second one (the backward's, of another structure than the
      forward's) would turn the wrapper's int settings into symbolic inputs, which inductor cannot
      lower into its loop ('int' object has no attribute 'meta');
    - scalar outputs allowed by the graph's fake tensor mode: inductor lowers the scan to a loop that
      reads its step index as a scalar, which only a `fullgraph=True` compile allows by default
      (DataDependentOutputException). It concerns this graph only, and only that lowering.

    Returns:
        (the final carry, the stacked outputs of every step in time order), as ``scan`` does.
    """
    fake_mode = torch._guards.detect_fake_mode()
    if fake_mode is not None:
        fake_mode.allow_scalar_outputs = True
    with torch._dynamo.config.patch(automatic_dynamic_shapes=False):
        if not reverse:
            return scan(step, init, xs)
        # Backwards, the loop runs over the step indices T-1 .. 0 and reads each sequence at its
        # index: scan's own reverse copies every sequence flipped (one [T, ...] pass each) first.
        T = xs[0].shape[0]
        carry, ys = scan(
            lambda carry, t: step(carry, tuple(x.index_select(0, t[None])[0] for x in xs)),
            init,
            torch.arange(T - 1, -1, -1, device=xs[0].device),
        )
        return carry, tree_map(lambda y: y.flip(0), ys)
