"""Neuron suite: IF, PLIF and LIF with state (V0 in, V[T-1] out) beside the seed's stateless LIF,
ours against spikingjelly 0.0.0.0.14's nodes (torch backend, and cupy on a GPU) on the same input
in the same run. The baseline is spikingjelly's torch backend (its per-step loop); the stateless LIF
row shows what each neuron form and the state cost against the seed's.

Before an implementation is timed, its spikes (and final potential) are checked equal to
spikingjelly's torch backend on the case's input, and one that differs is not timed (bench/agree.py's
protocol): in float32, where both compute in the same dtype. In bfloat16 ours computes in float32, so
our rows are checked against spikingjelly's float32 on the same values; spikingjelly's own bfloat16
rows compute in bfloat16 and say they were not checked.
"""

import pytest
import torch
from agree import Disagree
from measure import ON_CUDA
from peers import SPIKINGJELLY, compiled
from results import BASELINES, OURS
from spikingjelly.activation_based import functional, neuron, surrogate
from test_kernels import measure_or_skip
from workloads import DTYPES, NEURON_CASES, case_id, lif_input, randn

import snn_triton as st
from snn_triton.kernels import traffic

TAU, SURROGATE = 2.0, "spikingjelly_sigmoid"  # spikingjelly's Sigmoid(alpha=4): built into its cupy kernels
# name -> (kind, stateful)
NEURONS = {
    "lif": ("lif", False),
    "if": ("if", False),
    "plif": ("plif", False),
    "lif+state": ("lif", True),
    "plif+state": ("plif", True),
}


def ours(kind, stateful, backend):
    """(x_seq, v0, w) -> (spikes, V[T-1] or None, w): the functional scans."""
    common = dict(surrogate=SURROGATE, backend=backend, return_v=stateful)

    def run(x_seq, v0, w):
        kwargs = dict(common, v_init=v0)
        if kind == "if":
            out = st.if_scan(x_seq, **kwargs)
        elif kind == "lif":
            out = st.lif_scan(x_seq, tau=TAU, **kwargs)
        else:
            out = st.plif_scan(x_seq, w, **kwargs)
        return (*out, w) if stateful else (out, None, w)

    return run


def spikingjelly_node(kind, stateful, backend):
    """The same through spikingjelly's node: reset before each call, then V0 set where there is state.
    PLIF's w is the node's own parameter, holding w's value."""
    common = dict(surrogate_function=surrogate.Sigmoid(alpha=4.0), step_mode="m", backend=backend)
    node = {
        "if": lambda: neuron.IFNode(**common),
        "lif": lambda: neuron.LIFNode(tau=TAU, **common),
        "plif": lambda: neuron.ParametricLIFNode(init_tau=TAU, **common),
    }[kind]()
    if ON_CUDA:
        node.cuda()

    def run(x_seq, v0, w):
        functional.reset_net(node)
        if stateful:
            node.v = v0
        if w is not None:
            node.w.data.copy_(w.detach())
        spikes = node(x_seq)
        return spikes, node.v if stateful else None, node.w if w is not None else None

    return run


def neuron_impls(kind, stateful, case):
    if ON_CUDA:
        impls = {OURS["cuda"]: lambda: ours(kind, stateful, "triton")}
    else:
        impls = {
            OURS["cpu"]: lambda: compiled(ours(kind, stateful, "torch"), ("neuron_scan", kind, stateful, case)),
            "snn_triton reference": lambda: ours(kind, stateful, "torch"),
        }
    for backend in ["torch", "cupy"] if ON_CUDA else ["torch"]:
        impls[f"spikingjelly {SPIKINGJELLY} {backend}"] = lambda backend=backend: spikingjelly_node(
            kind, stateful, backend
        )
    assert BASELINES["neuron_scan"] in impls
    return impls


def scan_bytes(T, neurons, dtype, kind, stateful, phase):
    """The kernels' traffic (snn_triton.kernels.traffic) for this neuron and phase."""
    plif = kind == "plif"
    total = traffic.lif_scan_forward_bytes(T, neurons, dtype, v_init=stateful, return_v=stateful, plif=plif)
    if phase == "fwd+bwd":
        total += traffic.lif_scan_backward_bytes(
            T,
            neurons,
            dtype,
            grad_v_last=stateful,
            grad_v_init=stateful,
            plif=plif,
            plif_reads_x=plif,
            plif_v_init=plif and stateful,
        )
    return total


@pytest.mark.skipif(not SPIKINGJELLY.startswith("0."), reason="the neuron suite runs beside spikingjelly 0.0.0.0.14")
@pytest.mark.parametrize("impl", list(neuron_impls("lif", False, None)))
@pytest.mark.parametrize("phase", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("name", list(NEURONS))
@pytest.mark.parametrize("case", NEURON_CASES, ids=case_id)
def test_neuron_scan(benchmark, record, case, name, phase, impl):
    T, neurons, dtype = case
    kind, stateful = NEURONS[name]
    x_seq, grad = lif_input(T, neurons, dtype)
    v0 = randn((neurons,), torch.float32 if dtype != "float64" else torch.float64, seed=2, scale=0.5)
    v0 = v0.to(DTYPES[dtype]).requires_grad_() if stateful else None
    w = st.PLIF(init_tau=TAU).w.detach().to(x_seq.device).requires_grad_() if kind == "plif" else None
    reference = spikingjelly_node(kind, stateful, "torch")

    def check(run):
        if dtype == "float32":
            return check_equal(run, reference, x_seq, v0, w)
        if impl.startswith("snn_triton"):  # half types computed in float32: spikingjelly's float32 on the same values
            return check_equal(run, reference, x_seq, v0, w, upcast=True)
        return "not checked: spikingjelly computes bfloat16 in bfloat16, snn_triton in float32"

    def make_call(run):
        if phase == "fwd":
            return lambda: run(x_seq, v0, w)

        def call():
            spikes, v, w_leaf = run(x_seq, v0, w)
            loss = (spikes * grad).sum() + (v.sum() if v is not None else 0)
            return torch.autograd.grad(loss, [t for t in (x_seq, v0, w_leaf) if t is not None])

        return call

    row = dict(
        suite="kernels",
        op="neuron_scan",
        phase=phase,
        impl=impl,
        neuron=name,
        T=T,
        neurons=neurons,
        dtype=dtype,
        surrogate=SURROGATE,
        bytes=scan_bytes(T, neurons, DTYPES[dtype], kind, stateful, phase),
    )
    measure_or_skip(benchmark, record, row, neuron_impls(kind, stateful, case)[impl], make_call, check)


def check_equal(run, reference, x_seq, v0, w, upcast=False) -> str:
    """Spikes and final potential of `run` against spikingjelly's torch backend on this very input
    (with `upcast`, on its values in float32, where ours computes a half type)."""
    with torch.no_grad():
        spikes, v, _ = run(x_seq, v0, w)
        as_run = (lambda t: t.float()) if upcast else (lambda t: t)
        expected, expected_v, _ = reference(
            as_run(x_seq), None if v0 is None else as_run(v0).clone(), None if w is None else w.clone()
        )
        spikes = spikes.to(expected.dtype)
        if v is not None and upcast:  # ours keeps V in its input's dtype: compare after the same rounding
            expected_v = expected_v.to(v.dtype)
    if not torch.equal(spikes, expected):
        raise Disagree(f"{int((spikes != expected).sum())} spikes differ from spikingjelly 0.0.0.0.14 torch's")
    if v is not None and not torch.equal(v.to(expected_v.dtype), expected_v):
        raise Disagree("the final potential differs from spikingjelly 0.0.0.0.14 torch's")
    return (
        "spikes"
        + (" and final V" if v is not None else "")
        + " equal spikingjelly 0.0.0.0.14 torch's"
        + (" in float32 on the same values" if upcast else "")
    )
