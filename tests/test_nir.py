"""st.to_nir / st.from_nir: our model -> NIR -> our model gives the same spikes and outputs in both
step modes (through a file too), refusals name the submodule, and the peers (snnTorch, Norse, sinabs)
run the graphs we write and write graphs we run: equal spikes where their discretization is ours,
and where it is not, equal to a float64 loop of theirs, so the difference is the one named."""

import math
import warnings

import pytest
import torch
from torch import nn

import snn_triton as st
from snn_triton.nn import NeuronLayer

nir = pytest.importorskip("nir", reason="the deploy extra (pip install -e '.[deploy]') is not installed")

T, N = 12, 3


def run_steps(net, x):
    """A single-step network over x [T, N, ...] -> [T, N, ...]."""
    return torch.stack([net(x_t) for x_t in x])


class Residual(nn.Module):
    """Linear, LIF, a skip around (Linear, PLIF), Linear, IF: every neuron kind and an addition."""

    def __init__(self, step_mode):
        super().__init__()
        kw = dict(step_mode=step_mode, stateful=step_mode == "s")
        self.fc1, self.lif = nn.Linear(6, 8), st.LIF(tau=3.0, v_reset=-0.1, **kw)
        self.fc2, self.plif = nn.Linear(8, 8), st.PLIF(init_tau=2.5, decay_input=False, v_reset=0.2, **kw)
        self.fc3, self.neuron_if = nn.Linear(8, 4), st.IF(v_threshold=0.5, **kw)

    def forward(self, x):
        a = self.lif(self.fc1(x))
        return self.neuron_if(self.fc3(a + self.plif(self.fc2(a))))


def conv_net():
    kw = dict(step_mode="s", stateful=True)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        st.LIF(**kw),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3),
        st.IF(**kw),
        nn.LPPool2d(1, 2),
        nn.Flatten(),
        nn.Linear(6, 5),
        st.LIF(decay_input=False, **kw),
    )


def amplified(net, gain=4.0):
    """Weights large enough that every layer spikes often (torch's initialization rarely crosses 1)."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(gain)
                m.bias.add_(0.3)
    return net


def spiking(out):
    assert 0.05 < out.mean() < 0.95, "the check needs spikes and silence both"


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_round_trip_residual(step_mode, tmp_path):
    torch.manual_seed(0)
    net = amplified(Residual(step_mode))
    with torch.no_grad():
        net.plif.w.fill_(-0.3)  # a learned tau other than the initial one
    x = torch.randn(T, N, 6) * 3
    ref = net(x) if step_mode == "m" else run_steps(net, x)
    spiking(ref)
    graph = st.to_nir(net, x if step_mode == "m" else x[0])
    assert set(graph.edges) >= {("lif", "fc2"), ("lif", "fc3"), ("plif", "fc3")}  # the skip, summed into fc3
    plif = graph.nodes["plif"]
    assert plif.tau == pytest.approx(1 / torch.sigmoid(torch.tensor(-0.3, dtype=torch.float64)).item())
    assert plif.r == pytest.approx(plif.tau) and plif.v_leak == pytest.approx(0.2)  # decay_input=False: r = tau
    assert graph.nodes["lif"].r == pytest.approx(1.0) and graph.nodes["lif"].v_leak == pytest.approx(-0.1)
    nir.write(tmp_path / "net.nir", graph)
    for g in (graph, tmp_path / "net.nir"):
        back = st.from_nir(g, step_mode=step_mode)
        assert isinstance(back.layers["plif"], st.PLIF) and isinstance(back.layers["neuron_if"], st.IF)
        out = back(x) if step_mode == "m" else run_steps(back, x)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_round_trip_conv_and_pooling_in_both_step_modes():
    torch.manual_seed(1)
    net = amplified(conv_net())
    x = torch.rand(T, N, 2, 8, 8) * 3
    ref = run_steps(net, x)
    spiking(ref)
    graph = st.to_nir(net, x[0])
    assert [type(graph.nodes[str(i)]).__name__ for i in range(9)] == [
        "Conv2d",
        "LIF",
        "AvgPool2d",
        "Conv2d",
        "IF",
        "SumPool2d",
        "Flatten",
        "Affine",
        "LIF",
    ]
    single = st.from_nir(graph, step_mode="s")
    torch.testing.assert_close(run_steps(single, x), ref, rtol=0, atol=0)
    single.reset()
    torch.testing.assert_close(run_steps(single, x), ref, rtol=0, atol=0)
    torch.testing.assert_close(st.from_nir(graph, step_mode="m")(x), ref, rtol=0, atol=0)


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_converted_spikingjelly_model_round_trip(step_mode):
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    torch.manual_seed(2)
    net = nn.Sequential(
        layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1)) if step_mode == "m" else nn.Conv2d(2, 4, 3, padding=1),
        neuron.LIFNode(tau=2.5, step_mode=step_mode, surrogate_function=surrogate.ATan(), detach_reset=True),
        layer.AvgPool2d(2, step_mode=step_mode),
        layer.Flatten(step_mode=step_mode),
        layer.Linear(64, 5, step_mode=step_mode),
        neuron.ParametricLIFNode(step_mode=step_mode),
    )
    amplified(net)
    with torch.no_grad():
        net[4].bias.add_(1.5)
    x = torch.rand(T, N, 2, 8, 8) * 4

    def run(model):
        functional.reset_net(model)
        return model(x) if step_mode == "m" else run_steps(model, x)

    with torch.no_grad():
        ref = run(net)
        st.from_spikingjelly(net)
        spiking(ref)
        torch.testing.assert_close(run(net), ref, rtol=0, atol=0)
        kept = [(m, m.v) for m in net.modules() if isinstance(m, NeuronLayer)]
        graph = st.to_nir(net, x if step_mode == "m" else x[0])
        assert all(m.v is v for m, v in kept)  # the sample ran on a copy: the model's potentials are untouched
        back = st.from_nir(graph, step_mode=step_mode)
        torch.testing.assert_close(back(x) if step_mode == "m" else run_steps(back, x), ref, rtol=0, atol=0)


def test_refusals_name_the_submodule():
    with pytest.raises(ValueError, match=r"net\.1: max_pool=True .*no max pooling node(.|\n)*net\.4"):
        st.to_nir(st.BasicCSNN(T=2, image_size=8), torch.rand(1, 3, 8, 8))
    net = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.MaxPool1d(1), st.LIF(v_reset=None)))
    with pytest.raises(
        ValueError, match=r"1\.0: max pooling has no NIR node(.|\n)*1\.1: v_reset=None is the soft reset"
    ):
        st.to_nir(net, torch.rand(2, 1, 3))

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.lif = nn.Linear(3, 3), st.LIF()

        def forward(self, x):
            return self.lif(self.fc(x) * 2)

    with pytest.raises(ValueError, match="mul has no NIR node"):
        st.to_nir(Scaled(), torch.rand(2, 1, 3))
    with pytest.raises(TypeError, match="sample_input must be a tensor"):
        st.to_nir(Scaled(), [1.0])
    graph = st.to_nir(nn.Sequential(nn.Linear(3, 3), st.LIF()), torch.rand(2, 1, 3))
    graph.nodes["1"].r = graph.nodes["1"].r * 0.5
    with pytest.raises(ValueError, match=r"1: LIF with r = 0.5"):
        st.from_nir(graph)
    graph.nodes["1"] = nir.CubaLIF(
        tau_syn=graph.nodes["1"].tau,
        tau_mem=graph.nodes["1"].tau,
        r=graph.nodes["1"].tau,
        v_leak=graph.nodes["1"].v_leak,
        v_threshold=graph.nodes["1"].v_threshold,
    )
    with pytest.raises(ValueError, match="1: NIR CubaLIF is not supported"):
        st.from_nir(graph)
    with pytest.raises(TypeError, match="graph must be a nir.NIRGraph"):
        st.from_nir(3)


# ---- peers -------------------------------------------------------------------------------------


def dense(neuron):
    torch.manual_seed(3)
    return amplified(nn.Sequential(nn.Linear(5, 7), neuron), 2.0)


def inputs():
    torch.manual_seed(4)
    return torch.rand(T, N, 5) * 3


def test_snntorch_runs_our_graph():
    """snnTorch's Leaky is V * beta + X with a reset to zero: our decay_input=False LIF (r = tau), for
    its fixed dt = 1e-4."""
    pytest.importorskip("snntorch")
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    net, x = dense(st.LIF(tau=3.0, decay_input=False)), inputs()
    ref = net(x)
    spiking(ref)
    theirs = import_from_nir(st.to_nir(net, x, dt=1e-4))
    snntorch.utils.reset(theirs)
    torch.testing.assert_close(torch.stack([theirs(x_t)[0] for x_t in x]), ref, rtol=0, atol=0)


def test_snntorch_graph_runs_here():
    """A Leaky with reset_mechanism='zero' (snnTorch's default, 'subtract', is not in the graph it writes)."""
    pytest.importorskip("snntorch")
    import snntorch.utils
    from snntorch.export_nir import export_to_nir

    x = inputs()
    theirs = dense(
        snntorch.Leaky(beta=torch.full((7,), 0.75), threshold=torch.ones(7), reset_mechanism="zero", init_hidden=True)
    )
    snntorch.utils.reset(theirs)
    with torch.no_grad():
        ref = torch.stack([theirs(x_t) for x_t in x])
    spiking(ref)
    ours = st.from_nir(export_to_nir(theirs, x[0], ignore_dims=[0]), dt=1e-4)
    lif = ours.layers["1"]
    assert not lif.params.decay_input and lif.params.tau == pytest.approx(4.0)
    torch.testing.assert_close(ours(x), ref, rtol=0, atol=0)


def norse_steps(net, x):
    state, out = None, []
    for x_t in x:
        y, state = net(x_t, state)
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize("neuron", ["lif", "if"])
def test_norse_runs_our_graph(neuron):
    """Norse's LIFBox is forward Euler of NIR's LIF with r = 1: our decay_input=True LIF; its IAF is our IF."""
    norse = pytest.importorskip("norse.torch")
    net, x = dense(st.LIF(tau=3.0) if neuron == "lif" else st.IF()), inputs()
    ref = net(x)
    spiking(ref)
    theirs = norse.from_nir(st.to_nir(net, x, dt=1.0), dt=1.0)
    torch.testing.assert_close(norse_steps(theirs, x), ref, rtol=0, atol=0)


def test_norse_drops_r():
    """Norse ignores NIR's r (it warns): our decay_input=False LIF (r = tau) runs there as r = 1,
    i.e. as our decay_input=True LIF of the same tau."""
    norse = pytest.importorskip("norse.torch")
    x = inputs()
    net = dense(st.LIF(tau=3.0, decay_input=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = norse_steps(norse.from_nir(st.to_nir(net, x), dt=1.0), x)
    assert not torch.equal(theirs, net(x))
    torch.testing.assert_close(theirs, dense(st.LIF(tau=3.0))(x), rtol=0, atol=0)


def test_norse_graph_runs_here():
    norse = pytest.importorskip("norse.torch")
    x = inputs()
    theirs = norse.SequentialState(
        amplified(nn.Linear(5, 7), 2.0),
        norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.tensor(1 / 3.0)), dt=1.0),
    )
    with torch.no_grad():
        ref = norse_steps(theirs, x)
    spiking(ref)
    torch.manual_seed(3)
    ours = st.from_nir(norse.to_nir(theirs, x[0, 0], dt=1.0), dt=1.0)
    torch.testing.assert_close(ours(x), ref, rtol=0, atol=0)


def sinabs_dynamics(h, neuron, tau, v_threshold=1.0):
    """sinabs 3.1.3's LIF / IAF in float64: V = V * exp(-1/tau) + X (IAF: V + X, then V >= -v_threshold),
    floor(V / v_threshold) spikes a step (MultiSpike), reset by subtracting them."""
    v, out = torch.zeros_like(h[0]), []
    for h_t in h:
        v = v * (math.exp(-1.0 / tau) if neuron == "lif" else 1.0) + h_t
        s = torch.where(v >= v_threshold, torch.floor(v / v_threshold), 0.0)
        v = v - s * v_threshold
        if neuron == "if":
            v = v.clamp(min=-v_threshold)
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("neuron", ["lif", "if"])
def test_sinabs_runs_our_graph_with_its_own_discretization(neuron):
    """sinabs reads our graph's tau and threshold but integrates otherwise: an exponential decay
    (not Euler), several spikes a step, subtractive reset. It gives other spikes than ours, and
    exactly those of its dynamics written out."""
    sinabs = pytest.importorskip("sinabs", reason="sinabs 3.1.3 (needs pbr; pins nir<=1.0.4, runs on 1.0.8)")
    net, x = dense(st.LIF(tau=3.0, decay_input=False) if neuron == "lif" else st.IF()), inputs()
    ref = net(x)
    spiking(ref)
    theirs = sinabs.from_nir(st.to_nir(net, x), batch_size=N)
    out = theirs(x.transpose(0, 1).reshape(N * T, 5))[0].reshape(N, T, 7).transpose(0, 1)
    assert not torch.equal(out, ref)
    with torch.no_grad():
        torch.testing.assert_close(out.double(), sinabs_dynamics(net[0](x).double(), neuron, 3.0), rtol=0, atol=0)


def test_sinabs_graph_runs_here():
    """sinabs writes its IAF as NIR's IF (reset to 0 there): ours runs that graph as NIR defines it."""
    pytest.importorskip("sinabs", reason="sinabs 3.1.3 (needs pbr; pins nir<=1.0.4, runs on 1.0.8)")
    import sinabs
    import sinabs.layers as sl

    torch.manual_seed(3)
    theirs = amplified(nn.Sequential(nn.Linear(5, 7), sl.IAFSqueeze(batch_size=1)), 2.0)
    x = inputs()
    ours = st.from_nir(sinabs.to_nir(theirs, x[0, :1]))
    assert isinstance(ours.layers["1"], st.IF)
    out = ours(x)
    spiking(out)
    torch.testing.assert_close(out, dense(st.IF())(x), rtol=0, atol=0)
