"""``st.from_spikingjelly(model)``: spikingjelly's IF, LIF and PLIF neurons in a model replaced, in
place, by ours, which compute what they computed. The one module that knows spikingjelly's classes;
it imports spikingjelly when called, never when snn_triton is imported.

The charge each version computes, in our equations (``reference.CHARGE_FORMS``):

- 0.0.0.0.14 in training mode: ``reference.charge_form_of``'s (it was written after that version);
  its LIFNode in eval mode runs other functions, which charge ``V - (V - v_reset) / tau + X``
  (DECAY_POTENTIAL) also where training multiplies ``V * (1 - 1/tau)`` (SCALED: a hard reset to 0): a
  converted LIF follows its module's train/eval mode there, as the rounding differs.
- 2.x, in either mode: decay_input=False is always DECAY_POTENTIAL; the other forms are those of 0.0.0.0.14.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import sys
from types import ModuleType
from typing import NamedTuple, Optional

from torch import Tensor, nn

from . import reference
from .checks import BACKENDS, NeuronParams, check_backend, check_bool
from .lean import Rules, made_class_namespace
from .lean import lean as lean_rewrite
from .nn import IF, LIF, PLIF, NeuronLayer, changed_params

# spikingjelly's neuron classes and surrogate functions, by name, and ours.
NEURONS = {"IFNode": IF, "LIFNode": LIF, "ParametricLIFNode": PLIF}
# spikingjelly's surrogates whose forward is the Heaviside step and whose derivative has one
# parameter, alpha, which is our beta (SuperSpike is 2.x's alone).
SURROGATES = {
    "Sigmoid": "spikingjelly_sigmoid",
    "ATan": "atan",
    "SoftSign": "soft_sign",
    "PiecewiseQuadratic": "piecewise_quadratic",
    "PiecewiseExp": "piecewise_exp",
    "Erf": "erf",
    "NonzeroSignLogAbs": "nonzero_sign_log_abs",
    "SuperSpike": "spikingjelly_superspike",
}
HOOKS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")


class Converted:
    """What a converted neuron adds to our layer (mixed in before it): the charge of eval mode,
    spikingjelly's module type (``functional.reset_net`` and ``set_step_mode`` warn about others), and
    the neuron's ``surrogate_function`` module, whose ``alpha`` (or the module itself) a schedule may
    change between calls, as the settings (``v_threshold``, ``tau``, ...)."""

    backend = "auto"  # ours; shadows the `backend` property of spikingjelly 0.0.0.0.14's MemoryModule
    supported_backends = BACKENDS  # what functional.set_backend may set: ours (not cupy)
    store_v_seq = False  # spikingjelly's attribute: the potential of every step is not kept
    eval_params: NeuronParams
    followed: tuple  # (the surrogate module's type, alpha, spiking) that params follow

    def scan_params(self) -> NeuronParams:
        sg = self.surrogate_function
        if followed_of(sg) != self.followed:
            self.follow(sg)
        return self.params if self.training else self.eval_params

    def follow(self, sg: nn.Module) -> None:
        """The settings after the surrogate module `sg` (its alpha is our beta)."""
        surrogate = surrogate_of(sg, import_spikingjelly())
        self.change_settings(surrogate=surrogate, beta=sg.alpha)
        self.followed = followed_of(sg)

    def initial_potential(self, x_seq: Tensor) -> Optional[Tensor]:
        v = self.v
        if type(self).spikingjelly_version >= 2 and isinstance(v, Tensor) and v.shape != x_seq.shape[1:]:
            return None  # 2.x starts from rest where the potential kept has another shape (a new batch size)
        return super().initial_potential(x_seq)

    def change_settings(self, **changes) -> None:
        # the charge forms follow v_reset and decay_input, in each mode as spikingjelly's version has them
        self.params = changed_params(self.params, changes)
        train, eval_ = charges(type(self).spikingjelly_name, self, type(self).spikingjelly_version)
        self.params = self.params._replace(forced_charge_form=train)
        self.eval_params = self.params._replace(forced_charge_form=eval_)


@functools.cache
def converted_classes(sj: Spikingjelly) -> dict[str, type]:
    """spikingjelly's class name -> our layer as an instance of that class (of the version imported), so
    that what looks for spikingjelly's neurons (monitors, ``isinstance(m, neuron.BaseNode)``) finds it;
    our layer's methods and settings come first."""
    return {
        name: type(
            ours.__name__,
            (Converted, ours, node_init_skipped(sj.base.MemoryModule), getattr(sj.neuron, name)),
            made_class_namespace(
                (converted_class, (name,)), __module__=__name__, spikingjelly_name=name, spikingjelly_version=sj.version
            ),
        )
        for name, ours in NEURONS.items()
    }


def node_init_skipped(memory_module: type) -> type:
    """A base that stands between our layer and spikingjelly's neuron class: our layer's constructor runs
    `memory_module`'s, never the neuron's (whose settings ours hold)."""

    class NodeInitSkipped:
        def __init__(self):
            memory_module.__init__(self)

    return NodeInitSkipped


def converted_class(name: str) -> type:
    """Our layer for spikingjelly's class `name`, as an instance of that class of the spikingjelly installed."""
    return converted_classes(import_spikingjelly())[name]


class Spikingjelly(NamedTuple):
    """The spikingjelly installed: the modules the adapter reads, and its major version."""

    neuron: ModuleType
    surrogate: ModuleType
    base: ModuleType
    functional: ModuleType
    version: int


def import_spikingjelly() -> Spikingjelly:
    try:
        modules = [
            importlib.import_module(f"spikingjelly.activation_based.{name}")
            for name in ("neuron", "surrogate", "base", "functional")
        ]
    except ImportError as error:
        raise ImportError(
            "st.from_spikingjelly needs spikingjelly (0.0.0.0.14 or 2.0.0), which is not "
            f"installed: pip install spikingjelly ({error})"
        ) from error
    return Spikingjelly(*modules, int(importlib.metadata.version("spikingjelly").split(".")[0]))


def is_neuron(module: nn.Module, sj: Spikingjelly) -> bool:
    """A spikingjelly neuron: a class of its neuron module(s), or a subclass of its BaseNode (not ours,
    converted already)."""
    where = type(module).__module__
    return not isinstance(module, NeuronLayer) and (
        where == sj.neuron.__name__
        or where.startswith(sj.neuron.__name__ + ".")
        or isinstance(module, sj.neuron.BaseNode)
    )


def charges(name: str, node, version: int) -> tuple[int, int]:
    """The charge form of `node` (spikingjelly class `name`) in training and in eval mode."""
    train = reference.charge_form_of(name != "IFNode", getattr(node, "decay_input", True), node.v_reset)
    if name == "IFNode" or node.decay_input:
        return train, train
    if version >= 2:
        return reference.DECAY_POTENTIAL, reference.DECAY_POTENTIAL
    return train, reference.DECAY_POTENTIAL if name == "LIFNode" and node.v_reset is not None else train


def followed_of(sg: nn.Module) -> tuple:
    """What of spikingjelly's surrogate module `sg` a converted neuron's settings follow."""
    return type(sg), getattr(sg, "alpha", None), getattr(sg, "spiking", None)


def surrogate_of(sg: nn.Module, sj: Spikingjelly) -> str:
    """Our surrogate's name for spikingjelly's surrogate module `sg`, or ValueError saying why there is none."""
    surrogate = next(
        (ours for theirs, ours in SURROGATES.items() if type(sg) is getattr(sj.surrogate, theirs, None)), None
    )
    if surrogate is None:
        raise ValueError(
            f"surrogate_function {type(sg).__name__} is not supported (spikingjelly's surrogate."
            f"{', '.join(SURROGATES)} are, of any alpha)"
        )
    if sg.spiking is not True:
        raise ValueError(f"surrogate_function {type(sg).__name__}(spiking={sg.spiking!r}) does not spike")
    return surrogate


def convert(node, sj: Spikingjelly, backend: str) -> NeuronLayer:
    """Our layer computing what `node` computes, or ValueError/TypeError saying why there is none."""
    name = next((name for name in NEURONS if type(node) is getattr(sj.neuron, name)), None)
    if name is None:
        kind = next((name for name in NEURONS if isinstance(node, getattr(sj.neuron, name))), None)
        raise ValueError(
            f"{type(node).__name__}, a subclass of spikingjelly's {kind}, may change its dynamics"
            if kind
            else f"{type(node).__name__} is not supported (IFNode, LIFNode and ParametricLIFNode are)"
        )
    if getattr(node, "store_v_seq", False):
        raise ValueError("store_v_seq=True (the potential of every step kept in v_seq) is not implemented")
    if getattr(node, "_neuron_precision", None) is not None:
        raise ValueError("a neuron precision (spikingjelly.activation_based.precision) is not implemented")
    if any(getattr(node, hooks, None) for hooks in HOOKS):
        raise ValueError("it has hooks (a monitor?), which would not move to the replacement")
    sg = node.surrogate_function
    options = dict(
        v_threshold=node.v_threshold,
        v_reset=node.v_reset,
        surrogate=surrogate_of(sg, sj),
        beta=sg.alpha,
        detach_reset=node.detach_reset,
        backend=backend,
        step_mode=node.step_mode,
        stateful=True,
    )
    if name != "IFNode":
        options["decay_input"] = node.decay_input
    if name == "LIFNode":
        options["tau"] = node.tau
    layer = converted_classes(sj)[name](**options)
    layer.change_settings()  # the charge forms of this version
    layer.surrogate_function, layer.followed = sg, followed_of(sg)
    if name == "ParametricLIFNode":
        layer.w = node.w  # the same Parameter: optimizers built before the conversion keep training it
    # v as spikingjelly keeps it, a memory (monitors read it through Module.__getattr__)
    rest = layer.__dict__.pop("v")
    layer.register_memory("v", rest)
    layer.v = node.v  # the potential it holds now (v_reset after a reset)
    return layer.train(node.training)


def lean_rules(sj: Spikingjelly) -> Rules:
    """What st.lean needs to know of spikingjelly's layers: SeqToANNContainer runs its children in
    order (on [T * N, ...]); the others subclass torch's layers, or are not known to keep spikes."""
    layer = importlib.import_module("spikingjelly.activation_based.layer")
    return Rules(sequential=(layer.SeqToANNContainer,))


def from_spikingjelly(model: nn.Module, *, backend: str = "auto", lean: bool = True) -> nn.Module:
    """Replace, in place, every spikingjelly neuron of `model` by ours, computing what it computed;
    with lean=True, then rewrite the model with ``st.lean`` to keep less for backward.

    Converted: IFNode, LIFNode and ParametricLIFNode (exactly these classes), in either step mode,
    with one of the surrogates in ``SURROGATES`` (Sigmoid, ATan, SoftSign, PiecewiseQuadratic,
    PiecewiseExp, Erf, NonzeroSignLogAbs and 2.x's SuperSpike), of any alpha. The replacements keep
    their membrane potential ``v`` between calls until ``functional.reset_net(model)`` or their
    ``reset()``, take ``step_mode`` from the neuron, share PLIF's ``w`` (the same Parameter object),
    and leave ``state_dict()`` as it was; the whole model pickles (``torch.save(model)``). Each is an
    instance of the spikingjelly class it replaces (its monitors find it) and has its attributes:
    ``v_threshold``, ``tau``, ``v_reset``, ... and ``surrogate_function``, which a schedule may change
    between calls (``alpha`` too); a ``v`` set by hand is where the next call starts. The lean
    rewrites keep the outputs bit for bit and the gradients to float rounding; ``st.lean_report(model)``
    says what they did. Backward is first-order: ``create_graph=True`` through them raises.

    Args:
        model: a module holding spikingjelly neurons (not a neuron itself).
        backend: "auto", "triton" or "torch" (see ``st.lif_scan``).
        lean: whether to rewrite the model with ``st.lean`` after the neurons (False: neurons only).

    Returns:
        `model` itself, its neurons replaced.

    Raises:
        TypeError: model is not an ``nn.Module``.
        ValueError: a neuron, surrogate or option that cannot be reproduced exactly (another neuron
            class or a subclass, another surrogate, ``store_v_seq=True``, hooks, ...): the message
            names each offending path in ``model.named_modules()`` and why, and nothing is replaced.
            Also an unknown backend.
        ImportError: spikingjelly is not installed.

    Examples:
        >>> import torch, snn_triton as st
        >>> from spikingjelly.activation_based import functional, layer, neuron
        >>> net = torch.nn.Sequential(layer.Linear(4, 3), neuron.LIFNode(step_mode="m"))
        >>> functional.set_step_mode(net, "m")
        >>> type(st.from_spikingjelly(net)[1]).__module__
        'snn_triton.spikingjelly_adapter'
        >>> net(torch.randn(5, 2, 4)).shape
        torch.Size([5, 2, 3])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_backend(backend)
    lean = check_bool(lean, "lean")
    sj = import_spikingjelly()
    replacements, refusals = {}, []
    for path, module in model.named_modules():
        if not is_neuron(module, sj):
            continue
        try:
            if module is model:
                raise ValueError("the model itself is the neuron: put it in a container (nn.Sequential)")
            replacements[module] = convert(module, sj, backend)
        except (TypeError, ValueError) as error:
            refusals.append(f"{path or repr('')}: {error}")
    if refusals:
        raise ValueError(
            "cannot convert these spikingjelly neurons (nothing was replaced):\n  " + "\n  ".join(refusals)
        )
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if child in replacements:
                setattr(parent, name, replacements[child])
    if lean:
        lean_rewrite(model, backend=backend, rules=lean_rules(sj))
    forget_reset_lists(sj, model, set(replacements))
    return model


def forget_reset_lists(sj: Spikingjelly, model: nn.Module, replaced: set) -> None:
    """2.x's reset_net remembers the modules it reset in each net: forget what it remembers of `model`'s
    modules, and of any net (a wrapper of `model`) whose list holds a replaced neuron, else reset_net
    would go on resetting those."""
    invalidate = getattr(sj.functional, "invalidate_reset_cache", None)
    if invalidate is None:
        return
    for module in model.modules():
        invalidate(module)
    remembered = getattr(sys.modules.get(invalidate.__module__), "_RESET_MODULE_CACHE", {})
    for net, modules in list(remembered.items()):
        if any(module() in replaced for module in modules):
            invalidate(net)
