"""``st.export_streaming``: a network as one time step with its membrane state explicit,
``(x_t, *state) -> (y_t, *state)``, through ``torch.export`` and, given a path, ONNX.

The step network is built from a copy of the model: every neuron layer becomes one step of
``reference.forward_step`` (the one formula of the charge, spike and reset) on a potential that
comes in as an input and goes out as an output; the training-only forms are undone (a static-input
LIF is one step on this step's input, a LIF with fused 2x2 max pooling is the step followed by
``max_pool2d``, SpikeConv2d and SpikeLinear are nn.Conv2d and nn.Linear with the same weights);
spikingjelly layers (``step_mode`` attributes) are put in single-step mode. ``BasicCSNN`` streams
its layer list: at step t it gives fc2's output for that step, whose mean over T steps is
``BasicCSNN``'s logits (fc2 is linear).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import reference
from .lean import undo_lean
from .model import BasicCSNN
from .nn import NeuronLayer, SpikeConv2d, SpikeLinear


def detached_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose neurons' kept potentials are detached (a stateful layer's ``v``
    may be in an autograd graph, which deepcopy refuses), with the lean rewrites undone (training-only
    forms whose bit packing the exporters cannot trace)."""
    memo = {
        id(m.v): m.v.detach().clone() for m in model.modules() if isinstance(m, NeuronLayer) and isinstance(m.v, Tensor)
    }
    return undo_lean(copy.deepcopy(model, memo))


class StateBox:
    """The potentials of one call of the step network: read by each neuron step in call order, and
    the new ones written there. A plain object, so torch.export traces through it."""

    def __init__(self):
        self.inputs: Optional[tuple] = None  # None while the state's shapes are found
        self.outputs: dict = {}  # state index -> V[t]
        self.shapes: dict = {}  # state index -> (shape, dtype), found by a first call


class NeuronStep(nn.Module):
    """One step of a neuron layer: x [N, ...] and the potential V[t-1] in the box -> spikes [N, ...]
    (2x2 max-pooled with max_pool), V[t] into the box. Evaluated with ``layer.scan_params()``."""

    def __init__(self, layer: NeuronLayer, box: StateBox, index: int):
        super().__init__()
        self.params = layer.scan_params()
        self.w = layer.leak_weight()  # PLIF: the Parameter itself (its learned tau)
        self.max_pool = layer.max_pool
        self.box, self.index = box, index
        self.rest = reference.rest_potential(self.params.v_reset)

    def leak(self):
        if self.w is None:
            return self.params.leak
        return reference.plif_leak(self.w.reshape(()).sigmoid(), self.params.charge_form)  # as neuron_scan does

    def forward(self, x: Tensor) -> Tensor:
        cdt = reference.compute_dtype(x.dtype)
        if self.index in self.box.outputs:
            raise ValueError(
                f"neuron layer {self.index} is called twice in one step: one potential cannot stream two calls"
            )
        if self.box.inputs is None:
            self.box.shapes[self.index] = (tuple(x.shape), cdt)
            v = torch.full_like(x, self.rest, dtype=cdt)
        else:
            v = self.box.inputs[self.index]
        neuron = self.params.as_neuron(self.leak()).computing_in(cdt)
        v, spike, _ = reference.forward_step(v, x.to(cdt), neuron)
        self.box.outputs[self.index] = v
        spike = spike.to(x.dtype)
        return F.max_pool2d(spike, 2) if self.max_pool else spike

    def extra_repr(self) -> str:
        return (
            f"state={self.index}, charge_form={self.params.charge_form}, v_threshold={self.params.v_threshold}, "
            f"v_reset={self.params.v_reset}, max_pool={self.max_pool}"
        )


def plain_layer(module: nn.Module) -> nn.Module:
    """SpikeConv2d / SpikeLinear as the nn.Conv2d / nn.Linear they equal (same Parameters)."""
    if isinstance(module, SpikeConv2d):
        plain = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            module.bias is not None,
        )
    else:
        plain = nn.Linear(module.in_features, module.out_features, module.bias is not None)
    plain.weight = module.weight
    plain.bias = module.bias
    return plain


def single_step(module: nn.Module, box: StateBox) -> nn.Module:
    """Replace, in place below `module`, each neuron layer by its NeuronStep and the lean layers by
    plain ones; put spikingjelly's layers in step mode 's'. Returns the module to call."""
    if isinstance(module, NeuronLayer):
        return NeuronStep(module, box, 0)
    for parent in list(module.modules()):
        for name, child in list(parent._modules.items()):
            if type(child).__name__ == "SeqToANNContainer":  # spikingjelly's [T * N] wrapper: its layers, per step
                parent._modules[name] = nn.Sequential(*child._modules.values())
    index = 0
    for parent in list(module.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, NeuronLayer):
                parent._modules[name] = NeuronStep(child, box, index)
                index += 1
            elif isinstance(child, (SpikeConv2d, SpikeLinear)):
                parent._modules[name] = plain_layer(child)
    for sub in module.modules():
        if isinstance(getattr(sub, "step_mode", None), str) and not isinstance(sub, NeuronStep):
            sub.step_mode = "s"
    return module


class StreamingStep(nn.Module):
    """The step network: forward(x_t, *state) -> (y_t, *state), state[i] the potential of the i-th
    neuron layer (in call order)."""

    def __init__(self, net: nn.Module, box: StateBox):
        super().__init__()
        self.net, self.box = net, box

    def forward(self, x: Tensor, *state: Tensor):
        self.box.inputs, self.box.outputs = (state or None), {}
        y = self.net(x)
        return (y, *(self.box.outputs[i] for i in sorted(self.box.outputs)))


class Streaming(NamedTuple):
    """What ``export_streaming`` returns.

    module: the step network (an nn.Module), ``module(x_t, *state) -> (y_t, *state)``.
    program: ``torch.export``'s ExportedProgram of it (``program.module()`` runs it).
    initial_state: the potentials at rest (v_reset, 0 for the soft reset), one per neuron layer;
        passing them again resets the network.
    state_names: the ONNX input names of the state (``v0``, ``v1``, ...); the outputs are named
        ``y`` and ``v0_next``, ``v1_next``, ...
    onnx_path: where the ONNX model was written, or None.
    """

    module: nn.Module
    program: torch.export.ExportedProgram
    initial_state: tuple
    state_names: tuple
    onnx_path: Optional[Path]


def export_streaming(model: nn.Module, example_step: Tensor, path: Union[str, Path, None] = None) -> Streaming:
    """Export `model` as a single-step network with its membrane state as explicit inputs and outputs.

    Args:
        model: ``BasicCSNN``, a network of our layers (either step mode), or a spikingjelly model
            after ``st.from_spikingjelly``. It is copied, not changed; the copy runs in eval mode.
        example_step: one time step of input, [N, ...] (for ``BasicCSNN`` the image
            [N, C, H, W], fed at every step). The export is for its shape, dtype and device.
        path: where to write the ONNX model (``torch.onnx.export(..., dynamo=True)``); None: no ONNX.

    Returns:
        ``Streaming``: the step network ``(x_t [N, ...], *state) -> (y_t [N, ...], *state)``, its
        ExportedProgram, the state at rest, the ONNX state names and the ONNX path.

    Raises:
        TypeError: model is not an nn.Module, or example_step not a floating-point tensor.
        ValueError: the model has no neuron layer, or torch.export / ONNX cannot export a layer
            (the message names the step that failed and why).

    Examples:
        >>> import torch, snn_triton as st
        >>> net = st.BasicCSNN(T=8, image_size=8).eval()
        >>> image = torch.rand(1, 3, 8, 8)
        >>> s = st.export_streaming(net, image)  # a path also writes the ONNX model there
        >>> state = s.initial_state
        >>> for t in range(8):
        ...     y, *state = s.module(image, *state)  # the mean of the 8 y is net(image)
        >>> y.shape
        torch.Size([1, 10])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_step, Tensor) or not example_step.is_floating_point():
        raise TypeError(
            "example_step must be a floating-point tensor (one time step, [N, ...]), got "
            f"{type(example_step).__name__ if not isinstance(example_step, Tensor) else example_step.dtype}"
        )
    net = detached_copy(model.net if isinstance(model, BasicCSNN) else model).eval()
    box = StateBox()
    step = StreamingStep(single_step(net, box), box).eval()
    with torch.no_grad():
        try:
            step(example_step)  # finds the state's shapes
        except (RuntimeError, ValueError, TypeError) as error:
            raise ValueError(
                f"the model does not run one step of example_step {tuple(example_step.shape)} "
                f"as a single-step network: {error}"
            ) from error
    if not box.shapes:
        raise ValueError(
            "the model has no neuron layer (IF, LIF, PLIF or a converted spikingjelly neuron): "
            "there is no state to stream"
        )
    steps = neuron_steps(step)
    if sorted(box.shapes) != [m.index for m in steps]:
        raise ValueError(
            "some neuron layers of the model are not called by its forward: "
            + ", ".join(str(m.index) for m in steps if m.index not in box.shapes)
        )
    initial = tuple(
        torch.full(box.shapes[m.index][0], m.rest, dtype=box.shapes[m.index][1], device=example_step.device)
        for m in steps
    )
    names = tuple(f"v{i}" for i in range(len(initial)))
    args = (example_step, *initial)
    try:
        program = torch.export.export(step, args)
    except Exception as error:  # torch.export's errors are of many types; say which model failed
        raise ValueError(f"torch.export cannot export the step network of {type(model).__name__}: {error}") from error
    onnx_path = None
    if path is not None:
        onnx_path = Path(path)
        try:
            torch.onnx.export(
                step,
                args,
                str(onnx_path),
                dynamo=True,
                input_names=["x", *names],
                output_names=["y", *(f"{n}_next" for n in names)],
                verbose=False,
            )
        except Exception as error:
            raise ValueError(f"ONNX cannot export the step network of {type(model).__name__}: {error}") from error
    return Streaming(step, program, initial, names, onnx_path)


def neuron_steps(step: nn.Module) -> list[NeuronStep]:
    """The NeuronSteps of a step network, by state index."""
    return sorted((m for m in step.modules() if isinstance(m, NeuronStep)), key=lambda m: m.index)
