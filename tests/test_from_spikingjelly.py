"""st.from_spikingjelly against the unconverted spikingjelly model in float64: outputs equal and every
gradient (inputs, weights, PLIF's w) to 1e-9, on spikingjelly's own model zoo and on small nets over
every supported configuration, with the state carried from call to call; reset_net, the eval-mode
charge, PLIF's shared w, state_dict, Adam's trajectory, torch.compile, and the refusals.

It runs with the spikingjelly importable: 0.0.0.0.14 (the test extra) here, and 2.0.0 in a pytest
process of its own (test_with_spikingjelly_2: SNN_TRITON_SPIKINGJELLY2 names a folder made by
`pip install --no-deps --target DIR spikingjelly==2.0.0 loguru==0.7.3`, put first on its path)."""

import copy
import importlib
import itertools
import math
import subprocess
import sys

import pytest
import torch
from helpers import (
    BACKENDS,
    DEVICE,
    NEEDS_SPIKINGJELLY2,
    ONE_VERSION,
    SPIKINGJELLY_VERSION,
    assert_grad_close,
    assert_passes_with_spikingjelly_2,
)
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from spikingjelly.activation_based.model import parametric_lif_net, sew_resnet, spiking_vgg
from torch import nn

import snn_triton as st
from snn_triton.compiler import TORCH_VERSION
from snn_triton.lean import LEAN_COMPILED_MIN_TORCH
from snn_triton.nn import NeuronLayer

AT_LEAST_PASSED_WITH_2 = 54  # the tests of this file that pass under spikingjelly 2.0.0 (kernel cases left out)


def spikingjelly_neurons(model):
    """spikingjelly's own neurons (converted ones are instances of their classes too)."""
    return [m for m in model.modules() if isinstance(m, neuron.BaseNode) and not isinstance(m, NeuronLayer)]


def calls(model, xs, seed=0):
    """The model's outputs on each of xs in turn (its state carried from one call to the next), and
    the gradients of a random weighting of them w.r.t. every input and parameter."""
    torch.manual_seed(seed)  # the same dropout masks for both models
    xs = [x.detach().clone().requires_grad_() for x in xs]
    outs = [model(x) for x in xs]
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device)).sum() for o in outs)
    return [o.detach() for o in outs], torch.autograd.grad(loss, [*xs, *model.parameters()])


def convert(model, backend):
    """A converted copy of `model` (float64, on the backend's device), and the original moved there too."""
    model = model.double().to(DEVICE[backend])
    converted = st.from_spikingjelly(copy.deepcopy(model), backend=backend)
    assert spikingjelly_neurons(model) and not spikingjelly_neurons(converted)
    return model, converted


def assert_same(actual, expected):
    """Equal on a CPU. On a GPU spikingjelly divides by tau as PyTorch does there (times the
    reciprocal), our kernels as a CPU does (IEEE): the potentials differ in their last bits."""
    if actual.device.type == "cpu":
        assert torch.equal(actual, expected), "differs from spikingjelly's"
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def assert_same_training(model, converted, xs):
    expected, expected_grads = calls(model, xs)
    actual, actual_grads = calls(converted, xs)
    assert any(o.abs().sum() > 0 for o in expected), "the test input should reach the output"
    for a, e in zip(actual, expected):
        assert_same(a, e)
    assert len(actual_grads) == len(expected_grads)
    for a, e in zip(actual_grads, expected_grads):
        assert_grad_close(a.cpu(), e.cpu())


def images(shape, calls=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(shape, generator=g, dtype=torch.float64) * 2.0 for _ in range(calls)]


def sew_resnet18():
    """SEW-ResNet-18 as its paper trains it (IF neurons, ATan, detach_reset, ADD connections); a
    threshold of 0.5, so that every layer fires on tiny images."""
    return sew_resnet.sew_resnet18(
        cnf="ADD",
        num_classes=10,
        spiking_neuron=neuron.IFNode,
        v_threshold=0.5,
        surrogate_function=surrogate.ATan(),
        detach_reset=True,
    )


def spiking_vgg_bn():
    """SpikingVGG with batch norm and LIF neurons, on a few narrow conv layers (the last must have the
    512 channels its classifier takes); the classifier's two 4096-wide Linear layers narrowed to 16
    (hundreds of MB in float64), its neurons and dropout kept."""
    vgg = spiking_vgg.SpikingVGG(
        [8, "M", 512],
        batch_norm=True,
        num_classes=10,
        spiking_neuron=neuron.LIFNode,
        tau=1.5,
        v_threshold=0.2,
        surrogate_function=surrogate.Sigmoid(alpha=3.0),
    )
    vgg.classifier[0], vgg.classifier[3], vgg.classifier[6] = (
        layer.Linear(512 * 7 * 7, 16),
        layer.Linear(16, 16),
        layer.Linear(16, 10),
    )
    return vgg


def plif_mnist():
    return parametric_lif_net.MNISTNet(
        channels=2,
        spiking_neuron=neuron.ParametricLIFNode,
        v_threshold=0.2,
        surrogate_function=surrogate.ATan(),
        detach_reset=True,
    )


def plif_cifar10():
    return parametric_lif_net.CIFAR10Net(
        channels=2,
        spiking_neuron=neuron.ParametricLIFNode,
        init_tau=3.0,
        decay_input=False,
        v_reset=None,
        v_threshold=0.5,
        surrogate_function=surrogate.Sigmoid(),
    )


# model, one call's input [T, N, C, H, W]: T=2, tiny images (the kernels run under the interpreter here);
# thresholds below 1 where every layer should fire on them
ZOO = {
    "sew_resnet18": (sew_resnet18, (2, 1, 3, 8, 8)),
    "spiking_vgg_bn": (spiking_vgg_bn, (2, 1, 3, 4, 4)),
    "plif_mnist": (plif_mnist, (2, 1, 1, 28, 28)),
    "plif_cifar10": (plif_cifar10, (2, 1, 3, 32, 32)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_train_as_in_spikingjelly(backend, name):
    """spikingjelly's own models, multi-step, in train mode (batch norm's batch statistics, dropout),
    two calls with the state carried: outputs equal, gradients of inputs, weights and w to 1e-9."""
    make, shape = ZOO[name]
    torch.manual_seed(0)
    model = make()
    functional.set_step_mode(model, "m")
    model, converted = convert(model, backend)
    fired = []
    for node in spikingjelly_neurons(model):
        node.register_forward_hook(lambda module, inputs, spikes: fired.append(bool(spikes.any())))
    assert_same_training(model, converted, [x.to(DEVICE[backend]) for x in images(shape)])
    assert all(fired), "every neuron layer should fire on the test input"


# Every supported configuration: the five charge forms x resets x detach_reset x surrogates.
KINDS = {
    "if": (neuron.IFNode, {}),
    "lif-decay": (neuron.LIFNode, dict(decay_input=True)),
    "lif-nodecay": (neuron.LIFNode, dict(decay_input=False)),
    "plif-decay": (neuron.ParametricLIFNode, dict(decay_input=True)),
    "plif-nodecay": (neuron.ParametricLIFNode, dict(decay_input=False)),
}
OPTIONS = list(itertools.product([0.0, -0.2, None], [False, True], [surrogate.Sigmoid, surrogate.ATan]))


class Grid(nn.Module):
    """One neuron of a kind per reset x detach_reset x surrogate (taus, thresholds and alphas varied),
    each fed the input at its own scale; their spikes stacked."""

    def __init__(self, kind, step_mode):
        super().__init__()
        cls, options = KINDS[kind]
        self.nodes = nn.ModuleList()
        for i, (v_reset, detach_reset, sg) in enumerate(OPTIONS):
            tau = (
                {} if kind == "if" else {"init_tau" if kind.startswith("plif") else "tau": [2.0, 3.0, 1.5, 7.0][i % 4]}
            )
            self.nodes.append(
                cls(
                    **options,
                    **tau,
                    v_threshold=[1.0, 0.5, 1.3][i % 3],
                    v_reset=v_reset,
                    detach_reset=detach_reset,
                    surrogate_function=sg(alpha=[4.0, 2.0, 1.5, 3.0][i % 4]),
                    step_mode=step_mode,
                )
            )

    def forward(self, x):
        return torch.stack([node(x * (0.8 + 0.1 * i)) for i, node in enumerate(self.nodes)])


def potentials(model):
    return [m.v for m in model.modules() if hasattr(m, "v")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_configuration_as_in_spikingjelly(backend, step_mode, kind):
    """Three calls with the state carried (single-step nets: one step per call), outputs and v equal,
    gradients through the carried state to 1e-9; reset_net puts v back to rest; then eval mode."""
    model, converted = convert(Grid(kind, step_mode), backend)
    shape = (3, 2, 20) if step_mode == "m" else (2, 20)
    xs = [
        (torch.randn(shape, generator=torch.Generator().manual_seed(k), dtype=torch.float64) * 1.5 + 0.5).to(
            DEVICE[backend]
        )
        for k in range(3)
    ]
    assert_same_training(model, converted, xs)
    for a, e in zip(potentials(converted), potentials(model), strict=True):
        assert_same(a, e)
    for m in (model, converted):
        functional.reset_net(m)
        m.eval()
    assert potentials(converted) == potentials(model) == [r if r is not None else 0.0 for r, _, _ in OPTIONS]
    with torch.no_grad():
        for x in xs[:2]:
            assert_same(converted(x), model(x))
    for a, e in zip(potentials(converted), potentials(model), strict=True):
        assert_same(a, e)


# spikingjelly's one-parameter surrogates of the version imported (SuperSpike is 2.x's alone). 0.0.0.0.14's
# NonzeroSignLogAbs fails in its own backward (it hands its scripted function a tuple): 2.0.0 checks ours.
SJ_SURROGATES = [
    name
    for name in st.spikingjelly_adapter.SURROGATES
    if hasattr(surrogate, name) and (name != "NonzeroSignLogAbs" or SPIKINGJELLY_VERSION.startswith("2"))
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("name", SJ_SURROGATES)
def test_each_surrogate_as_in_spikingjelly(name, dtype, backend):
    """Every spikingjelly surrogate the converter takes, at an alpha other than its default, in a LIF
    and a PLIF (soft reset) over two calls: spikes equal, gradients (input and PLIF's w) to 1e-9 in
    float64 and float rounding in float32. The input spreads H - v_threshold over [-1.5, 1.5], every
    surrogate's shape (PiecewiseQuadratic's is 0 beyond 1 / alpha)."""
    sg = getattr(surrogate, name)
    model = nn.Sequential(
        neuron.LIFNode(tau=1.5, v_threshold=0.5, surrogate_function=sg(alpha=1.7), step_mode="m"),
        layer.Linear(24, 24, bias=False),
        neuron.ParametricLIFNode(v_reset=None, v_threshold=0.4, surrogate_function=sg(alpha=2.6), step_mode="m"),
    )
    model = model.to(dtype).to(DEVICE[backend])
    converted = st.from_spikingjelly(copy.deepcopy(model), backend=backend)
    assert [m.params.surrogate for m in converted if isinstance(m, NeuronLayer)] == [
        st.spikingjelly_adapter.SURROGATES[name]
    ] * 2
    g = torch.Generator().manual_seed(SJ_SURROGATES.index(name))
    xs = [(torch.rand((4, 3, 24), generator=g, dtype=dtype) * 3.0 - 1.0).to(DEVICE[backend]) for _ in range(2)]
    expected, expected_grads = calls(model, xs)
    actual, actual_grads = calls(converted, xs)
    for a, e in zip(actual, expected, strict=True):
        assert_same(a, e)
        assert 0 < e.mean() < 1, "some neurons fire, some do not"
    for a, e in zip(actual_grads, expected_grads, strict=True):
        assert_grad_close(a.cpu(), e.cpu())


def tie_breaking_input(tau):
    """[T=2, 4096] float32 input for a LIF with decay_input=False and a hard reset to 0: step 1 puts V
    in [0.5, 1) under the threshold 1; step 2 adds 1 - V * (1 - 1/tau), so that V * (1 - 1/tau) + X
    is 1 exactly and fires, while V - V / tau + X rounds to either side of it."""
    v = torch.rand(4096, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.5
    v = v / (1 - 1 / tau)
    v = torch.where(v < 1.0, v, 0.9)
    return torch.stack([v, 1.0 - v * (1.0 - 1.0 / tau)])


@pytest.mark.parametrize("backend", BACKENDS)
def test_lif_charge_follows_spikingjelly_in_both_modes(backend):
    """decay_input=False with a hard reset to 0: spikingjelly 0.0.0.0.14 charges V * (1 - 1/tau) + X in
    training but V - (V - 0)/tau + X in eval mode; 2.0.0 the latter in both. On an input where the two
    round to different sides of the threshold, the converted LIF fires as spikingjelly in each mode."""
    tau = 3.0
    x = tie_breaking_input(tau)
    model = nn.Sequential(neuron.LIFNode(tau=tau, decay_input=False, step_mode="m"))  # on the CPU: IEEE division
    converted = st.from_spikingjelly(copy.deepcopy(model), backend=backend).to(DEVICE[backend])
    multiplied = st.lif_scan(x, tau=tau, decay_input=False, backend="torch")  # V * (1 - 1/tau) + X
    for training in (True, False):
        model.train(training)
        converted.train(training)
        expected = model(x)
        functional.reset_net(model)
        assert torch.equal(converted(x.to(DEVICE[backend])).cpu(), expected)
        functional.reset_net(converted)
        differs = (expected != multiplied).sum()
        assert differs > 0 if SPIKINGJELLY_VERSION.startswith("2") or not training else differs == 0, (
            training,
            differs,
        )


def small_net():
    """Conv, batch norm, PLIF, max pooling, Linear, LIF (decay_input=False, hard reset to 0: the charge
    of spikingjelly 0.0.0.0.14's eval mode differs), Linear, IF (soft reset): multi-step."""
    torch.manual_seed(0)
    net = nn.Sequential(
        layer.Conv2d(1, 4, 3, padding=1, bias=False),
        layer.BatchNorm2d(4),  # a bias before BN: noise to Adam
        neuron.ParametricLIFNode(decay_input=False, surrogate_function=surrogate.ATan()),
        layer.MaxPool2d(2),
        layer.Flatten(),
        layer.Linear(4 * 4 * 4, 16),
        neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=0.3, surrogate_function=surrogate.Sigmoid()),
        layer.Linear(16, 10),
        neuron.IFNode(v_reset=None, v_threshold=0.3, surrogate_function=surrogate.ATan(alpha=3.0)),
    )
    functional.set_step_mode(net, "m")
    return net


def net_input(calls=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand((3, 4, 1, 8, 8), generator=g) * 3.0 for _ in range(calls)]


LR = 1e-2


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_follows_the_same_trajectory(backend):
    """Five Adam steps in float32, reset_net after each: the converted model (its optimizer built
    before the conversion, on the very same parameters) stays on spikingjelly's trajectory."""
    model = small_net().to(DEVICE[backend])
    twin = copy.deepcopy(model)
    optimizers = [torch.optim.Adam(m.parameters(), lr=LR) for m in (model, twin)]
    st.from_spikingjelly(twin, backend=backend)
    labels = torch.arange(4, device=DEVICE[backend])
    for x in net_input(calls=5):
        losses = []
        for m, optimizer in zip((model, twin), optimizers):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(m(x.to(DEVICE[backend])).mean(0), labels)
            loss.backward()
            optimizer.step()
            functional.reset_net(m)
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    # Adam scales each gradient element to about lr: a rounding difference in a gradient near 0 (Linear
    # weights that saw no spike) moves a weight by up to ~lr; off the trajectory, every weight would differ.
    for a, e in zip(twin.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-3 * LR)
    assert not torch.equal(model[2].w, torch.tensor(0.0)), "PLIF's w should have been trained"


def test_plif_w_and_state_dict_stay_the_same():
    model = small_net()
    w, state = model[2].w, copy.deepcopy(model.state_dict())
    assert st.from_spikingjelly(model) is model
    assert isinstance(model[2], st.PLIF) and model[2].w is w
    assert model.state_dict().keys() == state.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    model.load_state_dict(state)
    assert st.from_spikingjelly(model) is model and model[2].w is w, "converting again changes nothing"


def test_spikingjelly_functions_reach_the_converted_neurons(capfd, caplog):
    """reset_net, detach_net and set_step_mode act on the converted neurons as on spikingjelly's, without
    a warning (they are spikingjelly MemoryModules); a reset_net before the conversion (2.0.0
    remembers the modules it reset) does not keep reaching the replaced neurons."""
    model = small_net()
    functional.reset_net(model)
    replaced = spikingjelly_neurons(model)  # kept alive: 2.0.0's reset cache would still find them
    st.from_spikingjelly(model)
    x = net_input()[0]
    model(x)
    assert all(isinstance(v, torch.Tensor) and v.grad_fn is not None for v in potentials(model))
    functional.detach_net(model)
    assert all(v.grad_fn is None for v in potentials(model))
    functional.reset_net(model)
    assert potentials(model) == [0.0, 0.0, 0.0]
    model.eval()  # batch norm's running statistics: the same for one step as for all
    functional.set_step_mode(model, "s")
    out = torch.stack([model(x_t) for x_t in x])
    functional.reset_net(model)
    functional.set_step_mode(model, "m")
    assert torch.equal(out, model(x)) and out.sum() > 0
    assert "MemoryModule" not in capfd.readouterr().err + caplog.text
    assert replaced


def schedule(model, epoch):
    """What a user's schedule changes between epochs: the surrogates' alpha, the thresholds, LIF's tau."""
    for module in model.modules():
        if hasattr(module, "surrogate_function"):
            module.surrogate_function.alpha = 2.0 + epoch
            module.v_threshold = 0.3 - 0.05 * epoch
        if type(module).__name__ in ("LIF", "LIFNode"):
            module.tau = 2.0 + epoch


@pytest.mark.parametrize("lean", [False, True], ids=["neurons", "lean"])
def test_settings_changed_between_calls_as_in_spikingjelly(lean):
    """A threshold, tau and surrogate alpha schedule set on the converted neurons' attributes (as on
    spikingjelly's) changes what the next calls compute as it does in spikingjelly; so does a
    surrogate module put in place of the neuron's."""
    model = small_net().double()
    converted = st.from_spikingjelly(copy.deepcopy(model), lean=lean)
    assert converted[6].tau == 2.0 and converted[6].v_threshold == 0.3 and converted[8].v_reset is None
    assert converted[6].surrogate_function is not model[6].surrogate_function  # its own copy's
    for epoch in range(3):
        schedule(model, epoch)
        schedule(converted, epoch)
        xs = [x.double() for x in net_input(seed=epoch)]
        assert_same_training(model, converted, xs)
        functional.reset_net(model)
        functional.reset_net(converted)
    model[2].surrogate_function = surrogate.Sigmoid(alpha=5.0)
    converted[2].surrogate_function = surrogate.Sigmoid(alpha=5.0)
    assert_same_training(model, converted, [x.double() for x in net_input()])
    converted[2].surrogate_function = surrogate.PiecewiseLeakyReLU()
    with pytest.raises(ValueError, match="surrogate_function PiecewiseLeakyReLU is not supported"):
        converted(net_input()[0].double())
    with pytest.raises(ValueError, match="tau must be"):
        converted[6].tau = 0.0


@pytest.mark.parametrize("v", [0.4, "0-dim", "per feature"])
def test_potential_set_by_hand_as_in_spikingjelly(v):
    """A potential set by hand before a call (a number, or a tensor that broadcasts to a step) is where
    the converted neurons start from, as spikingjelly's do: 0.0.0.0.14 broadcasts a tensor, 2.x starts
    from rest where its shape is not a step's (as after a change of batch size)."""
    model = small_net().double()
    converted = st.from_spikingjelly(copy.deepcopy(model))
    for net in (model, converted):
        for module in (net[6], net[8]):  # [N, 16] and [N, 10]
            features = 16 if module is net[6] else 10
            module.v = {
                "0-dim": torch.tensor(0.25, dtype=torch.float64),
                "per feature": torch.linspace(-0.5, 0.5, features, dtype=torch.float64),
            }.get(v, v)
    assert_same_training(model, converted, [x.double() for x in net_input(calls=2)])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["IFNode", "LIFNode", "ParametricLIFNode"])
def test_readout_neuron_that_never_fires_as_in_spikingjelly(backend, kind):
    """v_threshold=inf: a neuron that integrates and never fires, its potential v read as the output
    (a common readout): v, and the gradients of a loss on it, as spikingjelly's."""
    torch.manual_seed(0)
    readout = getattr(neuron, kind)(v_threshold=math.inf, step_mode="m", surrogate_function=surrogate.ATan())
    model = nn.Sequential(
        layer.Linear(8, 6), neuron.LIFNode(step_mode="m", v_threshold=0.5), layer.Linear(6, 3), readout
    )
    model, converted = convert(model, backend)
    results = []
    for net in (model, converted):
        x = torch.randn((3, 2, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        spikes = net(x.to(DEVICE[backend]))
        v = net[3].v
        results.append((spikes.detach(), v.detach(), torch.autograd.grad((v * v).sum(), list(net.parameters()))))
    (s, v, grads), (s_expected, v_expected, grads_expected) = results[1], results[0]
    assert not s_expected.any() and v_expected.abs().sum() > 0
    assert_same(s, s_expected)
    assert_same(v, v_expected)
    for a, e in zip(grads, grads_expected, strict=True):
        assert_grad_close(a.cpu(), e.cpu())


def test_reset_net_of_a_wrapper_reaches_the_converted_neurons():
    """2.0.0's reset_net remembers the modules it reset in each net it is given: a wrapper reset before
    the model inside it was converted must not go on resetting the replaced neurons (kept alive here)."""
    model = small_net()
    wrapper = nn.Sequential(model)
    functional.reset_net(wrapper)
    replaced = spikingjelly_neurons(model)
    st.from_spikingjelly(model)
    model(net_input()[0])
    functional.reset_net(wrapper)
    assert potentials(model) == [0.0, 0.0, 0.0] and replaced


def test_spikingjelly_monitors_find_the_converted_neurons(monkeypatch):
    """Converted neurons are instances of spikingjelly's classes: its monitors of spikes, of v and of the
    spikes' gradient (a backward hook: the fused pooling then leaves the neuron its own spikes' gradient)
    record what they record on the unconverted model."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:  # the monitors module imports it; only its GPU monitor uses it
        monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", type(sys)("torch.utils.tensorboard"))
        sys.modules["torch.utils.tensorboard"].SummaryWriter = None
    monitor = importlib.import_module("spikingjelly.activation_based.monitor")
    model = small_net().double()
    converted = st.from_spikingjelly(copy.deepcopy(model))
    report = st.lean_report(converted)
    fused = [e.rewrite for e in report.rewritten].count("keeps no float tensor")
    assert fused == 1, str(report)
    assert isinstance(converted[2], neuron.ParametricLIFNode) and isinstance(converted[6], neuron.BaseNode)
    records = []
    for net in (model, converted):
        monitors = [
            monitor.OutputMonitor(net, neuron.BaseNode),
            monitor.AttributeMonitor("v", False, net, neuron.BaseNode),
            monitor.GradOutputMonitor(net, neuron.BaseNode),
        ]
        calls(net, [x.double() for x in net_input(calls=2)])
        records.append([m.records for m in monitors])
        for m in monitors:
            m.remove_hooks()
    for kind, (actual, expected) in zip(("spikes", "v", "gradient of spikes"), zip(*records)):
        assert len(actual) == len(expected) == 6, kind  # three neurons, two calls
        for a, e in zip(actual, expected):
            if kind == "gradient of spikes":
                assert_grad_close(a, e)
            else:
                assert_same(a, e)


def graph_breaks_of_spikingjelly_layers(x) -> int:
    """How often dynamo breaks the graph in spikingjelly's own layers (the unconverted small_net's,
    multi-step): torch 2.11's cannot trace their `seq_to_ann_forward(x, super().forward)`."""
    torch._dynamo.reset()
    return torch._dynamo.explain(small_net())(x).graph_break_count


def test_converted_model_traces_with_no_graph_breaks():
    """One graph, multi-step and single-step, with a fresh state or one kept from the last call: the
    conversion adds no graph break (where dynamo cannot trace spikingjelly's own layers, none beyond theirs).
    On torch < 2.13 the neuron-only conversion: there, past spikingjelly's graph breaks, a lean layer's
    forward is a frame of its own, which dynamo compiles as one more graph where torch's layer runs eager."""
    model = st.from_spikingjelly(small_net(), lean=TORCH_VERSION >= LEAN_COMPILED_MIN_TORCH)
    x = net_input()[0]
    allowed = {"m": graph_breaks_of_spikingjelly_layers(x), "s": 0}
    torch._dynamo.reset()
    for step_mode, x in (("m", x), ("s", x[0])):
        functional.set_step_mode(model, step_mode)
        for state in ("fresh", "kept"):
            explanation = torch._dynamo.explain(model)(x)
            assert explanation.graph_break_count <= allowed[step_mode], (step_mode, state, explanation.break_reasons)
        functional.reset_net(model)


@ONE_VERSION
def test_compiled_converted_model_computes_what_eager_does():
    """Outputs, the potentials kept and the gradients, before and after a reset_net (one graph: a
    call after a reset, as training calls; the graph of a kept state is traced above)."""
    model = st.from_spikingjelly(small_net())
    torch._dynamo.reset()
    compiled = torch.compile(model)
    for x in net_input(calls=2):
        expected, expected_grads = calls(model, [x])
        v = potentials(model)
        functional.reset_net(model)
        actual, actual_grads = calls(compiled, [x])
        assert torch.equal(actual[0], expected[0]) and expected[0].sum() > 0
        expected_all = [*v, *expected_grads]
        # float32 rounding of the model's scale: inductor sums the conv's weight gradient and PLIF's
        # dL/dw (a sum with cancellation) in another order than eager (torch 2.15: 2.6e-6 and 1e-7 off)
        scale = max(float(e.abs().max()) for e in expected_all)
        for a, e in zip([*potentials(model), *actual_grads], expected_all, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6 * scale)
        functional.reset_net(model)


class LIFSubclass(neuron.LIFNode):
    def neuronal_charge(self, x):
        self.v = self.v + x


def monitored():
    node = neuron.IFNode()
    node.register_forward_hook(lambda module, inputs, output: None)
    return node


def with_precision():
    """A LIFNode as spikingjelly 2.0.0's precision.convert leaves it (storage dtype, forward and
    backward compute dtypes)."""
    node = neuron.LIFNode()
    node._neuron_precision = (torch.bfloat16, "fp32", "fp32")
    return node


REFUSED = {
    "another neuron": (lambda: neuron.QIFNode(), "QIFNode is not supported"),
    "a subclass": (lambda: LIFSubclass(), "LIFSubclass, a subclass of spikingjelly's LIFNode"),
    "another surrogate": (
        lambda: neuron.IFNode(surrogate_function=surrogate.QPseudoSpike()),
        "QPseudoSpike is not supported",
    ),
    "no spike": (lambda: neuron.IFNode(surrogate_function=surrogate.Sigmoid(spiking=False)), "does not spike"),
    "store_v_seq": (lambda: neuron.LIFNode(store_v_seq=True), "store_v_seq=True"),
    "hooks": (monitored, "hooks"),
    "a bad option": (lambda: neuron.IFNode(v_threshold=float("nan")), "v_threshold must be a finite number"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_unsupported_neurons_are_refused_and_nothing_changes(case):
    """ValueError naming the neuron's path and the reason, and the model exactly as it was."""
    make, reason = REFUSED[case]
    model = small_net()
    model.insert(7, nn.Sequential(nn.Identity(), make()))  # at "7.1", after a supported neuron
    functional.set_step_mode(model, "m")
    before = list(model.named_modules())
    x = net_input()[0]
    expected = copy.deepcopy(model)(x)
    with pytest.raises(ValueError, match=r"7\.1: .*" + reason.replace("(", r"\(")):
        st.from_spikingjelly(model)
    assert list(model.named_modules()) == before
    assert torch.equal(model(x), expected)


def test_a_neuron_precision_is_refused_and_nothing_changes():
    """spikingjelly 2.0.0's neuron precisions (set by its precision.convert) are not implemented: a
    ValueError naming the neuron, the model as it was (not run: under 2.0.0 it needs CUDA)."""
    model = small_net()
    model.insert(7, nn.Sequential(nn.Identity(), with_precision()))
    functional.set_step_mode(model, "m")
    before = list(model.named_modules())
    with pytest.raises(
        ValueError,
        match=r"7\.1: a neuron precision \(spikingjelly\.activation_based\.precision\) "
        "is not implemented",
    ):
        st.from_spikingjelly(model)
    assert list(model.named_modules()) == before


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        st.from_spikingjelly("net")
    with pytest.raises(ValueError, match="backend"):
        st.from_spikingjelly(small_net(), backend="cupy")
    with pytest.raises(ValueError, match="'': the model itself"):
        st.from_spikingjelly(neuron.IFNode())


@ONE_VERSION
def test_spikingjelly_is_imported_only_when_converting(monkeypatch):
    code = "import sys, snn_triton; print(sorted(m for m in sys.modules if m.startswith('spikingjelly')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    monkeypatch.setitem(sys.modules, "spikingjelly.activation_based.neuron", None)  # as if not installed
    with pytest.raises(ImportError, match="st.from_spikingjelly needs spikingjelly"):
        st.from_spikingjelly(nn.Linear(2, 2))


@ONE_VERSION
@NEEDS_SPIKINGJELLY2
def test_with_spikingjelly_2(tmp_path, request):
    """This file again, in a process with spikingjelly 2.0.0 first on the path (its model zoo imports h5py)."""
    assert_passes_with_spikingjelly_2(request, tmp_path, AT_LEAST_PASSED_WITH_2)
