"""``st.lean(model)``: a model of torch layers and our neurons rewritten, in place, to keep less for
backward wherever the result is provably the same.

What each layer's input is, is found from the model's structure: ``nn.Sequential`` runs its children
in order, and any other module's ``forward`` is traced one level deep with ``torch.fx`` (its children
as leaves) along each way through its branches on traced values (a way that raises at once is a
check, not followed), so that residual blocks and hand-written forwards are followed too. A value
changed in place is not known as what it was. A value is known as

- spikes (0 or 1): a neuron's output, and what max pooling, Flatten, Identity and views make of it;
- small integers: sums (``+``) and products of those, such as SEW-ResNet's ADD, AND and IAND joins;
- spikes after a Dropout: 0 or one factor, the mask's 1/(1-p);
- a BatchNorm's output (its views, and its max pooling);
- anything else.

The rewrites change a module's class to one that computes the same values and keeps less (its
parameters, buffers, ``state_dict`` and ``isinstance`` checks are unchanged):

- Conv1d, Conv2d, Conv3d or Linear fed spikes keeps them as bits; fed small integers, as uint8; fed
  spikes after a Dropout, as bits and the scale (``ops.spike_conv``).
- MaxPool2d fed spikes keeps bits and no indices; backward routes the gradient from the bits alone
  (``ops.spike_max_pool2d``: each window's first maximum, as ``max_pool2d`` picks it).
- A neuron fed by a BatchNorm in training mode keeps no float tensor of its own: backward recomputes
  the BatchNorm's output (from the input BatchNorm keeps anyway) and then H. In eval mode both run as before.
  Where its spikes feed a MaxPool2d, the neuron makes the pooling too and the pool keeps nothing.
- MaxPool2d fed a BatchNorm in training mode keeps nothing: backward makes the BatchNorm's output again
  and pools it again (``ops.recomputed_max_pool2d``); a neuron after it recomputes its input so too.

Each rewritten layer still checks at run time what the structure promised (bits and uint8 hold only
what they can; the neuron checks that its input is the BatchNorm's last output, unchanged, else runs
as before),
so a forward that takes another path than the one traced fails loudly or falls back, never silently
differs. ``lean_report(model)`` says what was rewritten and what was left, and why.
"""

from __future__ import annotations

import contextlib
import dis
import functools
import operator
import sys
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn import functional as F

from .checks import check_backend
from .compiler import TORCH_VERSION, being_compiled
from .nn import NeuronLayer
from .ops import (
    recomputed_max_pool2d,
    recomputed_neuron_scan,
    spike_conv,
    spike_linear,
    spike_max_pool2d,
    window_span,
)
from .reference import compute_dtype

# ---- what a value is known to be ----------------------------------------------------------------


class Fact(NamedTuple):
    """What a value is known to hold: kind "float" (nothing known), "int" (integers in [0, bound]; bound
    1 is spikes, and `source` the neuron that made them where one did), "scaled" (spikes times one
    factor: a Dropout of spikes) or "bn" (the output of the BatchNorm `source`, a module)."""

    kind: str = "float"
    bound: int = 0
    source: Optional[nn.Module] = None


FLOAT, SPIKES = Fact(), Fact("int", 1)
UINT8_MAX = 255

# Tensor methods and functions that reshape values, in their order, without changing them: the output
# is still the layer's output, reshaped.
VIEW_METHODS = {
    "view",
    "reshape",
    "flatten",
    "unflatten",
    "contiguous",
    "squeeze",
    "unsqueeze",
    "view_as",
    "reshape_as",
}
VIEW_FUNCTIONS = {
    torch.flatten,
    torch.reshape,
    torch.squeeze,
    torch.unsqueeze,
    torch.Tensor.flatten,
    torch.Tensor.view,
    torch.Tensor.reshape,
}
# Tensor methods and functions whose outputs hold some of their input's values, or all of them in
# another order (or a sequence of such tensors): what is known of each value holds, though the output
# is not the input's layer output.
SELECTION_METHODS = {
    "__getitem__",
    "permute",
    "transpose",
    "flip",
    "roll",
    "narrow",
    "select",
    "expand",
    "expand_as",
    "repeat",
    "movedim",
    "swapaxes",
    "swapdims",
    "t",
    "chunk",
    "split",
    "tensor_split",
    "unbind",
    "detach",
    "clone",
}
SELECTION_FUNCTIONS = {
    operator.getitem,
    torch.permute,
    torch.transpose,
    torch.flip,
    torch.roll,
    torch.narrow,
    torch.select,
    torch.movedim,
    torch.swapaxes,
    torch.t,
    torch.chunk,
    torch.split,
    torch.tensor_split,
    torch.unbind,
    torch.detach,
    torch.clone,
}
JOINS = {torch.cat, torch.concat, torch.concatenate, torch.stack}  # of a sequence of tensors
PADS = {F.pad, torch._C._nn.pad}
ADD_FUNCTIONS = {operator.add, torch.add, operator.iadd}
MUL_FUNCTIONS = {operator.mul, torch.mul, operator.imul}
# Dropouts: of spikes they give 0 or 1/(1-p) (the mask's scale), or the spikes themselves in eval mode.
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
BATCH_NORMS = nn.modules.batchnorm._BatchNorm
# Layers that pass values on rearranged or as a maximum of some: integers stay integers.
KEEPS_INTEGERS = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)


# ---- the report ---------------------------------------------------------------------------------


@dataclass
class LeanEntry:
    """One layer: its path in ``model.named_modules()``, its class, what was done ("kept as bits",
    ...) or None where it was left, and why."""

    path: str
    layer: str
    rewrite: Optional[str]
    reason: str


@dataclass
class LeanReport:
    """What ``st.lean`` / ``st.from_spikingjelly(lean=True)`` did to each layer it looked at.

    ``rewritten`` and ``left`` list the entries; ``str(report)`` is a table to print.

    Args:
        entries: one ``LeanEntry`` per layer looked at (path, class, rewrite or None, reason).

    Returns:
        Made by ``st.lean``; read it with ``st.lean_report(model)``.

    Raises:
        Nothing: it only reports.

    Examples:
        >>> import torch, snn_triton as st
        >>> report = st.lean_report(st.lean(torch.nn.Sequential(torch.nn.Linear(6, 3), st.IF())))
        >>> [(entry.layer, entry.rewrite) for entry in report.entries]
        [('Linear', None), ('IF', None)]
    """

    entries: list[LeanEntry] = field(default_factory=list)

    @property
    def rewritten(self) -> list[LeanEntry]:
        return [e for e in self.entries if e.rewrite is not None]

    @property
    def left(self) -> list[LeanEntry]:
        return [e for e in self.entries if e.rewrite is None]

    def __str__(self) -> str:
        rows = [(e.path or "''", e.layer, e.rewrite or "left", e.reason) for e in self.entries]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(("layer", "class", "rewrite", ""))]
        lines = [f"st.lean: {len(self.rewritten)} layers rewritten, {len(self.left)} left"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
        return "\n".join(lines)


# ---- the lean forms (mixed into a layer's own class) ----------------------------------------------


class LeanConv(nn.modules.conv._ConvNd):
    """Conv1d, Conv2d or Conv3d whose input (spikes, or small integers) is kept as bits (or uint8)."""

    lean_store: str
    lean_backend: str

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if compiled_as_replaced():
            return super()._conv_forward(input, weight, bias)
        return spike_conv(
            input,
            weight,
            bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.lean_backend,
            self.lean_store,
        )


# One per dims: the mixin's _conv_forward must come before the torch class's own in the method order.
class LeanConv1d(LeanConv, nn.Conv1d):
    pass


class LeanConv2d(LeanConv, nn.Conv2d):
    pass


class LeanConv3d(LeanConv, nn.Conv3d):
    pass


LEAN_CONVOLUTIONS = {nn.Conv1d: LeanConv1d, nn.Conv2d: LeanConv2d, nn.Conv3d: LeanConv3d}


class LeanLinear(nn.Linear):
    """Linear whose input (spikes, or small integers) is kept as bits (or uint8)."""

    lean_store: str
    lean_backend: str

    def forward(self, input: Tensor) -> Tensor:
        if compiled_as_replaced():
            return super().forward(input)
        return spike_linear(input, self.weight, self.bias, self.lean_backend, self.lean_store)


class LeanMaxPool2d(nn.MaxPool2d):
    """MaxPool2d of spikes keeping bits, no indices."""

    lean_backend: str

    def forward(self, input: Tensor) -> Tensor:
        if compiled_as_replaced():
            return super().forward(input)
        return spike_max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.lean_backend
        )


def pool_arguments(pool: nn.MaxPool2d) -> tuple:
    """A MaxPool2d's arguments as F.max_pool2d takes them: (kernel_size, stride, padding, dilation) as
    pairs, and ceil_mode."""
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    stride = pool.stride if pool.stride else pool.kernel_size
    return pair(pool.kernel_size), pair(stride), pair(pool.padding), pair(pool.dilation), bool(pool.ceil_mode)


class LeanPooledMaxPool2d(LeanMaxPool2d):
    """MaxPool2d of the spikes of a neuron that makes the pooling itself (``LeanNeuron`` with
    ``lean_pool``): it hands over what the neuron made (``lean_pooled``) when its input is that
    neuron's last output, and otherwise pools as ``LeanMaxPool2d`` does."""

    lean_pooled: Optional[tuple[Tensor, Tensor, int]] = None

    def forward(self, input: Tensor) -> Tensor:
        if compiled_as_replaced():
            return nn.MaxPool2d.forward(self, input)
        stash = self.__dict__.get("lean_pooled")
        if stash is not None:
            object.__setattr__(self, "lean_pooled", None)  # used once: the next call brings its own
            spikes, pooled, version = stash
            # the same maps (a reshape that keeps the last two dims), so the same windows
            if input.shape[-2:] == spikes.shape[-2:] and same_values(input, spikes, version):
                return pooled.reshape(*input.shape[:-2], *pooled.shape[-2:])
        return super().forward(input)


class LeanRecomputedMaxPool2d(nn.MaxPool2d):
    """MaxPool2d of a BatchNorm's output (``lean_bn``) in training: it keeps nothing, as backward pools the
    BatchNorm's output again, made from the input the BatchNorm keeps; and it hands the neuron it feeds
    what a BatchNorm hands (``lean_stash``), with the pooling in the recompute."""

    lean_stash: Optional[tuple[Tensor, Tensor, int, Callable[[Tensor], Tensor]]] = None

    def forward(self, input: Tensor) -> Tensor:
        if compiled_as_replaced():
            return super().forward(input)
        taken = take_stash(self, input)
        if taken is None:
            return super().forward(input)
        source, replay = taken
        pool = pool_arguments(self)
        pooled = recomputed_max_pool2d(input, source, replay, pool)
        if self.__dict__.get("lean_feeds_neuron"):  # else nothing would take it: it would keep source alive
            again = functools.partial(pool_again, replay, input.shape, pool)
            self.lean_stash = (source, pooled, version_of(pooled), again)
        return pooled


def pool_again(replay: Callable[[Tensor], Tensor], shape: torch.Size, pool: tuple, source: Tensor) -> Tensor:
    """The max pooling of replay(source) viewed as `shape`: the pooled BatchNorm output, bit for bit."""
    return F.max_pool2d(replay(source).view(shape), *pool)


class LeanBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm that hands its input, its output and a way to make that output again to the neuron it
    feeds (``lean_stash``), in training mode, so that the neuron can recompute its input from what
    BatchNorm keeps."""

    lean_stash: Optional[tuple[Tensor, Tensor, int, Callable[[Tensor], Tensor]]] = None

    def forward(self, input: Tensor) -> Tensor:
        if not (batch_statistics(self) and torch.is_grad_enabled() and not compiled_as_replaced()):
            return super().forward(input)
        if being_compiled():
            out, replay = self.compiled_forward(input)
        else:
            out = super().forward(input)
            replay = self.replay_of(input, out)
        # a change of out in place before the neuron reads it would make the recompute wrong
        self.lean_stash = (input, out, version_of(out), replay)
        return out

    def compiled_forward(self, input: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """Compiled: the output, and its replay from batch statistics forward makes, in the order of
        torch's decomposition of batch norm (which inductor runs), so bit for bit there. Replaying
        the whole batch norm would reduce the input again, and inductor's partitioner, which merges
        that replay with forward's batch norm and does not recompute reductions, would keep the
        output for backward: all the memory the rewrite saves."""
        with torch.no_grad():
            statistics = decomposed_statistics(input, self.eps)
        return super().forward(input), functools.partial(normalize_as_decomposed, *statistics, self.weight, self.bias)

    def replay_of(self, input: Tensor, out: Tensor) -> Callable[[Tensor], Tensor]:
        """Eager: what gives `out` again from `input`, bit for bit, with the weight and bias this call
        used (``torch.func.functional_call`` may have lent others): on a CPU, the normalization by the
        batch statistics BatchNorm's autograd node keeps (one pass, where ``replay`` computes them
        again), once it has given `out` for this kind of input; else ``replay``.

        That node keeps the weight and bias too, and autograd raises where they change before backward.
        Where `out` has none (a frozen BatchNorm before a neuron that trains), they are copied (C values
        each): a change before backward must not reach the recompute."""
        weight, bias = self.weight, self.bias
        if out.grad_fn is None:
            copy = lambda t: None if t is None else t.detach().clone()  # noqa: E731
            weight, bias = copy(weight), copy(bias)
        replay = functools.partial(self.replay, weight=weight, bias=bias)
        if input.device.type != "cpu":
            return replay
        statistics = saved_batch_statistics(out)
        if statistics is None:
            return replay
        normalize = functools.partial(normalize_by, *statistics, weight, bias)
        # the kernel's loops split by layout and threads
        key = (
            input.shape,
            input.stride(),
            input.dtype,
            torch.get_num_threads(),
            self.weight is None,
            self.bias is None,
        )
        if key not in NORMALIZE_IS_EXACT:  # checked once: the kernel's rounding is not documented
            with torch.no_grad():
                NORMALIZE_IS_EXACT[key] = torch.equal(normalize(input), out)
        return normalize if NORMALIZE_IS_EXACT[key] else replay

    def replay(self, input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
        """The output forward gave for `input` with batch statistics and `weight` and `bias`, bit for
        bit: the same call, on copies of the running statistics (which it updates). On a CPU, none: the
        CPU kernel's output in training does not depend on them (other devices' kernels keep the
        copies: not checked there)."""
        if input.device.type == "cpu":
            return F.batch_norm(input, None, None, weight, bias, True, 0.0, self.eps)
        copy = lambda t: None if t is None else t.clone()  # noqa: E731
        return F.batch_norm(input, copy(self.running_mean), copy(self.running_var), weight, bias, True, 0.0, self.eps)


# (shape, strides, dtype, threads, no weight, no bias) -> whether normalize_by gives the CPU kernel's output
NORMALIZE_IS_EXACT: dict[tuple, bool] = {}


def saved_batch_statistics(out: Tensor) -> Optional[tuple[Tensor, Tensor]]:
    """The batch mean and 1/sqrt(var + eps) [C] that the CPU batch norm's autograd node keeps for
    `out`'s backward, or None where `out` has no such node (no gradient, another kernel)."""
    node = out.grad_fn
    if type(node).__name__ != "NativeBatchNormBackward0":
        return None
    mean, invstd = getattr(node, "_saved_result1", None), getattr(node, "_saved_result2", None)
    if not isinstance(mean, Tensor) or not isinstance(invstd, Tensor) or mean.numel() != out.shape[1]:
        return None
    return mean, invstd


def normalize_by(
    mean: Tensor, invstd: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], input: Tensor
) -> Tensor:
    """(input - mean) * invstd * weight + bias per channel (dim 1), in the CPU kernel's order: the
    factor invstd * weight and the offset bias - mean * factor per channel, then one multiply-add."""
    factor = invstd if weight is None else invstd * weight
    offset = torch.addcmul(torch.zeros_like(factor) if bias is None else bias, mean, factor, value=-1)
    view = (1, -1) + (1,) * (input.dim() - 2)
    return torch.addcmul(offset.view(view), input, factor.view(view))


def decomposed_statistics(input: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The batch mean and 1/sqrt(var + eps) of input [N, C, ...] per channel, kept [1, C, 1, ...], as
    torch's decomposition of batch norm computes them (in float32 for half types)."""
    dims = [0, *range(2, input.dim())]
    var, mean = torch.var_mean(input.to(compute_dtype(input.dtype)), dim=dims, correction=0, keepdim=True)
    return mean, torch.rsqrt(var + eps)


def normalize_as_decomposed(
    mean: Tensor, invstd: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], input: Tensor
) -> Tensor:
    """(input - mean) * invstd * weight + bias per channel (dim 1), in the order of torch's
    decomposition of batch norm, rounded to input's dtype once."""
    out = (input - mean) * invstd
    view = (-1,) + (1,) * (input.dim() - 2)
    if weight is not None:
        out = out * weight.flatten().view(view)
    if bias is not None:
        out = out + bias.flatten().view(view)
    return out.to(input.dtype)


def batch_statistics(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """Whether `bn` normalizes with the batch's statistics now (as _BatchNorm.forward decides)."""
    return bn.training or (bn.running_mean is None and bn.running_var is None)


def take_stash(module: nn.Module, x: Tensor) -> Optional[tuple[Tensor, Callable[[Tensor], Tensor]]]:
    """(source, replay) from the stash of `module`'s feeder (``lean_bn``: a BatchNorm, or a pool of one),
    where x is what the feeder made, unchanged; else None. The stash is taken either way: the next
    call brings its own."""
    feeder = module.__dict__.get("lean_bn")
    stash = feeder.lean_stash if feeder is not None else None
    if stash is None:
        return None
    feeder.lean_stash = None
    source, out, version, replay = stash
    return (source, replay) if same_values(x, out, version) else None


def version_of(x: Tensor) -> int:
    """x's version counter (its changes in place so far); 0 under torch.compile, which does not see it."""
    return 0 if being_compiled() else x._version


def order_in_memory(x: Tensor) -> list[tuple[int, int]]:
    """x's (size, stride) pairs, dims of size 1 dropped and each dim merged into the one before where
    the two step through memory as one: equal for two tensors over the same memory exactly where they
    read it in the same order, one a reshape of the other (not a transpose of it)."""
    merged: list[tuple[int, int]] = []
    for size, stride in zip(x.shape, x.stride()):
        if size == 1:
            continue
        if merged and merged[-1][1] == stride * size:
            merged[-1] = (merged[-1][0] * size, stride)
        else:
            merged.append((size, stride))
    return merged


def same_values(x: Tensor, y: Tensor, version: int) -> bool:
    """Whether x is y or a reshaping view of all of it (its values in y's order, as y.view(x.shape)
    holds them: not a transpose), unchanged since y was at `version` (only the layouts are checked under
    torch.compile, where storages are not seen: the analysis leaves values changed in place where it
    sees it)."""
    if x.numel() != y.numel() or order_in_memory(x) != order_in_memory(y):
        return False
    if being_compiled():
        return True
    return (
        x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
        and x.storage_offset() == y.storage_offset()
        and x._version == version
    )


class LeanNeuron(NeuronLayer):
    """A neuron fed by a BatchNorm (``lean_bn``): in training it keeps no float tensor of its own. With
    ``lean_pool`` (the MaxPool2d its spikes feed) it makes that pooling too, with the same values, and
    hands it to the pool; its own output, the spikes, is what it always was."""

    def scan(self, x_seq: Tensor, v_init: Optional[Tensor]):
        if compiled_as_replaced():
            return super().scan(x_seq, v_init)
        taken = take_stash(self, x_seq)
        if taken is None:
            return super().scan(x_seq, v_init)
        source, replay = taken
        pool = self.__dict__.get("lean_pool")
        if pool is not None and (hears_backward(self) or hears_backward(pool)):
            pool = None  # a backward hook (a gradient monitor) wants the spikes' gradient: the pool pools them
        if pool is not None and not pools_as_maps(x_seq.shape, pool_arguments(pool)):
            pool = None  # the spikes are not [T, ..., C, H, W] maps the window fits: the pool sees them reshaped
        result = recomputed_neuron_scan(
            x_seq,
            source,
            replay,
            self.scan_params(),
            w=self.leak_weight(),
            v_init=v_init,
            return_v=self.stateful,
            backend=self.backend,
            pool=None if pool is None else pool_arguments(pool),
        )
        if pool is None:
            return result
        object.__setattr__(pool, "lean_pooled", (*result[:2], version_of(result[0])))
        return (result[0], result[2]) if self.stateful else result[0]


def pools_as_maps(shape: torch.Size, pool: tuple) -> bool:
    """Whether spikes of `shape` [T, ..., C, H, W] can be max pooled as maps by `pool` (F.max_pool2d's
    arguments): at least one window on H and W, padding included."""
    kernel, _, padding, dilation, _ = pool
    return len(shape) >= 4 and all(
        size + 2 * p >= window_span(k, d) for size, k, p, d in zip(shape[-2:], kernel, padding, dilation)
    )


def hears_backward(module: nn.Module) -> bool:
    """Whether a backward hook of `module` (or one for every module) is registered."""
    return bool(
        module._backward_hooks
        or module._backward_pre_hooks
        or torch.nn.modules.module._global_backward_hooks
        or torch.nn.modules.module._global_backward_pre_hooks
    )


def forward_hooks_of(module: nn.Module) -> tuple[bool, bool]:
    """Whether forward pre-hooks, and forward hooks, of `module` (or for every module) are registered."""
    return (
        bool(module._forward_pre_hooks or torch.nn.modules.module._global_forward_pre_hooks),
        bool(module._forward_hooks or torch.nn.modules.module._global_forward_hooks),
    )


# ---- classes made at run time, and pickling their modules -------------------------------------------

# What a lean module holds from its last forward for the next layer: not part of its state.
TRANSIENT = ("lean_stash", "lean_pooled")


def recipe_of(cls: type):
    """What rebuilds `cls` in another process: the class itself where pickle finds it by name, else
    the (function, args) its maker left on it (``made_class_namespace``)."""
    return cls.__dict__.get("class_recipe", cls)


def class_from_recipe(recipe) -> type:
    """recipe_of's inverse; a made class comes from its maker's cache, so it is the same object each time."""
    if isinstance(recipe, type):
        return recipe
    function, args = recipe
    return function(*args)


def new_module(recipe) -> nn.Module:
    """pickle's constructor for a module of a made class (its state is set after)."""
    cls = class_from_recipe(recipe)
    return cls.__new__(cls)


def reduce_module_of_made_class(module: nn.Module, protocol: int):
    """``__reduce_ex__`` of a made class, whose name pickle cannot look up (it is not its module's
    attribute): rebuilt from its recipe, its state without what its last forward left for the next layer."""
    state = {name: value for name, value in module.__dict__.items() if name not in TRANSIENT}
    return new_module, (recipe_of(type(module)),), state


def made_class_namespace(recipe, **attributes) -> dict:
    """A class namespace that makes the modules of a class made at run time picklable (torch.save of a
    whole model, deepcopy): `recipe` is (function, args) whose call, in any process, returns the class."""
    return {"class_recipe": recipe, "__reduce_ex__": reduce_module_of_made_class, **attributes}


def lean_class_of(recipe, mixin: type) -> type:
    """lean_class of the class a recipe names (a made class too: a converted neuron)."""
    return lean_class(class_from_recipe(recipe), mixin)


@functools.cache
def lean_class(cls: type, mixin: type) -> type:
    """`cls` with `mixin`'s methods in front of the torch class they override (after `cls`'s own, so
    that a subclass's forward, such as spikingjelly's step modes, still runs and calls into them)."""
    if issubclass(cls, mixin):
        return cls
    bases = (mixin,) if issubclass(mixin, cls) else (cls, mixin)
    namespace = made_class_namespace(
        (lean_class_of, (recipe_of(cls), mixin)),
        __module__=cls.__module__,
        __qualname__=cls.__qualname__,
        lean_original_class=cls,
    )
    return type(cls.__name__, bases, namespace)


LEAN_ATTRIBUTES = (
    "lean_store",
    "lean_backend",
    "lean_bn",
    "lean_stash",
    "lean_pool",
    "lean_pooled",
    "lean_feeds_neuron",
    "lean_report",
)


def swap_class(module: nn.Module, mixin: type, **attributes) -> None:
    module.__class__ = lean_class(type(module), mixin)
    for name, value in attributes.items():
        object.__setattr__(module, name, value)


def undo_lean(model: nn.Module) -> nn.Module:
    """`model` with every lean rewrite undone, in place: each layer back to its own class, which computes
    the same outputs in the plain way (for exporters, which cannot trace the bit packing).

    Args:
        model: a model given to ``st.lean`` (or any model: one without rewrites is left as it is).

    Returns:
        `model`.
    """
    for module in model.modules():
        original = type(module).__dict__.get("lean_original_class")
        if original is not None:
            module.__class__ = original
        for name in LEAN_ATTRIBUTES:
            module.__dict__.pop(name, None)
    return model


# ---- the analysis -----------------------------------------------------------------------------------


@dataclass
class Rules:
    """What the analysis knows beyond torch: container classes whose forward runs their children in
    order (``nn.Sequential``'s own always counts), classes that pass spikes on unchanged, and a hook that
    names a leaf's output fact for classes it knows (returning None for the others)."""

    sequential: tuple = ()
    keeps_integers: tuple = ()
    fact: Optional[Callable[[nn.Module, Fact], Optional[Fact]]] = None


class Analysis:
    def __init__(self, model: nn.Module, rules: Rules):
        self.model, self.rules = model, rules
        self.paths = {m: p for p, m in model.named_modules(remove_duplicate=False)}
        self.calls: dict[nn.Module, list[Fact]] = {}  # every call of a leaf: its input's fact
        self.untraced: dict[nn.Module, str] = {}
        self.foreign: dict[nn.Module, None] = {}  # neurons of a class of someone else's, in call order

    def run(self, module: nn.Module, fact: Fact) -> Fact:
        """The fact of `module`'s output given its input's, recording every leaf's call. A forward
        pre-hook may change what the module is fed, a forward hook what it gives: nothing is known
        of either then."""
        changes_input, changes_output = forward_hooks_of(module)
        out = self.run_unhooked(module, FLOAT if changes_input else fact)
        return FLOAT if changes_output else out

    def run_unhooked(self, module: nn.Module, fact: Fact) -> Fact:
        if isinstance(module, NeuronLayer) and not library_class(module):
            self.foreign[module] = None  # its own methods may compute anything: left, as fed anything
            return FLOAT
        if isinstance(module, NeuronLayer):
            self.calls.setdefault(module, []).append(fact)
            return Fact("int", 1, source=module)  # spikes, and which neuron made them
        children = list(module.children())
        if not children:
            self.calls.setdefault(module, []).append(fact)
            return self.leaf(module, fact)
        if self.is_sequential(module):
            for child in children:
                fact = self.run(child, fact)
            return fact
        return self.trace(module, fact)

    def is_sequential(self, module: nn.Module) -> bool:
        return (isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward) or isinstance(
            module, self.rules.sequential
        )

    def leaf(self, module: nn.Module, fact: Fact) -> Fact:
        if self.rules.fact is not None:
            known = self.rules.fact(module, fact)
            if known is not None:
                return known
        if isinstance(module, self.rules.keeps_integers) and fact.kind == "int":  # the caller's word
            return fact
        if not library_forward(module):  # a subclass's own forward (an Identity that doubles) may compute anything
            return FLOAT
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return Fact("bn", source=module)
        if isinstance(module, nn.MaxPool2d) and fact.kind == "bn" and isinstance(fact.source, BATCH_NORMS):
            return Fact("bn", source=module)  # a pooling of a BatchNorm's output, which it can make again
        if is_dropout(module) and fact.kind == "int" and fact.bound == 1:
            return Fact("scaled")
        if isinstance(module, KEEPS_INTEGERS) and fact.kind == "int":
            return fact
        if isinstance(module, (nn.Flatten, nn.Unflatten, nn.Identity)):
            return fact
        return FLOAT

    def trace(self, module: nn.Module, fact: Fact) -> Fact:
        """Follow `module`'s forward through torch.fx, its children as leaves, along each way through it;
        where it cannot be traced, its children are still looked at, each as if fed anything."""
        try:
            graphs = trace_ways(module)
        except Exception as error:  # any failure of the tracer only means that nothing is known here
            self.untraced[module] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            for child in module.children():
                self.run(child, FLOAT)
            return FLOAT
        return join([self.follow(module, graph, fact) for graph in graphs])

    def follow(self, module: nn.Module, graph: torch.fx.Graph, fact: Fact) -> Fact:
        """The fact of the output of one way through `module`'s forward, recording its leaves' calls."""
        facts: dict[torch.fx.Node, Fact] = {}
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        changed_after = changes_in_place(module, graph)
        out = FLOAT

        def fact_of(a, user: torch.fx.Node) -> Optional[Fact]:  # an argument's, where `user` reads it
            if not isinstance(a, torch.fx.Node):
                return None
            return FLOAT if changed_after(a, user) else facts.get(a, FLOAT)

        for node in graph.nodes:
            args = [fact_of(a, node) for a in node.args]
            first = args[0] if args and args[0] is not None else FLOAT
            if node.op == "placeholder":
                facts[node] = fact if node is placeholders[0] else FLOAT
            elif node.op == "call_module":
                child = module.get_submodule(node.target)
                tensor_args = [a for a in node.args if isinstance(a, torch.fx.Node)]
                facts[node] = self.run(child, first if len(tensor_args) == 1 and not node.kwargs else FLOAT)
            elif calls_one_of(node, VIEW_METHODS, VIEW_FUNCTIONS):
                facts[node] = first
            elif calls_one_of(node, SELECTION_METHODS, SELECTION_FUNCTIONS) or pads_with_zeros(node):
                facts[node] = selection_of(first)
            elif node.op == "call_function" and node.target in JOINS and isinstance(node.args[0], (list, tuple)):
                parts = [fact_of(a, node) or FLOAT for a in node.args[0]]
                # integers only: scaled spikes of two Dropouts may have two scales
                integers = parts and all(f.kind == "int" for f in parts)
                facts[node] = Fact("int", max(f.bound for f in parts)) if integers else FLOAT
            elif (known := integer_arithmetic(node, args)) is not None:
                facts[node] = known
            elif node.op == "output":
                out = first
            else:
                facts[node] = FLOAT
        return out


def calls_one_of(node: torch.fx.Node, methods: set, functions: set) -> bool:
    """Whether `node` calls one of the Tensor `methods` (by name) or of the `functions`."""
    return (node.op == "call_method" and node.target in methods) or (
        node.op == "call_function" and node.target in functions
    )


def selection_of(fact: Fact) -> Fact:
    """The fact of some of a value's values, moved or repeated (and zeros, for integers): integers and
    scaled spikes stay so, but no longer as a layer's output (no source); anything else is a float."""
    if fact.kind == "int":
        return Fact("int", fact.bound)
    return fact if fact.kind == "scaled" else FLOAT


def pads_with_zeros(node: torch.fx.Node) -> bool:
    """Whether `node` is ``F.pad`` with the constant 0 (its default): integers stay integers."""
    if node.op != "call_function" or node.target not in PADS:
        return False
    mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
    value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
    return mode == "constant" and (value is None or value == 0)


def join(facts: list[Fact]) -> Fact:
    """What is known of a value that is one of `facts` (the outputs of the ways through a forward)."""
    if all(f == facts[0] for f in facts):
        return facts[0]
    if all(f.kind == "int" for f in facts):
        return Fact("int", max(f.bound for f in facts))
    return FLOAT


# leaves that may give back their input itself (a Dropout in eval mode) or a view of it
GIVES_ITS_INPUT = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)


def changes_its_input(module: nn.Module) -> bool:
    """Whether calling `module` may change its input in place: an ``inplace=True`` layer, or a container
    whose children may pass the input on to one (an ``nn.Sequential`` up to its first child that makes
    a new tensor; any other container wherever such a layer lies within it)."""
    if getattr(module, "inplace", False) is True:
        return True
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        for child in module.children():
            if changes_its_input(child):
                return True
            if list(child.children()) or not isinstance(child, GIVES_ITS_INPUT):
                return False
        return False
    return any(getattr(m, "inplace", False) is True for m in module.modules())


def mutated_argument(module: nn.Module, node: torch.fx.Node) -> Optional[torch.fx.Node]:
    """The tensor `node` changes in place (``x.add_(1)``, ``torch.relu_(x)``, ``F.relu(x, inplace=True)``,
    a child that may change its input (``changes_its_input``), ``x += 1``, which fx traces as ``x + 1``
    and LeafTracer marks), or None. (fx does not trace ``x[i] = v``: such a forward is left untraced.)"""
    first = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
    if node.meta.get("augmented"):
        return first
    if node.op == "call_method":
        name = node.target
        in_place = name.endswith("_") and not name.startswith("__")
    elif node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        in_place = name.endswith("_") and not name.startswith("__")
    elif node.op == "call_module":
        in_place = changes_its_input(module.get_submodule(node.target))
    else:
        return None
    return first if in_place or node.kwargs.get("inplace") is True else None


def changes_in_place(module: nn.Module, graph: torch.fx.Graph) -> Callable[[torch.fx.Node, torch.fx.Node], bool]:
    """`changed(a, user)`: whether the tensor node `a` stands for was changed in place after `a` was
    made and before `user` reads it, through `a` or any view of the same values, so that what is known
    of `a` no longer holds there."""
    order = {node: i for i, node in enumerate(graph.nodes)}
    base: dict[torch.fx.Node, torch.fx.Node] = {}  # node -> the first node of its values (views, in-place results)

    def root(node):
        while node in base:
            node = base[node]
        return node

    changes: dict[torch.fx.Node, list[int]] = {}  # root -> where its values change
    for node in graph.nodes:
        first = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
        mutated = mutated_argument(module, node)
        # a selection may be a view (a slice, chunk, expand, detach): taken for one, as a copy would be
        # no less safe (its change then counts as one of its input too)
        viewed = calls_one_of(node, VIEW_METHODS, VIEW_FUNCTIONS) or calls_one_of(
            node, SELECTION_METHODS, SELECTION_FUNCTIONS
        )
        if mutated is not None:
            changes.setdefault(root(mutated), []).append(order[node])
            base[node] = root(mutated)  # an in-place op returns its argument
        elif viewed and first is not None:
            base[node] = root(first)

    def changed(a: torch.fx.Node, user: torch.fx.Node) -> bool:
        return any(order[a] < at < order[user] for at in changes.get(root(a), ()))

    return changed


def integer_arithmetic(node: torch.fx.Node, args: list) -> Optional[Fact]:
    """The fact of a sum or product of two integer values, or of c - x for an integer number c at least
    x's bound (SEW's IAND: spikes * (1 - spikes)): integers in [0, bound] again, computed exactly; None
    for anything else. `args` are the facts of node.args (None where one is not a node)."""
    if node.op != "call_function" or node.kwargs or len(args) != 2:
        return None
    a, b = args
    integers = all(f is not None and f.kind == "int" for f in args)
    if node.target in ADD_FUNCTIONS and integers:
        return Fact("int", a.bound + b.bound)
    if node.target in MUL_FUNCTIONS and integers:
        return Fact("int", a.bound * b.bound)
    c = node.args[0]
    if (
        node.target is operator.sub
        and isinstance(c, (int, float))
        and not isinstance(c, bool)
        and b is not None
        and b.kind == "int"
        and float(c).is_integer()
        and c >= b.bound
    ):
        return Fact("int", int(c))
    return None


class Undecided(BaseException):
    """A branch on a traced value that the tracer was not told how to take (a BaseException: a forward's
    own ``except Exception`` must not catch it)."""


class LeafTracer(torch.fx.Tracer):
    """Traces one module's forward, every module below it a leaf; a branch on a traced value (``if
    x.ndim != 4``) takes the next of `decisions`, or raises Undecided."""

    def __init__(self, root: nn.Module, decisions: tuple = ()):
        super().__init__()
        self.root_module, self.decisions, self.asked = root, decisions, 0

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return m is not self.root_module

    def trace(self, root, concrete_args=None) -> torch.fx.Graph:
        # tracing runs the forward's own Python: what it stores on its modules (a counter, a state made
        # on first use) would keep the tracer's proxies or counts
        with state_kept(root):
            return super().trace(root, concrete_args)

    def create_proxy(self, kind, target, args, kwargs, *rest, **options):
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **options)
        if kind == "call_function" and in_augmented_assignment():
            proxy.node.meta["augmented"] = True  # t += u: fx records t + u, a tensor changes in place
        return proxy

    def to_bool(self, obj) -> bool:
        if self.asked == len(self.decisions):
            raise Undecided
        self.asked += 1
        return self.decisions[self.asked - 1]


@contextlib.contextmanager
def state_kept(module: nn.Module):
    """Puts back, on leaving, every attribute of `module` and of the modules in it, and the entries of
    those that are dicts or lists (parameters, buffers, spikingjelly's memories, a user's lists)."""
    kept = []
    for m in module.modules():
        attributes = dict(m.__dict__)
        contents = {k: (v, v.copy()) for k, v in attributes.items() if type(v) in (dict, list, OrderedDict)}
        kept.append((m, attributes, contents))
    try:
        yield
    finally:
        for m, attributes, contents in kept:
            m.__dict__.clear()
            m.__dict__.update(attributes)
            for container, entries in contents.values():
                container.clear()
                if isinstance(container, dict):
                    container.update(entries)
                else:
                    container.extend(entries)


RAISE = dis.opmap["RAISE_VARARGS"]
TORCH_FOLDER = str(Path(torch.__file__).parent)
# BINARY_OP's arguments for the augmented assignments (+=, -=, *=, ...): NB_INPLACE_ADD and after
BINARY_OP = dis.opmap["BINARY_OP"]
IN_PLACE_OPS = {i for i, (name, _) in enumerate(dis._nb_ops) if name.startswith("NB_INPLACE_")}


def in_augmented_assignment() -> bool:
    """Whether the model's code that is being traced (the first frame out of torch and this file) is
    running an augmented assignment: fx traces ``t += u`` as ``t + u``, a new value, but on a tensor it
    changes t's values in place, and every other name for them (``a`` after ``t = a``) sees the change."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith((TORCH_FOLDER, __file__)):
        frame = frame.f_back
    if frame is None:
        return False
    code, at = frame.f_code.co_code, frame.f_lasti
    return code[at] == BINARY_OP and code[at + 1] in IN_PLACE_OPS


MAX_WAYS, MAX_BRANCHES = 8, 32  # ways through one forward, and branches on traced values along one


def raised_by_its_code(error: Exception) -> bool:
    """Whether `error` came from a ``raise`` (or a failed ``assert``) of the model's own code, not from
    torch or the tracer."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return (
        tb is not None
        and not tb.tb_frame.f_code.co_filename.startswith(TORCH_FOLDER)
        and tb.tb_frame.f_code.co_code[tb.tb_lasti] == RAISE
    )


def trace_ways(module: nn.Module) -> list[torch.fx.Graph]:
    """`module`'s forward traced, its children as leaves, once for each way through its branches on
    traced values (``if x.ndim == 4: x = x.unsqueeze(0)``). A way that raises at once (``if x.ndim != 4:
    raise ValueError(...)``, a failing ``assert``) is a check, and no forward that returns takes it: it
    is not followed. More than MAX_WAYS ways, or a branch whose ways the tracer cannot tell: TraceError."""
    graphs, pending = [], [()]
    while pending:
        decisions = pending.pop(0)
        try:
            graphs.append(LeafTracer(module, decisions).trace(module))
            continue
        except Undecided:
            pass
        ways = [way for way in (False, True) if goes_on(module, decisions + (way,))]
        pending += [decisions + (way,) for way in ways]
        if len(graphs) + len(pending) > MAX_WAYS or len(decisions) >= MAX_BRANCHES:
            raise torch.fx.proxy.TraceError(f"more than {MAX_WAYS} ways through forward")
    if not graphs:
        raise torch.fx.proxy.TraceError("every way through forward raises")
    return graphs


def goes_on(module: nn.Module, decisions: tuple) -> bool:
    """Whether tracing with these `decisions` gets past the last one (to the end, or to the next branch)
    rather than to a ``raise`` of the model's own code; TraceError where it fails otherwise."""
    try:
        LeafTracer(module, decisions).trace(module)
    except Undecided:
        return True
    except Exception as error:  # noqa: BLE001 (which way raises is what is asked)
        if not raised_by_its_code(error):
            raise torch.fx.proxy.TraceError(f"a branch on a traced value: {error}") from error
        return False
    return True


# ---- the rewrites -------------------------------------------------------------------------------


def is_dropout(module: nn.Module) -> bool:
    """torch's Dropouts, and spikingjelly's (layer.Dropout, Dropout2d: one mask for all steps, named
    here so that this module needs no spikingjelly)."""
    sj = type(module).__module__.startswith("spikingjelly.") and type(module).__name__ in ("Dropout", "Dropout2d")
    return isinstance(module, DROPOUTS) or sj


def store_for(facts: list[Fact]) -> Optional[str]:
    """How a layer whose every call's input has these facts can keep it: "bits", "uint8", "scaled" or None."""
    if facts and any(f.kind == "scaled" for f in facts):
        spikes = all(f.kind == "scaled" or (f.kind == "int" and f.bound == 1) for f in facts)
        return "scaled" if spikes else None
    if not facts or any(f.kind != "int" for f in facts):
        return None
    bound = max(f.bound for f in facts)
    return "bits" if bound == 1 else "uint8" if bound <= UINT8_MAX else None


def what_it_is(fact: Fact) -> str:
    return {
        "float": "a float value (not known to be spikes)",
        "bn": "a BatchNorm's output",
        "int": f"integers up to {fact.bound}",
        "scaled": "spikes after a Dropout",
    }[fact.kind]


def rewrite(analysis: Analysis, backend: str) -> LeanReport:
    report = LeanReport()
    paths = analysis.paths

    def entry(module, rewrite_, reason):
        report.entries.append(LeanEntry(paths.get(module, "?"), type(module).__name__, rewrite_, reason))

    calls = {m: len(f) for m, f in analysis.calls.items()}
    recomputed = recomputed_pools(analysis)  # MaxPool2d -> the BatchNorm whose output it pools
    fed_by: dict[nn.Module, nn.Module] = {}  # neuron -> the BatchNorm (or such a pool) feeding its every call
    for module, facts in analysis.calls.items():
        if isinstance(module, NeuronLayer):
            sources = {f.source for f in facts}
            source = next(iter(sources))
            if len(sources) != 1 or facts[0].kind != "bn":
                entry(module, None, "not fed by one BatchNorm directly")
            elif source not in recomputed and not usable_batch_norm(source):
                entry(module, None, f"fed by {type(source).__name__}, not a plain BatchNorm of torch or spikingjelly")
            elif module.steps is not None or module.max_pool:
                entry(module, None, "already a fused form (steps or max_pool)")
            elif calls.get(source) != len(facts):
                entry(module, None, "its BatchNorm is called more often than it is")
            else:
                fed_by[module] = source
    pools = fused_pools(analysis, fed_by)
    for pool, bn in recomputed.items():
        swap_class(bn, LeanBatchNorm)
        swap_class(pool, LeanRecomputedMaxPool2d, lean_bn=bn)
        entry(bn, "hands its input to the pool", f"feeds {paths.get(pool, '?')}")
        entry(pool, "keeps nothing", f"backward pools {paths.get(bn, '?')}'s output again, made from its input")
    for neuron, feeder in fed_by.items():
        swap_class(neuron, LeanNeuron, lean_bn=feeder)
        if feeder in recomputed:
            object.__setattr__(feeder, "lean_feeds_neuron", True)
            reason = f"backward recomputes H from {paths.get(recomputed[feeder], '?')}'s input, pooled again"
        else:
            swap_class(feeder, LeanBatchNorm)
            reason = f"backward recomputes H from {paths.get(feeder, '?')}'s input"
        pool = pools.get(neuron)
        if pool is not None:
            swap_class(pool, LeanPooledMaxPool2d, lean_backend=backend)
            object.__setattr__(neuron, "lean_pool", pool)
            entry(pool, "fused into the neuron", f"{paths.get(neuron, '?')} makes the pooling; nothing kept")
            reason += f", and makes {paths.get(pool, '?')}'s max pooling"
        entry(neuron, "keeps no float tensor", reason)
    fed: dict[nn.Module, list[str]] = {}  # BatchNorm -> the neurons it feeds (one entry even for several)
    for neuron, feeder in fed_by.items():
        if feeder not in recomputed:
            fed.setdefault(feeder, []).append(paths.get(neuron, "?"))
    for feeder, neurons in fed.items():
        entry(feeder, "hands its input to the neuron", f"feeds {' and '.join(neurons)}")
    done = {*fed_by.values(), *pools.values(), *recomputed, *recomputed.values()}
    for module, facts in analysis.calls.items():
        if isinstance(module, NeuronLayer) or module in done:
            continue
        store = store_for(facts)
        not_fed = next((f for f in facts if f.kind != "int"), facts[0])
        conv = next((lean for cls, lean in LEAN_CONVOLUTIONS.items() if isinstance(module, cls)), None)
        mixin = conv or (LeanLinear if isinstance(module, nn.Linear) else None)
        if mixin is not None and known_class(module):
            if conv is not None and (module.padding_mode != "zeros" or isinstance(module.padding, str)):
                entry(module, None, "padding other than numeric zeros")
            elif not plain_layer_forward(module):
                entry(module, None, f"its class's own forward ({type(module).__qualname__}) does not call the lean one")
            elif store is None:
                entry(module, None, f"its input is {what_it_is(not_fed)}")
            else:
                swap_class(module, mixin, lean_store=store, lean_backend=backend)
                kept, fed = {
                    "bits": ("bits", "fed spikes"),
                    "uint8": ("uint8", "fed sums of spikes"),
                    "scaled": ("bits and a scale", "fed spikes after a Dropout (0 or 1/(1-p))"),
                }[store]
                entry(module, f"input kept as {kept}", fed)
        elif isinstance(module, nn.MaxPool2d) and known_class(module):
            if module.return_indices:
                entry(module, None, "return_indices=True")
            elif store != "bits":
                entry(module, None, f"its input is {what_it_is(not_fed)}")
            else:
                swap_class(module, LeanMaxPool2d, lean_backend=backend)
                entry(module, "bits kept, no indices", "fed spikes")
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            entry(module, None, "feeds no neuron directly")
    for module in analysis.foreign:
        entry(
            module,
            None,
            f"a neuron of a class of someone else's ({type(module).__qualname__}): what it computes is not known",
        )
    for module, why in analysis.untraced.items():
        entry(module, None, f"forward not traced ({why}): its children were looked at one by one")
    order = {p: i for i, p in enumerate(paths.values())}
    report.entries.sort(key=lambda e: order.get(e.path, -1))
    return report


def usable_batch_norm(module: nn.Module) -> bool:
    """A BatchNorm whose output the lean forms can make again: torch's or spikingjelly's, not synced,
    whose output is the normalization alone (not 2.x's TEBN, which scales each step after it)."""
    plain = type(module).forward in (BATCH_NORMS.forward, LeanBatchNorm.forward) or (
        type(module).__module__.startswith("spikingjelly.") and type(module).__name__ in SPIKINGJELLY_BATCH_NORMS
    )
    return (
        isinstance(module, BATCH_NORMS) and known_class(module) and plain and not isinstance(module, nn.SyncBatchNorm)
    )


# spikingjelly's BatchNorms whose output is torch's BatchNorm of the steps flattened into the batch
# (the threshold-dependent ones differ in their initial weight only)
SPIKINGJELLY_BATCH_NORMS = tuple(f"{kind}BatchNorm{d}d" for kind in ("", "ThresholdDependent") for d in (1, 2, 3))


def pools_of_one_source(analysis: Analysis, kind: str):
    """(MaxPool2d, source, facts) for each of torch's or spikingjelly's MaxPool2d (no indices returned)
    whose every call's input is of `kind` and made by one module, called as often as the pool is."""
    for module, facts in analysis.calls.items():
        if not (isinstance(module, nn.MaxPool2d) and known_class(module)) or module.return_indices:
            continue
        sources = {f.source for f in facts}
        source = next(iter(sources))
        if (
            len(sources) == 1
            and all(f.kind == kind for f in facts)
            and len(analysis.calls.get(source, ())) == len(facts)
        ):
            yield module, source, facts


def recomputed_pools(analysis: Analysis) -> dict:
    """MaxPool2d -> the BatchNorm whose output, and only its, it pools at every call (once a call): such a
    pool keeps nothing for backward (``LeanRecomputedMaxPool2d``)."""
    return {pool: bn for pool, bn, _ in pools_of_one_source(analysis, "bn") if usable_batch_norm(bn)}


def fused_pools(analysis: Analysis, fed_by: dict) -> dict:
    """neuron -> the MaxPool2d that its spikes, and only its, feed at every call (once a call): the
    neurons of `fed_by` make that pooling themselves."""
    pools = {}
    for pool, neuron, facts in pools_of_one_source(analysis, "int"):
        if neuron in fed_by and neuron not in pools and all(f.bound == 1 for f in facts):
            pools[neuron] = pool
    return pools


LIBRARIES = ("torch.", "spikingjelly.", "snn_triton.", "builtins")


def forward_owner(module: nn.Module) -> type:
    """The class whose forward `module` runs: the first in its method order that defines one."""
    return next(cls for cls in type(module).__mro__ if "forward" in vars(cls))


def library_forward(module: nn.Module) -> bool:
    """Whether the forward `module` runs is torch's, spikingjelly's or ours, not a subclass's own."""
    return forward_owner(module).__module__.startswith(LIBRARIES)


def library_class(module: nn.Module) -> bool:
    """Whether every class `module`'s class derives from is torch's, spikingjelly's or ours: no method
    a lean form relies on (a neuron's charge, fire, reset) is someone else's."""
    return all(cls.__module__.startswith(LIBRARIES) for cls in type(module).__mro__)


def plain_layer_forward(module: nn.Module) -> bool:
    """Whether a conv's or linear's forward is torch's, or that of spikingjelly's wrapper of the same
    name (which calls torch's): the lean forms replace the convolution torch's forward calls, which a
    forward of its own (spikingjelly 2.x's WSConv2d standardizes the weight and calls F.conv2d) skips."""
    owner = forward_owner(module)
    torch_class = next(cls for cls in type(module).__mro__ if cls.__module__.startswith("torch."))
    return owner.__module__.startswith("torch.") or (
        owner.__module__.startswith("spikingjelly.") and owner.__name__ == torch_class.__name__
    )


def known_class(module: nn.Module) -> bool:
    """Whether `module`'s class is torch's, spikingjelly's, or one of ours: a class of someone else's
    may compute something else in the methods the lean forms replace."""
    return type(module).__module__.startswith(("torch.", "spikingjelly.", __name__))


def lean(model: nn.Module, *, backend: str = "auto", rules: Optional[Rules] = None) -> nn.Module:
    """Rewrite `model` (torch layers and ``st.LIF``/``IF``/``PLIF``) in place to keep less for backward,
    wherever the result is provably the same; return `model`.

    Conv1d/2d/3d and Linear fed spikes keep them as bits (sums of spikes: uint8; spikes after a
    Dropout: bits and the scale), MaxPool2d fed spikes keeps bits and no indices, MaxPool2d fed a
    BatchNorm keeps nothing in training mode, and a neuron fed by a BatchNorm (or such a pooling)
    keeps nothing of its own in training mode (backward recomputes it from the BatchNorm's input) and
    makes the max pooling its spikes feed, whose layer then keeps nothing either. Outputs are bit for
    bit those of the model as it was, and gradients equal to float rounding. Anything else is left as
    it is; the model's parameters, buffers and ``state_dict`` do not change. ``lean_report(model)``
    tells what was done. On torch older than 2.13 the lean layers keep less in eager mode only: under
    ``torch.compile`` they compute as the layers they replace (a warning says so, once).

    Args:
        model: the network; its layers' inputs are found from its structure (``nn.Sequential`` order,
            and each other module's ``forward`` traced with torch.fx along each way through its
            branches), not from a call.
        backend: for the bit packing: "auto", "triton" or "torch", as every entry point's.
        rules: what to know beyond torch's layers (the spikingjelly adapter passes its containers).

    Returns:
        `model`, rewritten.

    Raises:
        TypeError: `model` is not an ``nn.Module``, or `rules` not ``Rules`` (or None).
        ValueError: `backend` is not one of the three.

    Examples:
        >>> import torch, snn_triton as st
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), st.LIF(),
        ...                     nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
        >>> st.lean(net) is net
        True
        >>> [entry.layer for entry in st.lean_report(net).rewritten]
        ['BatchNorm2d', 'LIF', 'MaxPool2d', 'Linear']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if rules is not None and not isinstance(rules, Rules):
        raise TypeError(f"rules must be a snn_triton.lean.Rules or None, got {type(rules).__name__}")
    check_backend(backend)
    if TORCH_VERSION < LEAN_COMPILED_MIN_TORCH:
        warn_compiled_as_replaced()
    analysis = Analysis(model, Rules() if rules is None else rules)
    # in both modes (``if self.training: x = self.dropout(x)``): a rewrite must hold in the mode the
    # model is trained in, whichever it is in now; every leaf's calls are recorded once in each
    for training in (True, False):
        with state_kept(model):
            model.train(training)
            analysis.run(model, FLOAT)
    object.__setattr__(model, "lean_report", rewrite(analysis, backend))
    return model


# torch 2.11's dynamo and 2.12's fake tensors fail on the lean layers (an autograd.Function's saved
# layout under dynamic shapes, the scaled store's byte view; tests/test_lean_rewrite.py on CI's floor
# stage); 2.13 to 2.15 compile them.
LEAN_COMPILED_MIN_TORCH = (2, 13)


def compiled_as_replaced() -> bool:
    """Whether the lean layers compute as the layers they replace: under torch.compile on a torch older
    than LEAN_COMPILED_MIN_TORCH (the same values, keeping what those layers keep). Eager, never."""
    return TORCH_VERSION < LEAN_COMPILED_MIN_TORCH and being_compiled()


@functools.cache
def warn_compiled_as_replaced() -> None:
    warnings.warn(
        f"st.lean: on torch {torch.__version__} (older than 2.13) the lean layers keep less in eager mode "
        "only; under torch.compile they compute as the layers they replace (the same results, without "
        "the memory saving)",
        stacklevel=3,
    )


def lean_report(model: nn.Module) -> LeanReport:
    """What ``st.lean`` (or ``st.from_spikingjelly`` with lean=True) did to `model`.

    Args:
        model: a model given to ``st.lean``.

    Returns:
        its ``LeanReport``: ``print`` it for a table, or read ``rewritten`` and ``left``.

    Raises:
        TypeError: `model` is not an ``nn.Module``.
        ValueError: `model` was not rewritten by ``st.lean``.

    Examples:
        >>> import torch, snn_triton as st
        >>> net = torch.nn.Sequential(st.LIF(), torch.nn.Linear(6, 2))
        >>> print(st.lean_report(st.lean(net)))  # doctest: +NORMALIZE_WHITESPACE
        st.lean: 1 layers rewritten, 1 left
        0      LIF     left                not fed by one BatchNorm directly
        1      Linear  input kept as bits  fed spikes
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    report = model.__dict__.get("lean_report")
    if not isinstance(report, LeanReport):
        raise ValueError("model was not given to st.lean (or st.from_spikingjelly with lean=True)")
    return report
