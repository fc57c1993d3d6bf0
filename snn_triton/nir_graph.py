"""``st.to_nir`` and ``st.from_nir``: networks to and from NIR, the Neuromorphic Intermediate
Representation (the ``nir`` package, imported when called).

NIR's neurons are continuous-time; one step of ours is one forward-Euler step of length ``dt``:

- LIF, ``decay_input=True``: ``H = V + (X - (V - v_reset)) / tau`` is
  ``LIF(tau=tau*dt, r=1, v_leak=v_reset, v_threshold, v_reset)``;
  ``decay_input=False``: ``H = V - (V - v_reset) / tau + X`` is the same with ``r = tau``.
- PLIF: the LIF of its learned ``tau = 1 / sigmoid(w)`` (``w`` also kept in the node's metadata,
  so that ``from_nir`` rebuilds the PLIF exactly).
- IF: ``H = V + X`` is ``IF(r=1/dt, v_threshold, v_reset)``.
- Hard reset (a float ``v_reset``) is NIR's reset to ``v_reset``. The soft reset (``v_reset=None``,
  ``V = H - v_threshold`` after a spike) has no NIR node: it is refused.
- NIR spikes where ``v > v_threshold``, ours (spikingjelly's) where ``H >= v_threshold``: they
  differ only where H equals the threshold exactly.

Surrogate functions and ``detach_reset`` only shape training gradients: they are not exported, and
``from_nir`` takes the surrogate to train with. Linear, Conv2d, Flatten, AvgPool2d, sum pooling
(``nn.LPPool2d(1, ...)``), Identity and Dropout, nested containers and additions (``a + b``: NIR
sums the edges into a node) are exported; anything else, max pooling among them, is refused with
the submodule's path and why.
"""

from __future__ import annotations

import math
import operator
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from .checks import check_backend, check_float, check_step_mode
from .nn import IF, LIF, PLIF, NeuronLayer
from .streaming import detached_copy

# Layers that pass their input on unchanged in inference (Dropout in eval mode).
PASS_THROUGH = (nn.Identity, nn.Dropout)
STATELESS = (nn.Linear, nn.Conv2d, nn.Flatten, nn.AvgPool2d, nn.LPPool2d)
METADATA_KEY = "snn_triton"


def import_nir():
    try:
        import nir
    except ImportError as error:
        raise ImportError(
            f'st.to_nir / st.from_nir need the nir package: pip install -e ".[deploy]" ({error})'
        ) from error
    return nir


def is_seq_to_ann(module: nn.Module) -> bool:
    """spikingjelly's SeqToANNContainer: its layers run on [T * N, ...], one per step."""
    return type(module).__name__ == "SeqToANNContainer" and isinstance(module, nn.Sequential)


def refusal(path: str, module: nn.Module) -> Optional[str]:
    """Why NIR cannot express `module` (at `path`), or None."""
    name = type(module).__name__
    if isinstance(module, NeuronLayer):
        if module.max_pool:
            return "max_pool=True fuses 2x2 max pooling into the neuron, and NIR has no max pooling node"
        if module.steps is not None:
            return "steps= (one static input fed at every step) is a training form; NIR neurons take one input per step"
        if module.params.v_reset is None:
            return "v_reset=None is the soft reset (V = H - v_threshold after a spike); NIR's neurons reset to v_reset"
        return None
    if "MaxPool" in name or "AdaptiveMaxPool" in name:
        return "max pooling has no NIR node"
    if "BatchNorm" in name:
        return "NIR has no batch normalization: fold it into the layer before it first"
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r}: NIR's Conv2d pads with zeros"
    if isinstance(module, nn.AvgPool2d) and (
        module.ceil_mode
        or module.divisor_override is not None
        or (not module.count_include_pad and module.padding not in (0, (0, 0)))
    ):
        return "ceil_mode, divisor_override and count_include_pad=False are not in NIR's AvgPool2d"
    if isinstance(module, nn.LPPool2d) and (module.norm_type != 1 or module.ceil_mode):
        return "only nn.LPPool2d(norm_type=1) (sum pooling, no ceil_mode) has a NIR node (SumPool2d)"
    return None


class Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (
            isinstance(m, (NeuronLayer, *STATELESS, *PASS_THROUGH))
            or is_seq_to_ann(m)
            or refusal(qualname, m) is not None
            or super().is_leaf_module(m, qualname)
        )


def layers(model: nn.Module):
    """(path, module) of every layer to map: the model's leaves (a SeqToANNContainer's layers too)."""
    for path, module in model.named_modules():
        if not list(module.children()) or isinstance(module, NeuronLayer):
            yield path, module


def pair(value) -> np.ndarray:
    """An int or a pair (tuple, list, array) as an int array [2]."""
    return np.broadcast_to(np.asarray(value, dtype=np.int64).reshape(-1), (2,)).copy()


def uniform(value, shape) -> np.ndarray:
    return np.full(shape, value, dtype=np.float32)


class ShapeProbe:
    """Each layer's input and output shape on the sample, without its leading (time and) batch dims."""

    def __init__(self, model: nn.Module, sample: Tensor, step_mode: str):
        self.shapes, self.calls = {}, {}
        self.T, self.N = (sample.shape[0], sample.shape[1]) if step_mode == "m" else (1, sample.shape[0])
        self.step_mode = step_mode
        probe = detached_copy(model).eval()
        handles = [module.register_forward_hook(self.hook(path)) for path, module in layers(probe)]
        with torch.no_grad():
            self.output = probe(sample)
        for handle in handles:
            handle.remove()

    def lead(self, shape) -> int:
        if self.step_mode == "m" and tuple(shape[:2]) == (self.T, self.N):
            return 2
        return 1

    def hook(self, path):
        def record(module, inputs, output):
            self.calls[path] = self.calls.get(path, 0) + 1
            x = inputs[0]
            self.shapes[path] = (tuple(x.shape), tuple(output.shape))

        return record

    def unbatched(self, path):
        (x, y) = self.shapes[path]
        lead = self.lead(x)
        return x[lead:], y[self.lead(y) :], lead


def neuron_node(nir, layer: NeuronLayer, shape, dt: float):
    p = layer.params
    if p.neuron == "if":
        return nir.IF(
            r=uniform(1.0 / dt, shape), v_threshold=uniform(p.v_threshold, shape), v_reset=uniform(p.v_reset, shape)
        )
    metadata = {}
    if p.neuron == "plif":
        w = layer.w.detach().double().item()
        tau = 1.0 + math.exp(-w)  # 1 / sigmoid(w)
        metadata = {METADATA_KEY: {"neuron": "plif", "w": w}}
    else:
        tau = p.tau
    return nir.LIF(
        tau=uniform(tau * dt, shape),
        r=uniform(1.0 if p.decay_input else tau, shape),
        v_leak=uniform(p.v_reset, shape),
        v_threshold=uniform(p.v_threshold, shape),
        v_reset=uniform(p.v_reset, shape),
        metadata=metadata,
    )


def layer_node(nir, path: str, module: nn.Module, probe: ShapeProbe, dt: float):
    x_shape, y_shape, lead = probe.unbatched(path)
    if isinstance(module, NeuronLayer):
        return neuron_node(nir, module, x_shape, dt)
    if isinstance(module, nn.Linear):
        w = module.weight.detach().cpu().numpy()
        return (
            nir.Linear(weight=w)
            if module.bias is None
            else nir.Affine(weight=w, bias=module.bias.detach().cpu().numpy())
        )
    if isinstance(module, nn.Conv2d):
        bias = np.zeros(module.out_channels, np.float32) if module.bias is None else module.bias.detach().cpu().numpy()
        padding = module.padding if isinstance(module.padding, str) else tuple(module.padding)
        return nir.Conv2d(
            input_shape=tuple(x_shape[-2:]),
            weight=module.weight.detach().cpu().numpy(),
            stride=tuple(module.stride),
            padding=padding,
            dilation=tuple(module.dilation),
            groups=module.groups,
            bias=bias,
        )
    if isinstance(module, nn.Flatten):
        if getattr(module, "step_mode", None) == "m":  # spikingjelly's: flattens each step, [T * N, ...]
            lead = 1
        rank = len(x_shape) + lead
        start, end = module.start_dim % rank - lead, module.end_dim % rank - lead
        if start < 0:
            raise ValueError(
                f"{path}: nn.Flatten(start_dim={module.start_dim}) flattens the batch or time "
                "dimension into the features, which NIR (one sample per step) cannot express"
            )
        return nir.Flatten(
            input_type={"input": np.array(x_shape)}, start_dim=start, end_dim=-1 if end == len(x_shape) - 1 else end
        )
    if isinstance(module, nn.AvgPool2d):
        stride = module.kernel_size if module.stride is None else module.stride
        return nir.AvgPool2d(kernel_size=pair(module.kernel_size), stride=pair(stride), padding=pair(module.padding))
    if isinstance(module, nn.LPPool2d):
        stride = module.kernel_size if module.stride is None else module.stride
        return nir.SumPool2d(kernel_size=pair(module.kernel_size), stride=pair(stride), padding=pair(0))
    raise ValueError(
        f"{path}: {type(module).__name__} has no NIR node here (supported: IF, LIF, PLIF, Linear, "
        "Conv2d, Flatten, AvgPool2d, LPPool2d(1, ...), Identity, Dropout, containers and additions)"
    )


def node_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    return next(reversed(stack.values()))[0] if stack else "''"


def to_nir(model: nn.Module, sample_input: Tensor, *, dt: float = 1.0):
    """Export `model` as a NIR graph (``nir.NIRGraph``), one step of ours = one Euler step of ``dt``.

    Args:
        model: a network of our neurons (IF, LIF, PLIF; one step mode throughout) and torch layers, or
            a spikingjelly model after ``st.from_spikingjelly``; its forward may add branches (skips).
        sample_input: one input as the model takes it, [T, N, ...] for step mode 'm', [N, ...] for 's';
            it gives the layers' shapes (the model runs on a copy of itself, so its state is untouched).
        dt: the length of one step in NIR's time unit (NIR time constants are ``tau * dt``).

    Returns:
        ``nir.NIRGraph`` with one node per layer, named by its path in ``model.named_modules()``, plus
        ``input`` and ``output``.

    Raises:
        TypeError: model is not an nn.Module or sample_input not a tensor.
        ValueError: what NIR cannot express (max pooling, the soft reset, static-input or pooled
            neuron forms, batch norm, an operation other than addition), each refusal naming the
            submodule's path and why; neurons of both step modes mixed.

    Examples:
        >>> import torch, snn_triton as st
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), st.LIF(step_mode="s", stateful=True))
        >>> graph = st.to_nir(net, torch.rand(1, 4))  # nir.write("net.nir", graph) saves it
        >>> sorted(graph.nodes)
        ['0', '1', 'input', 'output']
    """
    nir = import_nir()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(sample_input, Tensor):
        raise TypeError(f"sample_input must be a tensor, got {type(sample_input).__name__}")
    dt = check_float(dt, "dt", positive=True)
    refusals = [f"{path or repr('')}: {why}" for path, m in model.named_modules() if (why := refusal(path, m))]
    if refusals:
        raise ValueError("NIR cannot express these parts of the model:\n  " + "\n  ".join(refusals))
    modes = {m.step_mode for m in model.modules() if isinstance(m, NeuronLayer)}
    if len(modes) > 1:
        raise ValueError("the model mixes neurons of step_mode 's' and 'm': export one step mode")
    step_mode = modes.pop() if modes else "s"
    if sample_input.dim() < (3 if step_mode == "m" else 2):
        raise ValueError(
            f"sample_input must be {'[T, N, ...]' if step_mode == 'm' else '[N, ...]'} "
            f"for step mode {step_mode!r}, got shape {tuple(sample_input.shape)}"
        )
    probe = ShapeProbe(model, sample_input, step_mode)
    modules = dict(model.named_modules())
    twice = [path for path, n in probe.calls.items() if n > 1 and not isinstance(modules[path], PASS_THROUGH)]
    if twice:
        raise ValueError(
            f"called more than once in one forward (shared weights or state): {', '.join(twice)}; "
            "a NIR node is one layer"
        )
    try:
        graph = Tracer().trace(model)
    except Exception as error:  # torch.fx raises several types for forwards it cannot trace
        raise ValueError(
            f"torch.fx cannot trace {type(model).__name__}.forward, so its graph is unknown: {error}"
        ) from error
    nodes, edges, sources = {}, [], {}

    def add_chain(path: str, module: nn.Module, inputs: list[str]) -> list[str]:
        chain = (
            [(p if not path else f"{path}.{p}" if p else path, m) for p, m in layers(module)]
            if is_seq_to_ann(module)
            else [(path, module)]
        )
        for p, m in chain:
            if isinstance(m, PASS_THROUGH):
                continue
            if p not in probe.shapes:
                raise ValueError(f"{p}: not called on the sample input, so its shape is unknown")
            nodes[p] = layer_node(nir, p, m, probe, dt)
            edges.extend((i, p) for i in inputs)
            inputs = [p]
        return inputs

    for node in graph.nodes:
        if node.op == "placeholder":
            if sources:
                raise ValueError(f"{type(model).__name__}.forward takes more than one input; NIR export takes one")
            sources[node] = ["input"]
        elif node.op == "call_module":
            sources[node] = add_chain(node.target, modules[node.target], sources_of(node.args[0], sources, node))
        elif node.op == "call_function" and node.target in (operator.add, torch.add) and len(node.args) == 2:
            sources[node] = sources_of(node.args[0], sources, node) + sources_of(node.args[1], sources, node)
            if len(set(sources[node])) != len(sources[node]):
                raise ValueError(f"{node_path(node)}: adds a tensor to itself; NIR has no scaling by 2")
        elif node.op == "output":
            edges.extend((s, "output") for s in sources_of(node.args[0], sources, node))
        else:
            raise ValueError(
                f"{node_path(node)}: {node.op} {getattr(node.target, '__name__', node.target)} "
                "has no NIR node (the forward may only call layers and add their outputs)"
            )
    lead_in = 2 if step_mode == "m" else 1
    nodes["input"] = nir.Input(input_type={"input": np.array(sample_input.shape[lead_in:])})
    out = probe.output
    nodes["output"] = nir.Output(output_type={"output": np.array(out.shape[probe.lead(out.shape) :])})
    return nir.NIRGraph(
        nodes=nodes, edges=edges, metadata={METADATA_KEY: {"dt": dt, "step_mode": step_mode}}, type_check=True
    )


def sources_of(arg, sources: dict, node) -> list[str]:
    if not isinstance(arg, torch.fx.Node) or arg not in sources:
        raise ValueError(f"{node_path(node)}: takes {arg!r}, which is not a layer's output; NIR edges join layers")
    return sources[arg]


# ---- import ------------------------------------------------------------------------------------


def scalar(node_name: str, field: str, value) -> float:
    values = np.unique(np.asarray(value, dtype=np.float64))
    if values.size != 1:
        raise ValueError(f"{node_name}: {field} differs between neurons; our layers take one value per layer")
    return float(values[0])


def neuron_from_nir(nir, name: str, node, dt: float, step_mode: str, options: dict) -> NeuronLayer:
    common = dict(step_mode=step_mode, stateful=step_mode == "s", **options)
    v_threshold = scalar(name, "v_threshold", node.v_threshold)
    v_reset = scalar(name, "v_reset", node.v_reset)
    if isinstance(node, nir.IF):
        if not math.isclose(scalar(name, "r", node.r) * dt, 1.0, rel_tol=1e-6):
            raise ValueError(
                f"{name}: IF with r * dt = {scalar(name, 'r', node.r) * dt:g}; ours adds its input "
                "unscaled (r * dt = 1): scale the weights before it"
            )
        return IF(v_threshold=v_threshold, v_reset=v_reset, **common)
    tau, r = scalar(name, "tau", node.tau) / dt, scalar(name, "r", node.r)
    if scalar(name, "v_leak", node.v_leak) != v_reset:
        raise ValueError(f"{name}: LIF with v_leak != v_reset; ours leaks towards v_reset")
    if math.isclose(r, 1.0, rel_tol=1e-6):
        decay_input = True
    elif math.isclose(r, tau, rel_tol=1e-6):
        decay_input = False
    else:
        raise ValueError(
            f"{name}: LIF with r = {r:g}: ours has r = 1 (decay_input=True) or r = tau / dt = "
            f"{tau:g} (decay_input=False)"
        )
    ours = node.metadata.get(METADATA_KEY, {}) if isinstance(node.metadata, dict) else {}
    if ours.get("neuron") == "plif":
        plif = PLIF(v_threshold=v_threshold, v_reset=v_reset, decay_input=decay_input, **common)
        with torch.no_grad():
            plif.w.fill_(float(ours["w"]))
        return plif
    if tau <= 1.0 and not decay_input:
        raise ValueError(f"{name}: tau / dt = {tau:g} <= 1 with r = tau: the Euler step is unstable")
    return LIF(tau=tau, v_threshold=v_threshold, v_reset=v_reset, decay_input=decay_input, **common)


def layer_from_nir(nir, name: str, node) -> nn.Module:
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = torch.as_tensor(np.asarray(node.weight, np.float32))
        layer = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine))
        with torch.no_grad():
            layer.weight.copy_(w)
            if layer.bias is not None:
                layer.bias.copy_(torch.as_tensor(np.asarray(node.bias, np.float32)))
        return layer
    if isinstance(node, nir.Conv2d):
        w = torch.as_tensor(np.asarray(node.weight, np.float32))
        padding = node.padding if isinstance(node.padding, str) else tuple(pair(node.padding).tolist())
        layer = nn.Conv2d(
            w.shape[1] * node.groups,
            w.shape[0],
            tuple(w.shape[2:]),
            tuple(pair(node.stride).tolist()),
            padding,
            tuple(pair(node.dilation).tolist()),
            node.groups,
        )
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(torch.as_tensor(np.asarray(node.bias, np.float32)))
        return layer
    if isinstance(node, nir.Flatten):  # NIR's dims leave out the batch
        return nn.Flatten(
            node.start_dim + 1 if node.start_dim >= 0 else node.start_dim,
            node.end_dim + 1 if node.end_dim >= 0 else node.end_dim,
        )
    if isinstance(node, nir.AvgPool2d):
        return nn.AvgPool2d(
            tuple(pair(node.kernel_size).tolist()),
            tuple(pair(node.stride).tolist()),
            tuple(pair(node.padding).tolist()),
        )
    if isinstance(node, nir.SumPool2d):
        if np.any(pair(node.padding) != 0):
            raise ValueError(f"{name}: SumPool2d with padding; nn.LPPool2d(1, ...) has none")
        return nn.LPPool2d(1, tuple(pair(node.kernel_size).tolist()), tuple(pair(node.stride).tolist()))
    raise ValueError(
        f"{name}: NIR {type(node).__name__} is not supported (Input, Output, Affine, Linear, Conv2d, "
        "Flatten, AvgPool2d, SumPool2d, IF and LIF are)"
    )


def summed(tensors: list) -> Tensor:
    total = tensors[0]
    for t in tensors[1:]:
        total = total + t
    return total


class NIRNetwork(nn.Module):
    """A NIR graph as torch layers and our neurons, run node by node in topological order; each
    node's input is the sum of its predecessors' outputs, as in NIR.

    step_mode 'm': forward(x [T, N, ...]) -> [T, N, ...], each call a new sequence from rest;
    's': forward(x [N, ...]) -> [N, ...], one step, the neurons keeping their potential until reset().
    """

    def __init__(self, layers: dict, order: list, inputs: dict, output_inputs: list, step_mode: str):
        super().__init__()
        self.names = {name: name.replace(".", "_") for name in layers}
        self.layers = nn.ModuleDict({self.names[n]: m for n, m in layers.items()})
        self.order, self.inputs, self.output_inputs, self.step_mode = order, inputs, output_inputs, step_mode

    def forward(self, x: Tensor) -> Tensor:
        values = {None: x}  # None: the graph's input
        for name in self.order:
            h = summed([values[p] for p in self.inputs[name]])
            layer = self.layers[self.names[name]]
            if self.step_mode == "m" and not isinstance(layer, NeuronLayer):
                values[name] = layer(h.flatten(0, 1)).unflatten(0, h.shape[:2])  # the layer on every step
            else:
                values[name] = layer(h)
        return summed([values[p] for p in self.output_inputs])

    def reset(self) -> None:
        """Every neuron back to rest (step mode 's')."""
        for m in self.modules():
            if isinstance(m, NeuronLayer):
                m.reset()


def from_nir(
    graph,
    *,
    dt: float = 1.0,
    step_mode: str = "m",
    surrogate: str = "superspike",
    beta: Optional[float] = None,
    backend: str = "auto",
) -> nn.Module:
    """A NIR graph as an nn.Module of torch layers and our neurons (see the module doc for the mapping).

    Args:
        graph: a ``nir.NIRGraph`` or the path of a file ``nir.write`` wrote.
        dt: the step length in the graph's time unit (our tau = NIR tau / dt).
        step_mode: 'm' (forward takes [T, N, ...]) or 's' (one step [N, ...], stateful until reset()).
        surrogate, beta: the surrogate gradient to train the imported neurons with (NIR has none).
        backend: as every entry point's ("auto", "triton", "torch").

    Returns:
        ``NIRNetwork``: forward(x) -> the output node's value, [T, N, ...] or [N, ...].

    Raises:
        TypeError: graph is not a NIRGraph or a path.
        ValueError: a node we cannot run (its name and why: another neuron model, parameters that
            differ between neurons, an r or v_leak our neurons do not have, a nested graph, a cycle).

    Examples:
        >>> import torch, snn_triton as st
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), st.LIF(step_mode="s", stateful=True))
        >>> graph = st.to_nir(net, torch.rand(1, 4))  # or nir.read("net.nir")
        >>> st.from_nir(graph, step_mode="m")(torch.rand(8, 1, 4)).shape  # [T, N, 8] spikes
        torch.Size([8, 1, 8])
    """
    nir = import_nir()
    if isinstance(graph, (str, bytes)) or hasattr(graph, "__fspath__"):
        graph = nir.read(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(f"graph must be a nir.NIRGraph or a file path, got {type(graph).__name__}")
    dt = check_float(dt, "dt", positive=True)
    step_mode = check_step_mode(step_mode)
    check_backend(backend)
    options = dict(surrogate=surrogate, beta=beta, backend=backend)
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"the graph must have one Input and one Output node, has {len(inputs)} and {len(outputs)}")
    layers, preds = {}, {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        if src not in graph.nodes or dst not in graph.nodes:
            raise ValueError(f"edge ({src!r}, {dst!r}) names a node the graph does not have")
        preds[dst].append(None if src == inputs[0] else src)
    for name, node in graph.nodes.items():
        if name in (inputs[0], outputs[0]):
            continue
        if isinstance(node, nir.NIRGraph):
            raise ValueError(f"{name}: a nested NIR graph (a recurrent subgraph?) is not supported")
        if isinstance(node, (nir.IF, nir.LIF)):
            layers[name] = neuron_from_nir(nir, name, node, dt, step_mode, options)
        else:
            layers[name] = layer_from_nir(nir, name, node)
        if not preds[name]:
            raise ValueError(f"{name}: no edge leads into it")
    order, done = [], set()
    while len(order) < len(layers):
        ready = [n for n in layers if n not in done and all(p is None or p in done for p in preds[n])]
        if not ready:
            raise ValueError(
                "the graph has a cycle (recurrence), which is not supported: "
                + ", ".join(n for n in layers if n not in done)
            )
        order.extend(ready)
        done.update(ready)
    if not preds[outputs[0]]:
        raise ValueError("no edge leads into the Output node")
    return NIRNetwork(layers, order, {n: preds[n] for n in layers}, preds[outputs[0]], step_mode)
