"""IF, LIF (both decay forms) and PLIF, with state in and out, against spikingjelly 0.0.0.0.14's
IFNode / LIFNode / ParametricLIFNode in float64: spikes identical, gradients of X, V0 and w to
1e-9, for the reference (CPU) and the Triton kernels (GPU, or the interpreter on a CPU)."""

import pytest
import torch
from helpers import BACKENDS, DEVICE, assert_grad_close, covering, gradcheck
from oracles import spikingjelly_neuron
from spikingjelly.activation_based import functional

import snn_triton as st

# (kind, decay_input): the five charge forms spikingjelly has.
NEURONS = [("if", True), ("lif", True), ("lif", False), ("plif", True), ("plif", False)]
RESETS = {"hard": 0.0, "hard-nonzero": -0.2, "soft": None}
SURROGATES = ["superspike", "sigmoid", "esser", "spikingjelly_sigmoid", "atan"]
# Every value of each setting, taus, thresholds and sequence lengths included, and every pair of
# values, instead of their product.
GRID = covering(
    neuron=NEURONS,
    reset=RESETS,
    detach_reset=[False, True],
    surrogate=SURROGATES,
    tau=[2.0, 3.0, 1.5, 7.0],
    v_threshold=[1.0, 0.5, 1.3],
    T=[1, 4, 9],
)


def neuron_id(neuron):
    kind, decay_input = neuron
    return kind if kind == "if" else f"{kind}-{'decay' if decay_input else 'nodecay'}"


def make_input(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.5).to(dtype)


def ours(kind, decay_input, *, tau, backend, return_v, **kwargs):
    """st.if_scan / lif_scan / plif_scan as one function (x_seq, v_init, w) -> (spikes, V[T-1] or None)."""

    def run(x_seq, v_init, w):
        common = dict(v_init=v_init, return_v=return_v, backend=backend, **kwargs)
        if kind == "if":
            out = st.if_scan(x_seq, **common)
        elif kind == "lif":
            out = st.lif_scan(x_seq, tau=tau, decay_input=decay_input, **common)
        else:
            out = st.plif_scan(x_seq, w, decay_input=decay_input, **common)
        return out if return_v else (out, None)

    return run


def run_spikingjelly(node, x_seq, v_init):
    """Spikes and final potential of a spikingjelly node started from v_init (None: its own rest)."""
    if v_init is not None:
        node.v = v_init
    return node(x_seq), node.v


def compare(kind, decay_input, *, backend, dtype=torch.float64, shape, stateful, seed=0, tau=2.0, **params):
    """Run ours and spikingjelly's on the same input (and V0, w); assert spikes equal and, with
    state, the final potential equal; every gradient close (float64 math for float32 input)."""
    x = make_input(shape, dtype, seed)
    v0 = make_input(shape[1:], dtype, seed + 1) * 0.5 if stateful else None
    g = torch.Generator().manual_seed(seed + 2)
    grad_s = torch.randn(shape, generator=g, dtype=torch.float64)
    grad_v = torch.randn(shape[1:], generator=g, dtype=torch.float64)

    def backprop(run, x, v0, w, grad_dtype):
        x = x.detach().to(grad_dtype).requires_grad_()
        v0 = None if v0 is None else v0.detach().to(grad_dtype).requires_grad_()
        leaves = [t for t in (x, v0, w) if t is not None]
        s, v = run(x, v0, w)
        loss = (s * grad_s.to(s)).sum() + ((v * grad_v.to(v)).sum() if stateful else 0)
        return s.detach().cpu(), v, [t.cpu() for t in torch.autograd.grad(loss, leaves)]

    def oracle(grad_dtype):
        node = spikingjelly_neuron(kind, tau=tau, decay_input=decay_input, **params).to(grad_dtype)
        w = node.w if kind == "plif" else None
        return backprop(lambda x, v0, _w: run_spikingjelly(node, x, v0), x, v0, w, grad_dtype)

    expected, expected_v, _ = oracle(dtype)
    _, _, expected_grads = oracle(torch.float64)  # float32 gradients against float64 math

    device = DEVICE[backend]
    w = None
    if kind == "plif":  # w as spikingjelly initialises it: -log(init_tau - 1), float32
        w = st.PLIF(init_tau=tau).w.detach().to(device, torch.float64 if dtype == torch.float64 else torch.float32)
        w.requires_grad_()
    run = ours(kind, decay_input, tau=tau, backend=backend, return_v=stateful, **params)
    actual, actual_v, actual_grads = backprop(run, x.to(device), None if v0 is None else v0.to(device), w, dtype)
    assert actual.dtype == dtype and actual.shape == x.shape
    assert torch.equal(actual, expected), "spikes differ from spikingjelly"
    if stateful:
        assert torch.equal(actual_v.detach().cpu().to(dtype), expected_v.detach()), (
            "final V differs from spikingjelly's"
        )
    for a, e in zip(actual_grads, expected_grads):
        assert_grad_close(a, e.to(a.dtype))
    if x.numel() >= 40:
        assert expected.sum() > 0, "the test input should make some neurons fire"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "neuron, reset, detach_reset, surrogate, tau, v_threshold, T",
    GRID,
    ids=[
        f"{neuron_id(n)}-{r}-{'detach' if d else 'attached'}-{s}-tau{tau}-vth{vth}-T{T}"
        for n, r, d, s, tau, vth, T in GRID
    ],
)
def test_neuron_with_state_matches_spikingjelly(backend, neuron, reset, detach_reset, surrogate, tau, v_threshold, T):
    """Every neuron, reset, detach_reset, surrogate, tau, threshold and T (and every pair), from a given
    V0 with the final V returned: spikes and V[T-1] equal, dL/dX, dL/dV0 (and PLIF's dL/dw) to 1e-9."""
    i = GRID.index((neuron, reset, detach_reset, surrogate, tau, v_threshold, T))
    compare(
        *neuron,
        backend=backend,
        shape=(T, 2, 37),
        stateful=True,
        tau=tau,
        v_threshold=v_threshold,
        v_reset=RESETS[reset],
        detach_reset=detach_reset,
        surrogate=surrogate,
        seed=i,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("neuron", NEURONS, ids=neuron_id)
def test_neuron_without_state_matches_spikingjelly(backend, dtype, reset, neuron):
    """Stateless (today's fast path: no V0 read, no V written), in float32 too: float32 spikes
    bit-identical to spikingjelly's float32 arithmetic, whatever the charge form rounds."""
    compare(
        *neuron,
        backend=backend,
        dtype=dtype,
        shape=(12, 3, 50),
        stateful=False,
        tau=3.0,
        v_threshold=0.7,
        v_reset=RESETS[reset],
        surrogate="atan",
    )


CARRY_CASES = [
    ("lif", True, dict(tau=2.0)),
    ("lif", False, dict(tau=4.0, v_reset=None)),
    ("if", True, dict(v_reset=-0.3)),
    ("plif", True, dict(tau=3.0)),
    ("plif", False, dict(tau=2.5, v_reset=0.2, detach_reset=True)),
]


def our_module(kind, decay_input, step_mode, backend, tau=2.0, **params):
    common = dict(step_mode=step_mode, stateful=True, backend=backend, surrogate="spikingjelly_sigmoid", **params)
    if kind == "if":
        return st.IF(**common)
    if kind == "lif":
        return st.LIF(tau=tau, decay_input=decay_input, **common)
    return st.PLIF(init_tau=tau, decay_input=decay_input, **common)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("step_mode", ["m", "s"])
@pytest.mark.parametrize("kind, decay_input, params", CARRY_CASES, ids=lambda c: str(c) if isinstance(c, str) else None)
def test_state_carries_over_calls_as_in_spikingjelly(backend, step_mode, kind, decay_input, params):
    """Three consecutive calls with no reset between (the state and its graph carried over), then a
    reset and one more call: spikes, v and every gradient as spikingjelly's stateful modules."""
    device = DEVICE[backend]
    layer = our_module(kind, decay_input, step_mode, backend, **params).double().to(device)
    node = spikingjelly_neuron(
        kind, decay_input=decay_input, surrogate="spikingjelly_sigmoid", step_mode=step_mode, **params
    ).double()
    shape = (3, 2, 20) if step_mode == "m" else (2, 20)
    xs = [make_input(shape, seed=k) * (1 + k) for k in range(4)]
    ours_in = [x.to(device).requires_grad_() for x in xs]
    ref_in = [x.clone().requires_grad_() for x in xs]

    def run(module, inputs, reset):
        outs = [module(x) for x in inputs[:3]]
        outs.append(module.v * 1.0)  # the potential after the third call enters the loss
        reset(module)
        outs.append(module(inputs[3]))
        weights = torch.linspace(-1, 1, 20, dtype=torch.float64, device=outs[0].device)
        loss = sum((o * weights).sum() for o in outs)
        return [o.detach().cpu() for o in outs], loss

    actual, loss = run(layer, ours_in, lambda m: m.reset())
    expected, ref_loss = run(node, ref_in, functional.reset_net)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)
    leaves = [*ours_in, *([layer.w] if kind == "plif" else [])]
    ref_leaves = [*ref_in, *([node.w] if kind == "plif" else [])]
    for a, e in zip(torch.autograd.grad(loss, leaves), torch.autograd.grad(ref_loss, ref_leaves)):
        assert_grad_close(a.cpu(), e)
    layer.reset()
    assert layer.v == (0.0 if params.get("v_reset", 0.0) is None else params.get("v_reset", 0.0))


def test_stateless_layers_keep_no_state():
    x = make_input((5, 2, 9))
    for layer in (st.LIF(), st.IF(), st.PLIF()):
        layer.double()
        assert torch.equal(layer(x), layer(x)), "each call starts from V = v_reset"
        assert not isinstance(layer.v, torch.Tensor)


def test_detach_cuts_the_graph_between_calls():
    """Truncated BPTT: after detach() the earlier call's input gets no gradient from the next."""
    layer = st.LIF(stateful=True, surrogate="atan").double()
    x1, x2 = make_input((4, 3, 8)).requires_grad_(), make_input((4, 3, 8), seed=1).requires_grad_()
    layer(x1)
    layer.detach()
    out = layer(x2)
    (grad_x1,) = torch.autograd.grad(out.sum(), x1, allow_unused=True)
    assert grad_x1 is None
    layer(x1)
    out = layer(x2)
    (grad_x1,) = torch.autograd.grad(out.sum() + 0 * x1.sum(), x1)
    assert grad_x1.abs().sum() > 0, "without detach() the gradient flows into the previous call"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("neuron", NEURONS, ids=neuron_id)
@pytest.mark.parametrize("reset", ["hard-nonzero", "soft"])
def test_gradcheck_where_spikes_are_locally_constant(backend, neuron, reset):
    """Away from the threshold (Esser's surrogate at a large beta, so h = 0 and S is locally
    constant) the BPTT gradients of X, V0 and PLIF's w equal finite differences of the equations."""
    kind, decay_input = neuron
    beta = 50.0  # h(u) = 0 for |u| >= 0.02
    params = dict(v_threshold=1.0, v_reset=RESETS[reset], surrogate="esser", beta=beta)
    run = ours(kind, decay_input, tau=3.0, backend=backend, return_v=True, **params)
    device = DEVICE[backend]
    suitable = False
    for seed in range(200):  # an input whose H stays away from the threshold, and fires
        g = torch.Generator().manual_seed(seed)
        x = torch.rand((4, 2, 3), generator=g, dtype=torch.float64) * 3.0 - 0.5
        v0 = torch.rand((2, 3), generator=g, dtype=torch.float64) * 0.8
        w = torch.tensor(-0.4, dtype=torch.float64)
        h = spikingjelly_membrane(kind, decay_input, x, v0, w, **params)
        if ((h - 1.0).abs() > 0.03).all() and (h >= 1.0).any():
            suitable = True
            break
    assert suitable, "no suitable input found"
    inputs = [
        x.to(device).requires_grad_(),
        v0.to(device).requires_grad_(),
        w.to(device).requires_grad_(kind == "plif"),
    ]
    assert gradcheck(run, inputs, backend)


def spikingjelly_membrane(kind, decay_input, x, v0, w, **params):
    """H at every step by spikingjelly's own charge, fire and reset (for choosing gradcheck points)."""
    node = spikingjelly_neuron(kind, tau=3.0, decay_input=decay_input, step_mode="s", **params).double()
    if kind == "plif":
        node.w.data = w.clone()
    node.v = v0.clone()
    hs = []
    with torch.no_grad():
        for x_t in x:
            node.neuronal_charge(x_t)
            hs.append(node.v.clone())
            node.neuronal_reset(node.neuronal_fire())
    return torch.stack(hs)


# Each layer form and the input it takes: multi-step (state carried or not), single-step, a static
# input fed `steps` times, the fused 2x2 pooling.
FORMS = {
    "LIF": (lambda b: st.LIF(backend=b), (3, 2, 4, 6, 6)),
    "PLIF, state carried": (lambda b: st.PLIF(stateful=True, backend=b), (3, 2, 4, 6, 6)),
    "IF, single step": (lambda b: st.IF(step_mode="s", backend=b), (2, 4, 6, 6)),
    "LIF, static input": (lambda b: st.LIF(steps=3, backend=b), (2, 4, 6, 6)),
    "LIF, pooled": (lambda b: st.LIF(max_pool=True, backend=b), (3, 2, 4, 6, 6)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", FORMS)
def test_output_changed_in_place_as_any_tensor(backend, form):
    """A layer's output changed in place through a slice (``spikes[..., :1] += 0.5``), as a user may change
    spikingjelly's: the same values and input gradient as the change made on a copy of the output (autograd
    forbids changing in place a view that a custom op returns, so no output may be one)."""
    make, shape = FORMS[form]
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3).to(DEVICE[backend])
    results = []
    for copied in (False, True):
        x_in = x.clone().requires_grad_()
        out = make(backend)(x_in)
        out = out.clone() if copied else out
        out[..., :1] += 0.5
        results.append((out.detach(), *torch.autograd.grad((out * out).sum(), x_in)))
    (changed, grad), (expected, expected_grad) = results
    assert torch.equal(changed, expected) and changed.sum() > 0
    assert_grad_close(grad.cpu(), expected_grad.cpu())


DOUBLE_BACKWARD = {
    **FORMS,
    "spike": (lambda b: st.Spike(backend=b), (3, 4)),
    "conv of spikes": (
        lambda b: torch.nn.Sequential(st.IF(backend=b), torch.nn.Flatten(0, 1), st.SpikeConv2d(4, 2, 3, backend=b)),
        (3, 2, 4, 6, 6),
    ),
    "linear of spikes": (lambda b: torch.nn.Sequential(st.IF(backend=b), st.SpikeLinear(6, 2, backend=b)), (3, 2, 6)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", DOUBLE_BACKWARD)
def test_double_backward_is_refused_rather_than_wrong(backend, form):
    """A gradient penalty (``create_graph=True``) through a neuron or a lean layer raises by name: their
    backward runs through ops without derivatives, whose second-order gradients would be wrong silently.
    The first-order gradient of the same call is unchanged."""
    make, shape = DOUBLE_BACKWARD[form]
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3).to(DEVICE[backend])
    layer = make(backend).double().to(DEVICE[backend])
    x = x.requires_grad_()
    out = layer(x)
    with pytest.raises(RuntimeError, match="create_graph=True"):
        torch.autograd.grad((out * out).sum(), x, create_graph=True)
    (grad,) = torch.autograd.grad((layer(x) ** 2).sum(), x)
    assert grad.abs().sum() > 0
